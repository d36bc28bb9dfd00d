"""Given examples: RecBole benchmark files, whose valid and test examples are evaluated exactly as listed.

`NAME.train.inter`, `NAME.valid.inter` and `NAME.test.inter` (tab-separated, header `user_id:token
item_id_list:token_seq item_id:token`; other columns are not read) hold one example per line: a user, the
items before the target (space-separated, oldest first, often only the last few) and the target item.

- Valid and test examples are kept as listed, in file order (`examples.parquet`): each is scored with its
  own history and target, whatever the other files hold.
- Training sequences are rebuilt from the training examples only: a user's training windows are stitched
  into one sequence, the first window's history followed by every window's target in order, so no valid or
  test target is ever a training input. A user whose windows are consistent only newest first (UniSRec
  writes them so) is stitched in that order, and counted.
- Every window is checked against its user's stitched sequence (training windows, then valid, then test
  ones): a window whose history is not the items just before its target there is counted by file
  (`*_windows_inconsistent`) and shown among the manifest's examples, but kept (its target still trains,
  or it is still evaluated with its own history).

Lines that cannot be used are counted by reason as in cleaning (malformed and blank lines, `missing_user`,
`missing_item` for a missing target), each example naming its file and line; ids only on such lines are
counted as `users_without_examples` / `items_without_examples`. There are no timestamps: a training
event's `timestamp` is its position in its user's sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lmrec.data.clean import Cleaned, raise_first_bad_row
from lmrec.data.dataset import EXAMPLES, INTERACTIONS, SPLIT_CODES, TRAIN
from lmrec.data.readers import load_table
from lmrec.data.recbole import BENCHMARK_SPLITS
from lmrec.data.splits import build_index
from lmrec.data.sqlutil import as_text, ident
from lmrec.data.tables import MAX_EXAMPLES, Layout, Loaded, TableSpec
from lmrec.errors import DataError

COLUMNS = ("user_id", "item_id_list", "item_id")


@dataclass(frozen=True)
class Windows:
    """Examples as flat arrays: `user`, `split` code and `target` per example, histories in CSR form.

    The history of example i is `items[offsets[i] : offsets[i + 1]]`, oldest first.
    """

    user: np.ndarray
    split: np.ndarray
    target: np.ndarray
    offsets: np.ndarray
    items: np.ndarray

    def __len__(self) -> int:
        return int(self.user.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        """The history length of every example."""
        return np.diff(self.offsets)


@dataclass(frozen=True)
class Stitched:
    """Training sequences rebuilt from the windows (CSR by user) and what the consistency check found."""

    offsets: np.ndarray
    items: np.ndarray
    inconsistent: np.ndarray
    newest_first: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        """The training sequence length of every user."""
        return np.diff(self.offsets)


@dataclass
class Given(Cleaned):
    """What reading benchmark files kept and dropped (as for a cleaned log), with the split summary and the
    stitched sequences' lengths."""

    summary: dict
    lengths: np.ndarray


def stitch(windows: Windows, n_users: int) -> Stitched:
    """Stitch each user's windows (in file order: train, then valid, then test) into one sequence.

    The training sequence of a user is the stitched sequence up to its last training target; users whose
    windows are consistent with fewer mismatches when their training windows are read newest first are
    stitched that way (`newest_first`).
    """
    rank = np.arange(len(windows))
    forward = _check(windows, _order(windows, rank), n_users)
    reverse = _check(windows, _order(windows, np.where(windows.split == TRAIN, -rank, rank)), n_users)
    wrong = [np.bincount(windows.user, weights=found.inconsistent, minlength=n_users) for found in (forward, reverse)]
    newest_first = wrong[1] < wrong[0]
    if not newest_first.any():
        return forward
    flip = (windows.split == TRAIN) & newest_first[windows.user]
    found = _check(windows, _order(windows, np.where(flip, -rank, rank)), n_users)
    return replace(found, newest_first=newest_first)


def _order(windows: Windows, within: np.ndarray) -> np.ndarray:
    """Example indices sorted by user, then split code, then `within`."""
    return np.lexsort((within, windows.split, windows.user))


