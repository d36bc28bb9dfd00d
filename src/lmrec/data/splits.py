"""Sequences and splits: contiguous indices, per-user chronological order, and train/valid/test codes.

Users get indices 0..U-1 and items 1..I (0 is padding), both in the order of their original ids
(numerically when every id is an integer, else lexicographically). Each user's events are ordered by
time, ties broken by original row order (`tie_break="row"`) or by item id (`"item"`), then row order.

Splits (codes 0 train, 1 valid, 2 test; never decreasing within a user, so training is a prefix):

- `loo`: last event test, second-to-last valid, the rest train (a user with 2 events has no valid,
  a user with 1 event only train). With a targets file the user's valid and test items are taken from it:
  the first occurrence in time order of each is moved to the end of the sequence (valid, then test).
  File users whose items are not among their events, and data users absent from the file, keep the plain
  leave-one-out targets; file users absent from the data are ignored. All are counted in the summary.
- `temporal`: t < valid_cutoff train, valid_cutoff <= t < cutoff valid, t >= cutoff test.
- `cold-items`: as temporal, and items first seen at or after the cutoff are flagged `cold`.

A cutoff is a time (epoch seconds or an ISO-8601 date/time, UTC) or a fraction 0<c<1 of all events by
time: the time of the event at position floor(c·N) in time order. The default cutoff is 0.9; the
default validation cutoff leaves the last 10% of the pre-cutoff events (by time) for validation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np

from lmrec.data.clean import MILLISECONDS_FROM
from lmrec.data.readers import load_table
from lmrec.data.sqlutil import literal
from lmrec.data.tables import TableSpec
from lmrec.errors import DataError

log = logging.getLogger(__name__)

DEFAULT_CUTOFF = 0.9
VALID_SHARE = 0.1
TARGET_COLUMNS = ("user_id", "valid_item", "test_item")


@dataclass(frozen=True)
class SplitSpec:
    """How to order and split sequences: method, cutoffs (time or fraction), targets file and encoding, tie-break."""

    method: str = "loo"
    cutoff: float | str | None = None
    valid_cutoff: float | str | None = None
    targets: Path | None = None
    tie_break: str = "row"
    encoding: str | None = None


def build_index(con: duckdb.DuckDBPyConnection) -> None:
    """Create `user_index` (uc, user_id, user_idx 0..) and `item_index` (ic, item_id, item_idx 1.., cold)."""
    for side, code, start, extra in (("user", "uc", 0, ""), ("item", "ic", 1, ", false AS cold")):
        con.execute(
            f"CREATE TEMP TABLE kept AS SELECT code, id FROM {side}_codes "
            f"WHERE code IN (SELECT DISTINCT {code} FROM events)"
        )
        numeric = con.execute("SELECT bool_and(regexp_full_match(id, '-?[0-9]{1,38}')) FROM kept").fetchone()[0]
        order = "CAST(id AS HUGEINT), id" if numeric else "id"
        con.execute(
            f"CREATE TABLE {side}_index AS SELECT code AS {code}, id AS {side}_id, "
            f"(row_number() OVER (ORDER BY {order}) - 1 + {start})::INTEGER AS {side}_idx{extra} FROM kept"
        )
        con.execute("DROP TABLE kept")


def split_and_write(
    con: duckdb.DuckDBPyConnection, spec: SplitSpec, path: Path, extra: list[str]
) -> tuple[dict, np.ndarray]:
    """Order each user's events, assign split codes, write `interactions.parquet`; return summary, lengths.

    `extra` names the optional output columns present (`event_type`, `value`).
    """
    tie = "item_idx, row" if spec.tie_break == "item" else "row"
    con.execute(
        "CREATE TABLE seq AS SELECT u.user_idx, i.item_idx, e.ts, e.typ AS event_type, e.v AS value, e.row "
        "FROM events e JOIN user_index u USING (uc) JOIN item_index i USING (ic)"
    )
    if spec.method == "loo":
        summary, order = _leave_one_out(con, spec, tie)
    else:
        summary, order = _temporal(con, spec, tie)
    columns = ", ".join(["user_idx", "item_idx", "ts AS timestamp", "split::TINYINT AS split", *extra])
    con.execute(f"COPY (SELECT {columns} FROM split_seq ORDER BY {order}) TO {literal(str(path))} (FORMAT parquet)")
    # From here on `split_seq` is the written file: the summaries scan it instead of recomputing the split.
    con.execute(f"CREATE OR REPLACE VIEW split_seq AS SELECT * FROM read_parquet({literal(str(path))})")
    summary.update(_user_counts(con, spec.method))
    if spec.method == "cold-items":
        summary.update(_mark_cold(con, summary["cutoff"]))
    summary.update(_split_counts(con))
    lengths = con.execute("SELECT count(*) AS n FROM split_seq GROUP BY user_idx ORDER BY user_idx").fetchnumpy()["n"]
    return summary, np.asarray(lengths, dtype=np.int64)


def _leave_one_out(con: duckdb.DuckDBPyConnection, spec: SplitSpec, tie: str) -> tuple[dict, str]:
    """Last event test, second-to-last valid; with a targets file, the file's items are moved last."""
    summary: dict = {"method": "loo"}
    source = "(SELECT *, 0 AS g, false AS m FROM seq)"
    if spec.targets is not None:
        summary.update(_mark_targets(con, spec.targets, tie, spec.encoding))
        source = "marked"
    con.execute(
        f"""
        CREATE VIEW split_seq AS
        SELECT *, CASE WHEN m THEN g WHEN n >= 2 AND pos = n - 1 THEN 2
                       WHEN n >= 3 AND pos = n - 2 THEN 1 ELSE 0 END AS split
        FROM (SELECT *, row_number() OVER (PARTITION BY user_idx ORDER BY g, ts, {tie}) - 1 AS pos,
                     count(*) OVER (PARTITION BY user_idx) AS n
              FROM {source})
        """
    )
    return summary, "user_idx, pos"


