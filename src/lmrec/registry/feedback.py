"""The online feedback log: what a service recommended to whom, and whether the user's next events hit it.

A service on a registry appends compact JSON lines to `<registry>/feedback/served-<pid>.jsonl` (one file per
process, so worker processes never share one): a `served` line per tracked recommendation list, and a
`resolved` line when the user's later events hit one of its items (`rank`, 1-based) or it resolves as a
miss (`rank` null). This module owns that format and the per-version aggregation that `lmrec registry
show` reports (online HR@1/5/10, NDCG@10, coverage@10); it knows no HTTP.

    {"kind":"served","at":1800000000.123,"version":"2","user":"42","items":["50","181"],"catalogue":1682}
    {"kind":"resolved","at":1800000012.5,"version":"2","rank":2}

A log is untrusted input when read back: a line that is not a well-formed record (the torn last line of a
killed process, an edit) is skipped and counted, never guessed at.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmrec.errors import RunError

FEEDBACK_DIR = "feedback"
TRACKED = 10  # the first items of each served list that are tracked, logged and scored
RANKS = (1, 5, 10)  # the K of online HR@K


def feedback_dir(registry: Path) -> Path:
    """The folder of a registry's feedback logs."""
    return registry / FEEDBACK_DIR


def gain(rank: int | None) -> float:
    """NDCG@TRACKED of a list whose one relevant item is at `rank` (1-based; None: not in the list)."""
    return 1.0 / math.log2(rank + 1) if rank is not None and rank <= TRACKED else 0.0


def _compact(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"))


@dataclass(frozen=True)
class Served:
    """A recommendation list answered to a user: its first TRACKED item ids and its version's catalogue size."""

    at: float
    version: str
    user: str
    items: tuple[str, ...]
    catalogue: int

    def line(self) -> str:
        """The record as one compact JSON line (without the newline)."""
        return _compact({"kind": "served", "at": round(self.at, 3), "version": self.version, "user": self.user,
                         "items": list(self.items), "catalogue": self.catalogue})  # fmt: skip


@dataclass(frozen=True)
class Resolved:
    """The outcome of a served list: the rank of the item the user's later events hit first, or None (a miss)."""

    at: float
    version: str
    rank: int | None

    def line(self) -> str:
        """The record as one compact JSON line (without the newline)."""
        return _compact({"kind": "resolved", "at": round(self.at, 3), "version": self.version, "rank": self.rank})


Record = Served | Resolved


def parse(line: bytes | str) -> Record | None:
    """The record of one log line, or None when the line is not a well-formed record."""
    try:
        raw = json.loads(line)
    except ValueError:  # not JSON, or not UTF-8
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("version"), str) or not _number(raw.get("at")):
        return None
    if raw.get("kind") == "served":
        items, catalogue, user = raw.get("items"), raw.get("catalogue"), raw.get("user")
        if not isinstance(user, str) or not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            return None
        if not _count(catalogue) or not items or len(items) > TRACKED:
            return None
        return Served(float(raw["at"]), raw["version"], user, tuple(items), catalogue)
    if raw.get("kind") == "resolved":
        rank = raw.get("rank")
        if rank is not None and not (_count(rank) and 1 <= rank <= TRACKED):
            return None
        return Resolved(float(raw["at"]), raw["version"], rank)
    return None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass
class OnlineFigures:
    """One version's online figures, summed over its feedback records."""

    served: int = 0
    resolved: int = 0
    hits: dict[int, int] = field(default_factory=lambda: dict.fromkeys(RANKS, 0))
    gain: float = 0.0
    items: set[str] = field(default_factory=set)  # distinct items of the served lists
    catalogue: int = 0  # the largest catalogue size served (items added through the service grow it)

    def add(self, record: Record) -> None:
        """Count one record of this version."""
        if isinstance(record, Served):
            self.served += 1
            self.items.update(record.items)
            self.catalogue = max(self.catalogue, record.catalogue)
            return
        self.resolved += 1
        self.gain += gain(record.rank)
        for k in RANKS:
            self.hits[k] += int(record.rank is not None and record.rank <= k)

    def hit_rate(self, k: int) -> float | None:
        """Online HR@k: resolved lists hit within their top k, over resolved lists (None before any)."""
        return self.hits[k] / self.resolved if self.resolved else None

    @property
    def ndcg(self) -> float | None:
        """Online NDCG@10 over resolved lists (None before any)."""
        return self.gain / self.resolved if self.resolved else None

    @property
    def coverage(self) -> float | None:
        """Distinct items in served top-10 lists over the catalogue size (None before any list)."""
        return len(self.items) / self.catalogue if self.catalogue else None


@dataclass
class FeedbackSummary:
    """The online figures of every version found in a folder of feedback logs."""

    versions: dict[str, OnlineFigures]
    files: int
    skipped: int  # lines that are not well-formed records


def records(path: Path) -> Iterator[Record | None]:
    """The records of one log file in order (None for each malformed line)."""
    try:
        with path.open("rb") as handle:
            for line in handle:
                if line.strip():
                    yield parse(line)
    except OSError as exc:
        raise RunError(f"cannot read the feedback log {path}: {exc.strerror or exc.__class__.__name__}.") from None


def read_feedback(folder: Path) -> FeedbackSummary:
    """Aggregate every `*.jsonl` feedback log of `folder` per version (an absent folder has none)."""
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    versions: dict[str, OnlineFigures] = {}
    skipped = 0
    for path in files:
        for record in records(path):
            if record is None:
                skipped += 1
            else:
                versions.setdefault(record.version, OnlineFigures()).add(record)
    return FeedbackSummary(versions, len(files), skipped)
