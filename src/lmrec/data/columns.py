"""Column mapping: which input column holds the user, item, time, event type and value of an event."""

from __future__ import annotations

from lmrec.errors import DataError

ROLES = ("user", "item", "time", "type", "value")

# Candidate names per role, in order of preference; matched case-insensitively.
# Amazon reviews: 2018 reviewerID, asin, unixReviewTime, overall; 2023 user_id, parent_asin (its items are
# joined on the parent, as in the 2023 benchmarks), timestamp (milliseconds), rating.
GUESSES: dict[str, tuple[str, ...]] = {
    "user": ("user_id", "userId", "user", "uid", "customer_id", "visitor_id", "reviewerID"),
    "item": ("item_id", "itemId", "movieId", "item", "iid", "product_id", "article_id", "parent_asin", "asin"),
    "time": ("timestamp", "ts", "time", "datetime", "date", "event_time", "unixReviewTime"),
    "type": ("event_type", "type", "event", "action", "behavior"),
    "value": ("rating", "value", "score", "dwell_time", "price", "overall"),
}

OPTION = {
    "user": "--user-col",
    "item": "--item-col",
    "time": "--time-col",
    "type": "--type-col",
    "value": "--value-col",
}

_LABEL = {"user": "user", "item": "item", "time": "timestamp", "type": "event type", "value": "value"}


def guess_column(available: list[str], candidates: tuple[str, ...]) -> str | None:
    """The first candidate name present in `available` (case-insensitive), or None."""
    by_lower = {name.lower(): name for name in reversed(available)}
    for candidate in candidates:
        if candidate.lower() in by_lower:
            return by_lower[candidate.lower()]
    return None


def map_columns(
    available: list[str], explicit: dict[str, str | None], required: set[str], where: str, hint: str = ""
) -> dict[str, str | None]:
    """Map each role to a column: the explicit name if given, else a guess by name.

    A missing required role or an explicit name that is not a column raises DataError naming the
    available columns and the option to use (followed by `hint`, if any).
    """
    listed = ", ".join(available)
    mapping: dict[str, str | None] = {}
    for role in ROLES:
        name = explicit.get(role)
        if name is not None and name not in available:
            raise DataError(f"{where} has no column {name!r} (given by {OPTION[role]}); available columns: {listed}.")
        mapping[role] = name if name is not None else guess_column(available, GUESSES[role])
        if mapping[role] is None and role in required:
            raise DataError(
                f"no {_LABEL[role]} column found in {where} (columns: {listed}); name it with {OPTION[role]}{hint}."
            )
    return mapping


def check_scalar(
    mapping: dict[str, str | None], nested: dict[str, str], where: str, options: dict[str, str] = OPTION
) -> None:
    """DataError when a mapped column holds lists, structs or JSON arrays/objects instead of one value per row.

    `mapping` is role -> column (a role outside `ROLES`, such as a side table's "id", is named as it is);
    `options` names the option that picks another column for a role, if there is one.
    """
    for role, column in mapping.items():
        if column is not None and column in nested:
            other = f" or name another column with {options[role]}" if role in options else ""
            raise DataError(
                f"the {_LABEL.get(role, role)} column {column!r} of {where} holds {nested[column]} values, not one "
                f"value per row; flatten it (one row per element){other}."
            )
