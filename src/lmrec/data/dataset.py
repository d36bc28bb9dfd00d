"""The PreparedDataset: the on-disk hand-over from data preparation to training and evaluation.

Layout of a prepared directory (written by `lmrec.data.prepare`, read here):

- `manifest.json`: counts (`users`, `items`, `interactions`), per-reason drop counts, source hash,
  options, split summary and the `fingerprint` that identifies this preparation.
- `interactions.parquet`: one row per kept event, sorted by `user_idx` then chronological position,
  columns `user_idx` (int32, 0-based), `item_idx` (int32, 1..items; 0 is padding),
  `timestamp` (float64 epoch seconds), `split` (int8: 0 train, 1 valid, 2 test), and optionally
  `event_type` (string) and `value` (float64).
- `users.parquet`: `user_idx`, `user_id` (original id as a string).
- `items.parquet`: `item_idx` (1..items), `item_id` (original id as a string), `text` (the rendered
  item text, null when none), `cold` (bool: first seen after the cutoff of a cold-items split), and the
  side columns of the items table as strings.
- `examples.parquet` (given splits only, `split.method == "given"`): the valid and test examples as listed
  by their source, in file order: `user_idx` (int32), `history` (list of int32 item indices, oldest
  first), `item_idx` (int32, the target), `split` (int8: 1 valid, 2 test), `line` (int64, the file line).

Within each user the split codes never decrease, so a user's training events are always a prefix of
their sequence, and every evaluation target's history is simply the events before it. A given split
holds only training events in `interactions.parquet` (the sequences rebuilt from the training examples,
`timestamp` being each event's position) and its evaluation examples carry their own histories.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lmrec.atomic import read_json_object
from lmrec.errors import DataError

MANIFEST = "manifest.json"
LINEAGE = "lineage.json"  # written by `lmrec retrain` into the snapshots it prepares
INTERACTIONS = "interactions.parquet"
USERS = "users.parquet"
ITEMS = "items.parquet"
EXAMPLES = "examples.parquet"
FORMAT_VERSION = 1

TRAIN, VALID, TEST = 0, 1, 2
SPLIT_CODES = {"train": TRAIN, "valid": VALID, "test": TEST}


@dataclass(frozen=True)
class Targets:
    """Evaluation targets of one split: target `item`, its `user`, and `pos`, the length of its history.

    The history of target i is `pool[start[i] : start[i] + pos[i]]`: for a split of the users' sequences
    the pool is `dataset.items` and `start` the user's offset (so `pos` is also the target's place in its
    sequence); for given examples it is their histories laid end to end.
    """

    user: np.ndarray
    item: np.ndarray
    pos: np.ndarray
    start: np.ndarray
    pool: np.ndarray

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def history(self, i: int) -> np.ndarray:
        """The history (item indices, oldest first) of target i."""
        return self.pool[self.start[i] : self.start[i] + self.pos[i]]


class PreparedDataset:
    """Read-only view of a prepared directory as flat numpy arrays (CSR by user)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise DataError(
                f"{self.path} is not a prepared dataset (no {MANIFEST}); "
                f"create one with `lmrec data prepare SOURCE --out {self.path}`."
            )
        self.manifest: dict = read_json_object(manifest_path, DataError, "prepare the dataset again")
        version = self.manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise DataError(
                f"{self.path} was prepared with format version {version}, this lmrec reads "
                f"{FORMAT_VERSION}; prepare it again with `lmrec data prepare`."
            )
        table = self._read_table(INTERACTIONS, ["user_idx", "item_idx", "timestamp", "split"])
        users = table.column("user_idx").to_numpy()
        self.items: np.ndarray = table.column("item_idx").to_numpy().astype(np.int64)
        self.timestamps: np.ndarray = table.column("timestamp").to_numpy()
        self.split: np.ndarray = table.column("split").to_numpy().astype(np.int8)
        try:
            self.n_users, self.n_items = int(self.manifest["users"]), int(self.manifest["items"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{manifest_path} lacks its user and item counts; prepare the dataset again.") from None
        counts = np.bincount(users, minlength=self.n_users)
        self.offsets: np.ndarray = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._check_order(users)

    def _read_table(self, name: str, columns: list[str] | None = None) -> pa.Table:
        """One of the dataset's Parquet files; a missing or damaged one is one sentence."""
        try:
            return pq.read_table(self.path / name, columns=columns)
        except (OSError, pa.ArrowException, KeyError) as exc:
            problem = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
            raise DataError(
                f"{self.path / name} is missing or damaged ({problem}); prepare the dataset again."
            ) from None

    def _check_order(self, users: np.ndarray) -> None:
        """Refuse files whose rows are not grouped by user with non-decreasing split codes per user."""
        same_user = users[1:] == users[:-1]
        if (np.diff(users) < 0).any() or (same_user & (np.diff(self.split) < 0)).any():
            raise DataError(
                f"{self.path / INTERACTIONS} is not sorted by user and split; prepare the dataset again "
                "with `lmrec data prepare`."
            )
        if "fingerprint" not in self.manifest:
            raise DataError(f"{self.path / MANIFEST} has no fingerprint; prepare the dataset again.")

    @classmethod
    def load(cls, path: str | Path) -> PreparedDataset:
        """Open a prepared directory."""
        return cls(path)

    @property
    def name(self) -> str:
        """A short name for tables: the source's name, else the directory name."""
        return str(self.manifest.get("name") or self.path.name)

    @property
    def split_method(self) -> str:
        """How the targets were chosen: "loo", "temporal", "cold-items" or "given" ("" when not recorded)."""
        split = self.manifest.get("split")
        return str(split.get("method", "")) if isinstance(split, dict) else ""

    @property
    def given(self) -> bool:
        """Whether the evaluation examples were given by the source (with their own histories)."""
        return self.split_method == "given"

    @property
    def default_mask_history(self) -> bool:
        """The split's protocol default for masking history items in the ranking: off for given examples
        (their sources' protocols rank every item, MiniOneRec's among them), on for the others."""
        return not self.given

    @property
    def fingerprint(self) -> str:
        """Identifies the exact preparation (source content and options); runs record it."""
        return str(self.manifest["fingerprint"])

    @cached_property
    def lineage(self) -> dict:
        """Where a retraining snapshot comes from: `extends` (fingerprints of the preparations whose users
        and items it keeps, oldest first), `events_through` (the last event-store id it holds); {} otherwise."""
        path = self.path / LINEAGE
        if not path.is_file():
            return {}
        lineage = read_json_object(path, DataError, "retrain again to rebuild the snapshot")
        through, extends = lineage.get("events_through"), lineage.get("extends")
        if not (isinstance(through, int) and through >= 0 and isinstance(extends, list)):
            raise DataError(f"{path} needs events_through (an id) and extends (a list); retrain again.")
        if not all(isinstance(f, str) for f in extends):
            raise DataError(f"{path} lists fingerprints that are not strings; retrain again.")
        return lineage

    @property
    def events_through(self) -> int:
        """The last event-store id this preparation holds (0: none; the service adds only later events)."""
        return int(self.lineage.get("events_through", 0))

    def extends(self, fingerprint: str) -> bool:
        """Whether this preparation keeps every user and item of the one with `fingerprint` (or is it)."""
        return fingerprint == self.fingerprint or fingerprint in self.lineage.get("extends", [])

    @property
    def lengths(self) -> np.ndarray:
        """Number of events of each user."""
        return np.diff(self.offsets)

    @cached_property
    def train_lengths(self) -> np.ndarray:
        """Number of training events of each user (they are the first ones of the sequence)."""
        cumulative = np.concatenate([[0], np.cumsum(self.split == TRAIN)])
        return cumulative[self.offsets[1:]] - cumulative[self.offsets[:-1]]

    def sequence(self, user: int) -> np.ndarray:
        """The whole chronological item sequence of one user (all splits)."""
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def train_sequence(self, user: int) -> np.ndarray:
        """The training prefix of one user's sequence."""
        start = self.offsets[user]
        return self.items[start : start + self.train_lengths[user]]

    def targets(self, split: str) -> Targets:
        """All evaluation targets of `split` ("valid" or "test"): the given examples in their order, or the
        split's events in sequence order."""
        if split not in ("valid", "test"):
            raise DataError(f"unknown split {split!r}; use 'valid' or 'test'.")
        if self.given:
            return self._given_targets[split]
        rows = np.flatnonzero(self.split == SPLIT_CODES[split])
        users = np.searchsorted(self.offsets, rows, side="right") - 1
        start = self.offsets[users]
        return Targets(user=users, item=self.items[rows], pos=rows - start, start=start, pool=self.items)

    @cached_property
    def _given_targets(self) -> dict[str, Targets]:
        """The valid and test examples of a given split, read from `examples.parquet` and checked."""
        table = self._read_table(EXAMPLES, ["user_idx", "history", "item_idx", "split"])
        history = table.column("history").combine_chunks()
        pool = history.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
        offsets = history.offsets.to_numpy().astype(np.int64)
        offsets -= offsets[0]
        user = table.column("user_idx").to_numpy().astype(np.int64)
        item = table.column("item_idx").to_numpy().astype(np.int64)
        split = table.column("split").to_numpy().astype(np.int8)
        items_ok = ((pool >= 1) & (pool <= self.n_items)).all() and ((item >= 1) & (item <= self.n_items)).all()
        if not items_ok or ((user < 0) | (user >= self.n_users)).any() or not np.isin(split, (VALID, TEST)).all():
            raise DataError(f"{self.path / EXAMPLES} holds ids outside the dataset; prepare the dataset again.")
        found = {}
        for name in ("valid", "test"):
            rows = np.flatnonzero(split == SPLIT_CODES[name])
            start, end = offsets[rows], offsets[rows + 1]
            found[name] = Targets(user=user[rows], item=item[rows], pos=end - start, start=start, pool=pool)
        return found

    @cached_property
    def user_ids(self) -> np.ndarray:
        """Original user ids (strings) indexed by `user_idx`."""
        table = self._read_table(USERS, ["user_idx", "user_id"]).sort_by("user_idx")
        return np.asarray(table.column("user_id").to_pylist(), dtype=object)

    @cached_property
    def item_table(self):
        """The items table (pyarrow), sorted by `item_idx`."""
        return self._read_table(ITEMS).sort_by("item_idx")

    @cached_property
    def item_ids(self) -> np.ndarray:
        """Original item ids (strings) indexed by `item_idx`; index 0 (padding) is the empty string."""
        ids = self.item_table.column("item_id").to_pylist()
        return np.asarray(["", *ids], dtype=object)

    @cached_property
    def item_text(self) -> list[str | None]:
        """Rendered item texts indexed by `item_idx` (index 0 is None)."""
        return [None, *self.item_table.column("text").to_pylist()]

    @cached_property
    def user_index(self) -> dict[str, int]:
        """Original user id → `user_idx`."""
        return {uid: i for i, uid in enumerate(self.user_ids)}

    @cached_property
    def item_index(self) -> dict[str, int]:
        """Original item id → `item_idx`."""
        return {iid: i for i, iid in enumerate(self.item_ids) if i > 0}

    def item_title(self, item: int) -> str:
        """A human-readable label for an item: its title column, else its text, else its id."""
        table = self.item_table
        for column in ("title", "movie_title", "name"):
            if column in table.column_names:
                value = table.column(column)[item - 1].as_py()
                if value:
                    return str(value)
        return self.item_text[item] or str(self.item_ids[item])