def _check(windows: Windows, order: np.ndarray, n_users: int) -> Stitched:
    """Stitch the windows in `order` (grouped by user) and check every window against its user's sequence.

    A user's sequence is its first window's history, then the targets of all its windows in order; the
    target of its j-th window is at `head + j`, where `head` is that first history's length.
    """
    user, lengths = windows.user[order], windows.lengths[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = user[1:] != user[:-1]
    group_first = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    head = np.zeros(n_users, dtype=np.int64)
    head[user[first]] = lengths[first]
    position = head[user] + np.arange(len(order)) - group_first
    starts = np.concatenate([[0], np.cumsum(head + np.bincount(user, minlength=n_users))])
    sequence = np.zeros(int(starts[-1]), dtype=np.int64)
    sequence[starts[user] + position] = windows.target[order]
    histories = _flat_rows(windows.offsets[order[first]], lengths[first])
    sequence[_flat_rows(starts[user[first]], lengths[first])] = windows.items[histories]
    bad = np.zeros(len(windows), dtype=bool)
    bad[order] = _mismatched(windows, order, starts[user], position, sequence)
    trains = np.bincount(user, weights=windows.split[order] == TRAIN, minlength=n_users).astype(np.int64)
    keep = np.where(trains > 0, head + trains, 0)  # a user with training windows starts with one of them
    kept = sequence[_flat_rows(starts[:-1], keep)]
    return Stitched(np.concatenate([[0], np.cumsum(keep)]), kept, bad, np.zeros(n_users, dtype=bool))


def _mismatched(
    windows: Windows, order: np.ndarray, base: np.ndarray, position: np.ndarray, sequence: np.ndarray
) -> np.ndarray:
    """Whether each window (in `order`; its target at `sequence[base + position]`) has a history other than
    the items just before its target, or a longer one than there are items before it."""
    lengths = windows.lengths[order]
    example = np.repeat(np.arange(len(order)), lengths)
    before = (base + position - lengths)[example] + _steps(lengths)
    given = windows.items[_flat_rows(windows.offsets[order], lengths)]
    too_long = lengths > position
    differs = too_long[example] | (sequence[np.clip(before, 0, None)] != given)
    return too_long | (np.bincount(example, weights=differs, minlength=len(order)) > 0)


def _steps(lengths: np.ndarray) -> np.ndarray:
    """0..length-1 for every length, concatenated."""
    return np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def _flat_rows(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The rows start..start+length-1 of every (start, length), concatenated."""
    return np.repeat(starts, lengths) + _steps(lengths)


def read_given(con: duckdb.DuckDBPyConnection, layout: Layout, stage: Path, strict: bool = False) -> Given:
    """Read benchmark files into `stage`: training events (interactions.parquet) and the valid/test examples."""
    files = layout.tables()
    loaded = {split: _load(con, files[split], f"{split}_raw") for split in BENCHMARK_SPLITS}
    _parse(con, loaded)
    dropped = _dropped(con, loaded)
    if strict:
        _stop_at_first_bad_row(con, loaded)
    if not con.execute("SELECT count(*) FROM given_parsed WHERE reason IS NULL").fetchone()[0]:
        summary = ", ".join(f"{reason} {n}" for reason, n in dropped.items()) or "the files have no rows"
        raise DataError(f"no usable example in the benchmark files of {layout.name} ({summary}).")
    _encode(con)
    build_index(con)
    windows, rows = _windows(con)
    n_users = int(con.execute("SELECT count(*) FROM user_index").fetchone()[0])
    stitched = stitch(windows, n_users)
    line = np.empty(len(windows), dtype=np.int64)
    for split, loaded_file in loaded.items():
        mine = windows.split == SPLIT_CODES[split]
        line[mine] = loaded_file.line_numbers(rows[mine])
    _write_interactions(stitched, stage / INTERACTIONS)
    _write_examples(windows, line, stage / EXAMPLES)
    examples = _examples(con, loaded, windows, rows, stitched.inconsistent)
    items = int(con.execute("SELECT count(*) FROM item_index").fetchone()[0])
    return Given(
        rows_read=int(con.execute("SELECT count(*) FROM given_parsed").fetchone()[0])
        + sum(sum(f.rejects.counts.values()) for f in loaded.values()),
        dropped=dropped,
        examples=examples,
        users=n_users,
        items=items,
        interactions=int(stitched.offsets[-1]),
        summary=_summary(windows, stitched),
        lengths=stitched.lengths[stitched.lengths > 0],
    )


def _load(con: duckdb.DuckDBPyConnection, spec: TableSpec, table: str) -> Loaded:
    """Load one benchmark file, which must have the three columns of one."""
    loaded = load_table(con, spec, table)
    missing = [c for c in COLUMNS if c not in loaded.columns]
    if missing:
        raise DataError(
            f"{loaded.where} lacks column {missing[0]} (a RecBole benchmark file's header is user_id:token, "
            f"item_id_list:token_seq, item_id:token); it has {', '.join(loaded.columns)}."
        )
    return loaded


def _parse(con: duckdb.DuckDBPyConnection, loaded: dict[str, Loaded]) -> None:
    """Create `given_parsed`: split code, row, user, history ids, target and the reason a row is dropped."""
    selects = [
        f"SELECT {SPLIT_CODES[split]}::TINYINT AS split, rowid AS row, {as_text('user_id')} AS u, "
        f"list_filter(string_split_regex(coalesce(trim(item_id_list), ''), '\\s+'), lambda x: x <> '') AS h, "
        f"{as_text('item_id')} AS i FROM {ident(file.table)}"
        for split, file in loaded.items()
    ]
    con.execute(
        "CREATE TABLE given_parsed AS SELECT *, CASE WHEN u IS NULL THEN 'missing_user' "
        f"WHEN i IS NULL THEN 'missing_item' END AS reason FROM ({' UNION ALL '.join(selects)})"
    )


def _dropped(con: duckdb.DuckDBPyConnection, loaded: dict[str, Loaded]) -> dict[str, int]:
    """Rows dropped per reason over the three files, and the ids seen only on dropped rows."""
    dropped: dict[str, int] = {}
    for file in loaded.values():
        for reason, n in file.rejects.counts.items():
            dropped[reason] = dropped.get(reason, 0) + n
    counts = con.execute(
        "SELECT reason, count(*) FROM given_parsed WHERE reason IS NOT NULL GROUP BY reason ORDER BY reason"
    ).fetchall()
    dropped.update({reason: int(n) for reason, n in counts})
    lost = con.execute(
        "SELECT (SELECT count(DISTINCT u) FROM given_parsed WHERE reason IS NOT NULL AND u NOT IN "
        "(SELECT u FROM given_parsed WHERE reason IS NULL)), "
        "(SELECT count(DISTINCT id) FROM (SELECT i AS id FROM given_parsed WHERE reason IS NOT NULL "
        "UNION ALL SELECT unnest(h) FROM given_parsed WHERE reason IS NOT NULL) WHERE id NOT IN "
        "(SELECT i FROM given_parsed WHERE reason IS NULL UNION ALL "
        "SELECT unnest(h) FROM given_parsed WHERE reason IS NULL))"
    ).fetchone()
    dropped.update(users_without_examples=int(lost[0]), items_without_examples=int(lost[1]))
    return {reason: n for reason, n in dropped.items() if n}


def _stop_at_first_bad_row(con: duckdb.DuckDBPyConnection, loaded: dict[str, Loaded]) -> None:
    """For --strict: DataError naming the first malformed line or bad row, file by file (blank lines are not rows)."""
    for split, file in loaded.items():
        rows = con.execute(
            "SELECT row, reason FROM given_parsed WHERE reason IS NOT NULL AND split = $s ORDER BY row LIMIT 1",
            {"s": SPLIT_CODES[split]},
        ).fetchall()
        raise_first_bad_row(con, file, rows)


def _encode(con: duckdb.DuckDBPyConnection) -> None:
    """Create `user_codes`, `item_codes` and `events` (the user-item pairs of the kept examples) for the index."""
    con.execute("CREATE TEMP VIEW given_ok AS SELECT * FROM given_parsed WHERE reason IS NULL")
    con.execute(
        "CREATE TEMP VIEW given_pairs AS SELECT u, i AS id FROM given_ok UNION ALL SELECT u, unnest(h) FROM given_ok"
    )
    con.execute(
        "CREATE TABLE user_codes AS SELECT u AS id, (row_number() OVER () - 1)::INTEGER AS code "
        "FROM (SELECT DISTINCT u FROM given_ok)"
    )
    con.execute(
        "CREATE TABLE item_codes AS SELECT id, (row_number() OVER () - 1)::INTEGER AS code "
        "FROM (SELECT DISTINCT id FROM given_pairs)"
    )
    con.execute(
        "CREATE TABLE events AS SELECT DISTINCT uc.code AS uc, ic.code AS ic FROM given_pairs p "
        "JOIN user_codes uc ON p.u = uc.id JOIN item_codes ic ON p.id = ic.id"
    )


def _windows(con: duckdb.DuckDBPyConnection) -> tuple[Windows, np.ndarray]:
    """The kept examples in (split, file row) order as `Windows`, and their row ids in their files."""
    con.execute(
        "CREATE TABLE given_examples AS SELECT row_number() OVER (ORDER BY split, row) - 1 AS k, g.split, g.row, "
        "g.h, u.user_idx, t.item_idx FROM given_ok g JOIN user_index u ON g.u = u.user_id "
        "JOIN item_index t ON g.i = t.item_id"
    )
    found = con.execute(
        "SELECT split, row, user_idx, item_idx, len(h) AS n FROM given_examples ORDER BY k"
    ).fetchnumpy()
    items = con.execute(
        "SELECT x.item_idx FROM (SELECT k, unnest(h) AS id, unnest(range(len(h))) AS step FROM given_examples) g "
        "JOIN item_index x ON g.id = x.item_id ORDER BY g.k, g.step"
    ).fetchnumpy()["item_idx"]
    lengths = np.asarray(found["n"], dtype=np.int64)
    windows = Windows(
        user=np.asarray(found["user_idx"], dtype=np.int64),
        split=np.asarray(found["split"], dtype=np.int8),
        target=np.asarray(found["item_idx"], dtype=np.int64),
        offsets=np.concatenate([[0], np.cumsum(lengths)]),
        items=np.asarray(items, dtype=np.int64),
    )
    return windows, np.asarray(found["row"], dtype=np.int64)


def _write_interactions(stitched: Stitched, path: Path) -> None:
    """interactions.parquet: the training sequences, by user, each event's position as its timestamp."""
    lengths = stitched.lengths
    table = pa.table(
        {
            "user_idx": pa.array(np.repeat(np.arange(len(lengths)), lengths), pa.int32()),
            "item_idx": pa.array(stitched.items, pa.int32()),
            "timestamp": pa.array(_steps(lengths).astype(np.float64), pa.float64()),
            "split": pa.array(np.full(int(lengths.sum()), TRAIN), pa.int8()),
        }
    )
    pq.write_table(table, path)


def _write_examples(windows: Windows, line: np.ndarray, path: Path) -> None:
    """examples.parquet: the valid and test examples in file order, with their history and file line."""
    rows = np.flatnonzero(windows.split != TRAIN)
    lengths = windows.lengths[rows]
    history = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int32()),
        pa.array(windows.items[_flat_rows(windows.offsets[rows], lengths)], pa.int32()),
    )
    table = pa.table(
        {
            "user_idx": pa.array(windows.user[rows], pa.int32()),
            "history": history,
            "item_idx": pa.array(windows.target[rows], pa.int32()),
            "split": pa.array(windows.split[rows], pa.int8()),
            "line": pa.array(line[rows], pa.int64()),
        }
    )
    pq.write_table(table, path)


