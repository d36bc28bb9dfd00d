"""Numbered model versions in a registry directory: add a run, promote a version, roll back.

Layout: `index.json` (every version with its metrics and data hash, the promoted version, the promotion
stack and a log of actions) and `versions/<n>/` (a copy of the run's config, run.json, metrics.json and
best model, so that retraining the source run cannot change a registered version). The index is
rewritten atomically under a file lock; a service watches its modification time to switch versions.

Promoting a version trained on another dataset (another data fingerprint) than the promoted one would
switch the catalogue (items and users) of every service on the registry, so it is refused unless asked
for with `allow_new_catalogue` (`--allow-new-catalogue`); the log records such promotions.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmrec.atomic import atomic_write_json, read_json_object
from lmrec.data.dataset import LINEAGE
from lmrec.errors import RunError
from lmrec.locks import file_lock
from lmrec.registry.run import RunDir

INDEX = "index.json"
FORMAT = 1
REGISTRY_ENV = "LMREC_REGISTRY"
_COPIED = ("config.yaml", "run.json", "metrics.json", "model/model.pt")


def default_registry() -> Path:
    """`$LMREC_REGISTRY`, else ./registry."""
    return Path(os.environ.get(REGISTRY_ENV) or "registry")


@dataclass(frozen=True)
class ModelVersion:
    """One registered version: its number, folder, source run, model, data hash and metrics."""

    version: int
    path: Path
    source: str
    model: str
    dataset: str
    fingerprint: str
    metrics: dict[str, Any]
    added_at: float
    lineage: dict[str, Any] = field(default_factory=dict)  # a retrained version: parent, snapshot, events
    gate: dict[str, Any] = field(default_factory=dict)  # a retrained version: the promotion gate's result


class ModelRegistry:
    """A registry directory of numbered model versions."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_registry()

    @property
    def index_file(self) -> Path:
        """The registry's index (its mtime changes whenever a version is added, promoted or rolled back)."""
        return self.root / INDEX

    @staticmethod
    def is_registry(path: str | Path) -> bool:
        """Whether `path` is a registry directory (it has an index.json)."""
        return (Path(path) / INDEX).is_file()

    def versions(self) -> list[ModelVersion]:
        """Every registered version, oldest first."""
        return [self._version(entry) for entry in self._read()["versions"]]

    def get(self, version: int) -> ModelVersion:
        """One version by number."""
        for entry in self._read()["versions"]:
            if entry["version"] == version:
                return self._version(entry)
        raise RunError(f"version {version} is not in registry {self.root}; see `lmrec registry list`.")

    def promoted(self) -> ModelVersion | None:
        """The version a service should serve, if any was promoted."""
        index = self._read()
        return self.get(index["promoted"]) if index["promoted"] is not None else None

    def add(
        self,
        run: str | Path,
        promote: bool = False,
        allow_new_catalogue: bool = False,
        lineage: dict[str, Any] | None = None,
        gate: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Copy a finished run in as the next version (and promote it when asked), with the lineage and gate
        result of a retrained version; the index changes in one atomic write, or not at all."""
        rundir = RunDir(run)
        info = rundir.info()
        unfinished = rundir.unfinished_note()
        if unfinished:
            raise RunError(f"{unfinished}; only a finished run can be registered.")
        metrics = rundir.metrics()
        if not rundir.model_file.is_file():
            raise RunError(f"run {rundir.path} has no model/model.pt; it did not finish training.")
        extends = _extends(info.get("dataset", ""))
        with self._locked() as index:
            number = max((v["version"] for v in index["versions"]), default=0) + 1
            if promote and not allow_new_catalogue:
                what, fingerprint = f"run {rundir.path}", info.get("fingerprint", "")
                self._check_catalogue(index, what, fingerprint, info.get("dataset", ""), extends)
            target = self.root / "versions" / str(number)
            staging = self.root / "versions" / f".{number}.staging"
            shutil.rmtree(staging, ignore_errors=True)
            for name in _COPIED:
                source = rundir.path / name
                if source.is_file():
                    (staging / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, staging / name)
            _fsync_tree(staging)
            shutil.rmtree(target, ignore_errors=True)  # left over by an add that died before writing the index
            os.replace(staging, target)
            entry = {
                "version": number,
                "path": f"versions/{number}",
                "source": str(rundir.path.resolve()),
                "model": info.get("model", ""),
                "dataset": info.get("dataset", ""),
                "fingerprint": info.get("fingerprint", ""),
                "metrics": {k: metrics[k] for k in ("valid", "test") if k in metrics},
                "added_at": time.time(),
                **({"extends": extends} if extends else {}),
                **({"lineage": lineage} if lineage else {}),
                **({"gate": gate} if gate else {}),
            }
            index["versions"].append(entry)
            _log(index, "add", number)
            if promote:
                self._promote(index, number, allow_new_catalogue=True)  # checked before copying
        return self._version(entry)

    def promote(self, version: int, allow_new_catalogue: bool = False) -> ModelVersion:
        """Make `version` the served one; one trained on another dataset than the promoted one only when allowed."""
        with self._locked() as index:
            self._promote(index, version, allow_new_catalogue)
        return self.get(version)

    def rollback(self) -> ModelVersion:
        """Serve again the version promoted before the current one."""
        with self._locked() as index:
            stack = index["stack"]
            if len(stack) < 2:
                raise RunError(f"nothing to roll back to in {self.root}: fewer than two promotions so far.")
            left = stack.pop()
            index["promoted"] = stack[-1]
            _log(index, "rollback", stack[-1], _new_catalogue(index, left, stack[-1]))
        return self.get(stack[-1])

    def _promote(self, index: dict[str, Any], version: int, allow_new_catalogue: bool) -> None:
        entry = _entry(index, version)
        if entry is None:
            raise RunError(f"version {version} is not in registry {self.root}; see `lmrec registry list`.")
        if not allow_new_catalogue:
            what = f"version {version}"
            self._check_catalogue(index, what, entry["fingerprint"], entry["dataset"], entry.get("extends", []))
        new_catalogue = index["promoted"] is not None and _new_catalogue(index, index["promoted"], version)
        index["promoted"] = version
        if index["stack"][-1:] != [version]:
            index["stack"].append(version)
        _log(index, "promote", version, new_catalogue)

    def _check_catalogue(
        self, index: dict[str, Any], what: str, fingerprint: str, dataset: str, extends: list[str]
    ) -> None:
        """Refuse to promote what was trained on another dataset than the promoted version (by fingerprint),
        unless that dataset extends the promoted one's (a retraining snapshot keeps its users and items)."""
        promoted = _entry(index, index["promoted"]) if index["promoted"] is not None else None
        if promoted is not None and promoted["fingerprint"] != fingerprint and promoted["fingerprint"] not in extends:
            raise RunError(
                f"{what} was trained on another dataset ({dataset}, data {fingerprint[:12]}) than the promoted "
                f"version {promoted['version']} ({promoted['dataset']}, data {promoted['fingerprint'][:12]}); "
                "promoting it would switch the catalogue of every service on this registry. "
                "Pass --allow-new-catalogue to promote it anyway."
            )

    def _version(self, entry: dict[str, Any]) -> ModelVersion:
        return ModelVersion(
            version=int(entry["version"]),
            path=self.root / entry["path"],
            source=entry["source"],
            model=entry["model"],
            dataset=entry["dataset"],
            fingerprint=entry["fingerprint"],
            metrics=entry["metrics"],
            added_at=float(entry["added_at"]),
            lineage=dict(entry.get("lineage", {})),
            gate=dict(entry.get("gate", {})),
        )

    def _check_root(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise RunError(f"registry {self.root} is a file, not a registry folder; give a folder with --registry.")

    def _read(self) -> dict[str, Any]:
        self._check_root()
        if not self.index_file.is_file():
            return {"format": FORMAT, "versions": [], "promoted": None, "stack": [], "log": []}
        index = read_json_object(self.index_file, RunError, "restore it from a backup")
        if index.get("format") != FORMAT:
            raise RunError(f"{self.index_file} has format {index.get('format')}; this lmrec reads {FORMAT}.")
        if not _well_formed(index):
            raise RunError(f"{self.index_file} is corrupt (its versions are malformed); restore it from a backup.")
        return index

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The index under an exclusive file lock, written back atomically when the block succeeds."""
        self._check_root()
        with file_lock(self.root / ".lock"):
            index = self._read()
            yield index
            atomic_write_json(self.index_file, index)


def _well_formed(index: dict[str, Any]) -> bool:
    """Whether the index has the fields and types the registry relies on."""
    versions, stack = index.get("versions"), index.get("stack")
    if not isinstance(versions, list) or not isinstance(stack, list) or not isinstance(index.get("log", []), list):
        return False
    fields = ("path", "source", "model", "dataset", "fingerprint")
    for entry in versions:
        if not isinstance(entry, dict) or not isinstance(entry.get("version"), int):
            return False
        if not all(isinstance(entry.get(key), str) for key in fields) or not isinstance(entry.get("metrics"), dict):
            return False
        if not isinstance(entry.get("added_at"), int | float):
            return False
    numbers = {entry["version"] for entry in versions}
    promoted = index.get("promoted")
    return (promoted is None or promoted in numbers) and all(v in numbers for v in stack)


def _extends(dataset: str) -> list[str]:
    """The fingerprints whose users and items a run's dataset keeps (a retraining snapshot's lineage)."""
    path = Path(dataset) / LINEAGE
    if not dataset or not path.is_file():
        return []
    extends = read_json_object(path, RunError, "retrain again to rebuild the snapshot").get("extends", [])
    return [str(f) for f in extends] if isinstance(extends, list) else []


def _entry(index: dict[str, Any], version: int) -> dict[str, Any] | None:
    return next((v for v in index["versions"] if v["version"] == version), None)


def _new_catalogue(index: dict[str, Any], before: int, after: int) -> bool:
    """Whether serving `after` instead of `before` switches datasets (their fingerprints differ)."""
    return _entry(index, before)["fingerprint"] != _entry(index, after)["fingerprint"]


def _log(index: dict[str, Any], action: str, version: int, new_catalogue: bool = False) -> None:
    record: dict[str, Any] = {"action": action, "version": version, "at": time.time()}
    if new_catalogue:
        record["new_catalogue"] = True
    index["log"].append(record)


def _fsync_tree(folder: Path) -> None:
    """Flush every file under `folder` to disk before it is renamed into place."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