def _mark_targets(con: duckdb.DuckDBPyConnection, path: Path, tie: str, encoding: str | None) -> dict:
    """Create `marked`: `m` for users whose file targets were found, g = 1/2 on their valid/test events."""
    loaded = load_table(con, TableSpec(path, "csv", encoding=encoding), "targets_raw")
    malformed = sum(loaded.rejects.counts.values())
    missing = [c for c in TARGET_COLUMNS if c not in loaded.columns]
    if missing:
        raise DataError(
            f"targets file {path} needs columns {', '.join(TARGET_COLUMNS)} (it has: {', '.join(loaded.columns)})."
        )
    duplicated = con.execute("SELECT user_id FROM targets_raw GROUP BY user_id HAVING count(*) > 1 LIMIT 1").fetchone()
    if duplicated:
        raise DataError(f"targets file {path} lists user {duplicated[0]} more than once.")
    con.execute(
        """
        CREATE TABLE targets AS
        SELECT u.user_idx, NULLIF(trim(t.valid_item), '') IS NOT NULL AS has_valid,
               v.item_idx AS valid_idx, x.item_idx AS test_idx
        FROM targets_raw t JOIN user_index u ON trim(t.user_id) = u.user_id
        LEFT JOIN item_index v ON trim(t.valid_item) = v.item_id
        LEFT JOIN item_index x ON trim(t.test_item) = x.item_id
        """
    )
    con.execute(
        f"""
        CREATE TABLE marked AS
        SELECT user_idx, item_idx, ts, event_type, value, row, CASE WHEN m THEN f ELSE 0 END AS g, m
        FROM (SELECT *, coalesce(bool_or(f = 2) OVER w AND (NOT has_valid OR bool_or(f = 1) OVER w), false) AS m
              FROM (SELECT s.*, t.has_valid,
                     CASE WHEN s.item_idx = t.valid_idx AND occ = 1 THEN 1
                          WHEN s.item_idx = t.test_idx
                               AND occ = 1 + coalesce((t.test_idx = t.valid_idx)::INTEGER, 0) THEN 2
                          ELSE 0 END AS f
              FROM (SELECT *, row_number() OVER (PARTITION BY user_idx, item_idx ORDER BY ts, {tie}) AS occ
                    FROM seq) s
              LEFT JOIN targets t USING (user_idx))
              WINDOW w AS (PARTITION BY user_idx))
        """
    )
    file_users, known = con.execute("SELECT (SELECT count(*) FROM targets_raw), count(*) FROM targets").fetchone()
    matched = con.execute("SELECT count(DISTINCT user_idx) FROM marked WHERE m").fetchone()[0]
    all_users = con.execute("SELECT count(*) FROM user_index").fetchone()[0]
    if matched < file_users:
        log.warning(
            "targets file %s: %d of its %d users keep plain leave-one-out targets or are not in the data",
            path,
            file_users - matched,
            file_users,
        )
    return {
        "targets_file": str(path),
        "targets_matched_users": int(matched),
        "targets_unmatched_users": int(known - matched),
        "targets_unknown_users": int(file_users - known),
        "users_without_targets": int(all_users - known),
        **({"targets_malformed_lines": malformed} if malformed else {}),
    }