def _examples(
    con: duckdb.DuckDBPyConnection,
    loaded: dict[str, Loaded],
    windows: Windows,
    rows: np.ndarray,
    inconsistent: np.ndarray,
) -> list[dict]:
    """Per file: the first dropped rows of every reason and inconsistent windows, then the earliest others."""
    found: list[dict] = []
    for split, file in loaded.items():
        dropped = con.execute(
            f"SELECT row, reason FROM given_parsed WHERE reason IS NOT NULL AND split = $s "
            f"QUALIFY row_number() OVER (PARTITION BY reason ORDER BY row) <= {MAX_EXAMPLES} ORDER BY row",
            {"s": SPLIT_CODES[split]},
        ).fetchall()
        mine = np.flatnonzero(inconsistent & (windows.split == SPLIT_CODES[split]))[:MAX_EXAMPLES]
        flagged = [(int(row), f"inconsistent_{split}_window") for row in rows[mine]]
        chosen = file.examples(con, [(int(r), reason) for r, reason in dropped] + flagged)
        found += [{**example, "file": file.where} for example in chosen]
    return found


def _summary(windows: Windows, stitched: Stitched) -> dict:
    """The split summary: examples and users per split, inconsistent windows, targets repeating a history item."""
    summary: dict = {"method": "given", "train": int(stitched.offsets[-1])}
    in_history = _target_in_history(windows)
    users_with = {}
    for split, code in SPLIT_CODES.items():
        mine = windows.split == code
        key = "train_examples" if code == TRAIN else split
        summary[key] = int(mine.sum())
        users_with[split] = np.unique(windows.user[mine])
        summary[f"users_with_{split}"] = int(users_with[split].shape[0])
        summary[f"{split}_windows_inconsistent"] = int((stitched.inconsistent & mine).sum())
        if code != TRAIN:
            summary[f"{split}_targets_in_history"] = int((in_history & mine).sum())
    summary["test_users_without_train"] = int(np.setdiff1d(users_with["test"], users_with["train"]).shape[0])
    summary["users_train_newest_first"] = int(stitched.newest_first.sum())
    return summary


def _target_in_history(windows: Windows) -> np.ndarray:
    """Whether each example's target is among its history items."""
    example = np.repeat(np.arange(len(windows)), windows.lengths)
    hit = windows.items == windows.target[example]
    return np.bincount(example, weights=hit, minlength=len(windows)) > 0