def _temporal(con: duckdb.DuckDBPyConnection, spec: SplitSpec, tie: str) -> tuple[dict, str]:
    """Split every event by its time against the validation cutoff and the cutoff."""
    if spec.targets is not None:
        raise DataError("--targets applies to the loo split only.")
    cutoff = resolve_cutoff(con, DEFAULT_CUTOFF if spec.cutoff is None else spec.cutoff, "--cutoff")
    if spec.valid_cutoff is None:
        valid_cutoff = _time_at_fraction(con, 1 - VALID_SHARE, f"ts < {cutoff!r}")
    else:
        valid_cutoff = resolve_cutoff(con, spec.valid_cutoff, "--valid-cutoff")
    if valid_cutoff > cutoff:
        raise DataError(
            f"the validation cutoff ({_iso(valid_cutoff)}) is after the cutoff ({_iso(cutoff)}); "
            "pass an earlier --valid-cutoff."
        )
    con.execute(
        "CREATE VIEW split_seq AS SELECT *, "
        f"CASE WHEN ts < {valid_cutoff!r} THEN 0 WHEN ts < {cutoff!r} THEN 1 ELSE 2 END AS split FROM seq"
    )
    summary = {
        "method": spec.method,
        "cutoff": cutoff,
        "cutoff_iso": _iso(cutoff),
        "valid_cutoff": valid_cutoff,
        "valid_cutoff_iso": _iso(valid_cutoff),
    }
    return summary, f"user_idx, ts, {tie}"


def _user_counts(con: duckdb.DuckDBPyConnection, method: str) -> dict:
    """Users the split leaves without some part: short loo sequences, temporal users without training."""
    if method == "loo":
        short = con.execute(
            "SELECT count(*) FILTER (WHERE n = 1), count(*) FILTER (WHERE n = 2) "
            "FROM (SELECT count(*) AS n FROM split_seq GROUP BY user_idx)"
        ).fetchone()
        return {"users_train_only": int(short[0]), "users_without_valid": int(short[1])}
    users = con.execute(
        "SELECT count(*) FILTER (WHERE has_train), count(*) FILTER (WHERE has_test AND NOT has_train) "
        "FROM (SELECT bool_or(split = 0) AS has_train, bool_or(split = 2) AS has_test "
        "FROM split_seq GROUP BY user_idx)"
    ).fetchone()
    return {"users_with_train": int(users[0]), "test_users_without_train": int(users[1])}


def _mark_cold(con: duckdb.DuckDBPyConnection, cutoff: float) -> dict:
    """Flag items first seen at or after the cutoff as cold; count them and their test targets."""
    con.execute(
        "UPDATE item_index SET cold = true WHERE item_idx IN "
        "(SELECT item_idx FROM seq GROUP BY item_idx HAVING min(ts) >= $c)",
        {"c": cutoff},
    )
    items, targets = con.execute(
        "SELECT (SELECT count(*) FROM item_index WHERE cold), "
        "(SELECT count(*) FROM split_seq s JOIN item_index i USING (item_idx) WHERE s.split = 2 AND i.cold)"
    ).fetchone()
    return {"cold_items": int(items), "cold_test_targets": int(targets)}


def resolve_cutoff(con: duckdb.DuckDBPyConnection, value: float | str, option: str) -> float:
    """A cutoff as epoch seconds: a fraction 0<x<1 of events by time, epoch seconds, or an ISO date/time."""
    try:
        number = float(value)
    except ValueError:
        seconds = con.execute("SELECT epoch(TRY_CAST($v AS TIMESTAMPTZ))", {"v": str(value)}).fetchone()[0]
        if seconds is None:
            raise DataError(
                f"{option} {value!r} is neither a fraction (0<x<1), epoch seconds nor an ISO-8601 date."
            ) from None
        return float(seconds)
    if 0 < number < 1:
        return _time_at_fraction(con, number, "true")
    if not np.isfinite(number) or number <= 0:
        raise DataError(f"{option} {value!r} must be a fraction (0<x<1), epoch seconds or an ISO-8601 date.")
    return number / 1000 if number >= MILLISECONDS_FROM else number


def _time_at_fraction(con: duckdb.DuckDBPyConnection, fraction: float, where: str) -> float:
    """The time of the event at position floor(fraction·N) in time order among events matching `where`."""
    n = con.execute(f"SELECT count(*) FROM seq WHERE {where}").fetchone()[0]
    if n == 0:
        raise DataError("no events fall before the cutoff; pass a later --cutoff.")
    k = min(int(fraction * n), n - 1)
    # quantile_disc(q) returns the value at index floor((n-1)·q); aim at the middle of index k.
    q = 1.0 if n == 1 else min(1.0, (k + 0.5) / (n - 1))
    return float(con.execute(f"SELECT quantile_disc(ts, {q!r}) FROM seq WHERE {where}").fetchone()[0])


def _split_counts(con: duckdb.DuckDBPyConnection) -> dict:
    row = con.execute(
        "SELECT count(*) FILTER (WHERE split = 0), count(*) FILTER (WHERE split = 1), "
        "count(*) FILTER (WHERE split = 2), count(DISTINCT user_idx) FILTER (WHERE split = 1), "
        "count(DISTINCT user_idx) FILTER (WHERE split = 2) FROM split_seq"
    ).fetchone()
    keys = ("train", "valid", "test", "users_with_valid", "users_with_test")
    return {key: int(value) for key, value in zip(keys, row, strict=True)}


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat()
