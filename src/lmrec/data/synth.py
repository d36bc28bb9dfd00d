"""Synthetic behaviour logs that look like real ones, for benchmarks and tests of data preparation.

The log is a CSV with the columns `user_id,item_id,event_type,value,timestamp`, and an items CSV
(`item_id,title,category`) is written beside it. What makes it realistic:

- string ids (`u000123`, `i004567`), Zipf-like item popularity, log-normal user activity;
- users whose interests drift: each user walks across a few categories over their history, with
  some exploration of the whole catalogue;
- sessions: most gaps between a user's events are seconds to minutes, the rest days;
- event types `view` / `click` / `purchase` in about 80 / 17 / 3 %, with a `value` that is the dwell
  time in seconds for views, 1 for clicks and the amount paid for purchases;
- timestamps mixed per row: epoch seconds (50 %), epoch milliseconds (25 %), ISO-8601 (25 %);
- rows in shuffled order, about 0.1 % exact duplicate lines and 0.1 % malformed lines (too few
  fields, too many fields from a decimal comma, unparsable timestamps).

Everything per event is a numpy array; the CSV is written in chunks with pyarrow and the malformed
lines are spliced into the chunks' bytes, so ten million events take seconds, not minutes.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

COLUMNS = ("user_id", "item_id", "event_type", "value", "timestamp")
EVENT_TYPES = ("view", "click", "purchase")
EVENT_SHARES = (0.80, 0.17, 0.03)
TIMESTAMP_FORMATS = ("epoch_s", "epoch_ms", "iso8601")
TIMESTAMP_SHARES = (0.50, 0.25, 0.25)
MALFORMED_KINDS = ("too_few_fields", "too_many_fields", "bad_timestamp")

_START = int(datetime(2019, 1, 1, tzinfo=timezone.utc).timestamp())
_END = int(datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp())
_CHUNK_ROWS = 1_000_000
_ZIPF_EXPONENT = 0.8
_EXPLORE_SHARE = 0.15
_SHORT_GAP_SHARE = 0.7
_BAD_TIMESTAMPS = ("not-a-date", "2021-02-30T25:61:00Z", "31/13/2020 10:00", "1.6e9s", "yesterday")

# Category -> nouns used in its item titles, so that titles of one category share words.
_CATEGORIES: dict[str, tuple[str, ...]] = {
    category: tuple(nouns.split("|"))
    for category, nouns in {
        "Books": "novel|cookbook|atlas|biography|anthology|field guide|memoir|thriller",
        "Electronics": "headphones|charger|speaker|keyboard|monitor|router|webcam|tablet",
        "Kitchen": "skillet|kettle|chef knife|blender|colander|teapot|whisk|saucepan",
        "Garden": "trowel|hose|planter|rake|seed kit|pruner|sprinkler|wheelbarrow",
        "Toys": "jigsaw puzzle|robot|doll|train set|kite|building blocks|yo-yo|board game",
        "Sports": "football|yoga mat|dumbbell|racket|helmet|skipping rope|water bottle|tent",
        "Beauty": "lipstick|moisturiser|serum|shampoo|perfume|nail polish|face mask|hairbrush",
        "Music": "guitar|ukulele|drumsticks|vinyl record|metronome|harmonica|amplifier|mic",
        "Office": "stapler|notebook|fountain pen|desk lamp|binder|calculator|label maker|easel",
        "Pets": "dog bed|cat toy|leash|aquarium|bird feeder|litter box|chew bone|pet brush",
        "Grocery": "coffee beans|green tea|olive oil|granola|dark chocolate|honey|pasta|salsa",
        "Fashion": "sneakers|scarf|backpack|sunglasses|raincoat|wristwatch|belt|beanie",
        "Home": "cushion|candle|blanket|wall clock|vase|doormat|picture frame|curtains",
        "Automotive": "car wax|dash cam|tyre gauge|jump starter|seat cover|floor mats|wipers",
        "Tools": "drill|hammer|screwdriver set|tape measure|spirit level|wrench|saw|toolbox",
        "Baby": "pram|feeding bottle|bib|high chair|baby monitor|rattle|changing bag|mobile",
        "Health": "vitamins|thermometer|first aid kit|massage gun|pill organiser|heating pad",
        "Games": "game controller|strategy game|racing game|gaming headset|card game|arcade stick",
        "Software": "photo editor|antivirus|language course|video editor|password manager",
        "Outdoors": "hiking boots|sleeping bag|camping stove|compass|head torch|hammock",
    }.items()
}
_ADJECTIVES = (
    "classic", "compact", "deluxe", "eco", "essential", "everyday", "foldable", "heavy-duty", "lightweight",
    "modern", "organic", "portable", "premium", "rechargeable", "rustic", "smart", "soft", "sturdy",
    "travel", "vintage", "waterproof", "wireless", "bamboo", "ceramic", "cotton", "steel", "wooden",
    "mini", "large", "handmade", "silent", "bright",
)  # fmt: skip
_BRANDS = (
    "Alder", "Brightwell", "Corvo", "Dunmore", "Elmstead", "Fenwick", "Greystone", "Halcyon", "Ironbark",
    "Juniper", "Kestrel", "Larkspur", "Marlow", "Nettle", "Oakhurst", "Pembrook", "Quillon", "Redfern",
    "Saltmarsh", "Thistle", "Umberly", "Vantor", "Wexford", "Yarrow",
)  # fmt: skip
_SUFFIXES = ("", "", "", "", " Pro", " Mini", " XL", " (Pack of 2)", " Deluxe Edition", " 2nd Gen")


def write_synthetic_log(
    path: Path,
    users: int,
    items: int,
    events: int,
    seed: int = 0,
    *,
    duplicate_rate: float = 0.001,
    malformed_rate: float = 0.001,
) -> dict:
    """Write a realistic behaviour log to `path` and its items to `<stem>.items.csv`; return a summary.

    `events` well-formed events are written, plus `duplicate_rate` of them again as exact duplicate
    lines and `malformed_rate` of them as extra malformed lines (a few events also coincide by
    chance, e.g. two clicks on one item in the same second). The same seed gives the same bytes.
    """
    if users < 1 or items < 1 or events < 0:
        raise ValueError(f"need users >= 1, items >= 1 and events >= 0, got {users}, {items}, {events}")
    path = Path(path)
    items_path = path.with_name(f"{path.stem}.items.csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    catalogue = _make_catalogue(rng, items)
    log = _make_events(rng, users, events, catalogue)
    n_duplicates = _count(events, duplicate_rate)
    n_malformed = _count(events, malformed_rate)
    order = _shuffled_rows(rng, events, n_duplicates)
    user_ids = _ids("u", users)
    item_ids = _ids("i", items)
    bad_positions = np.sort(rng.integers(0, order.size + 1, n_malformed))
    bad_lines, bad_kinds = _malformed_lines(rng, n_malformed, log, user_ids, item_ids)

    _write_items(items_path, item_ids, catalogue)
    with path.open("wb") as out:
        out.write((",".join(COLUMNS) + "\n").encode())
        for start in range(0, max(order.size, 1), _CHUNK_ROWS):
            rows = order[start : start + _CHUNK_ROWS]
            stop = start + rows.size
            last = stop >= order.size
            in_chunk = (bad_positions >= start) & ((bad_positions < stop) | last)
            chunk_csv = _chunk_csv(rows, log, user_ids, item_ids)
            _splice(out, chunk_csv, bad_positions[in_chunk] - start, bad_lines[in_chunk])

    return {
        "path": str(path),
        "items_path": str(items_path),
        "seed": seed,
        "events": events,
        "duplicates": n_duplicates,
        "malformed": n_malformed,
        "malformed_by_kind": {kind: int(np.sum(bad_kinds == i)) for i, kind in enumerate(MALFORMED_KINDS)},
        "rows_written": int(order.size + n_malformed),
        "users": users,
        "active_users": int(np.count_nonzero(log["counts"])),
        "items": items,
        "categories": len(catalogue["names"]),
        "timestamp_formats": {name: int(np.sum(log["fmt"] == i)) for i, name in enumerate(TIMESTAMP_FORMATS)},
    }


def _count(events: int, rate: float) -> int:
    if events == 0 or rate <= 0:
        return 0
    return max(1, round(events * rate))


def _ids(prefix: str, n: int) -> pa.Array:
    width = max(6, len(str(n - 1)))
    return pa.array([f"{prefix}{i:0{width}d}" for i in range(n)], type=pa.string())


def _make_catalogue(rng: np.random.Generator, items: int) -> dict:
    """Items with a category, a Zipf-like popularity weight, a price and a title made of words."""
    names = list(_CATEGORIES)[: int(np.clip(items // 20, 1, len(_CATEGORIES)))]
    n_cat = len(names)
    shares = rng.dirichlet(np.full(n_cat, 2.0))
    category = np.concatenate([np.arange(n_cat), rng.choice(n_cat, items - n_cat, p=shares)])[:items]
    category = rng.permutation(category).astype(np.int32)
    weight = (rng.permutation(items) + 1.0) ** -_ZIPF_EXPONENT
    price = np.round(rng.lognormal(3.0, 0.6, n_cat)[category] * rng.lognormal(0.0, 0.5, items), 2)

    order = np.argsort(category, kind="stable")
    sorted_cat = category[order]
    cat_weight = np.bincount(category, weights=weight, minlength=n_cat)
    cumulative = np.cumsum(weight[order])
    before = np.concatenate([[0.0], np.cumsum(cat_weight)[:-1]])
    within = (cumulative - before[sorted_cat]) / cat_weight[sorted_cat]
    within[np.flatnonzero(np.diff(sorted_cat, append=n_cat))] = 1.0

    titles = [
        f"{_BRANDS[b]} {_ADJECTIVES[a]} {nouns[n % len(nouns)]}{_SUFFIXES[s]}"
        for b, a, n, s, nouns in zip(
            rng.integers(0, len(_BRANDS), items),
            rng.integers(0, len(_ADJECTIVES), items),
            rng.integers(0, 64, items),
            rng.integers(0, len(_SUFFIXES), items),
            (_CATEGORIES[names[c]] for c in category),
            strict=True,
        )
    ]
    return {
        "names": names,
        "category": category,
        "category_share": cat_weight / cat_weight.sum(),
        "price": price,
        "titles": titles,
        "order": order,
        "key": sorted_cat + within,
    }


def _make_events(rng: np.random.Generator, users: int, events: int, catalogue: dict) -> dict:
    """All events in user order as numpy arrays: user, item, type, value, time and timestamp format."""
    activity = rng.lognormal(0.0, 1.2, users)
    p = activity / activity.sum()
    # every user acts at least once when there are enough events for that
    counts = 1 + rng.multinomial(events - users, p) if events >= users else rng.multinomial(events, p)
    user = np.repeat(np.arange(users, dtype=np.int32), counts)
    starts = np.cumsum(counts) - counts

    item = _sample_items(rng, counts, starts, catalogue)
    time_s = _event_times(rng, counts, starts)
    etype = rng.choice(len(EVENT_TYPES), events, p=EVENT_SHARES).astype(np.int8)
    value = np.where(etype == 0, np.round(rng.lognormal(np.log(30.0), 1.0, events), 1), 1.0)
    purchase = np.flatnonzero(etype == 2)
    quantity = rng.choice([1, 2, 3], purchase.size, p=[0.85, 0.1, 0.05])
    value[purchase] = np.round(catalogue["price"][item[purchase]] * quantity, 2)
    fmt = rng.choice(len(TIMESTAMP_FORMATS), events, p=TIMESTAMP_SHARES).astype(np.int8)
    return {
        "counts": counts,
        "user": user,
        "item": item,
        "etype": etype,
        "value": value,
        "seconds": np.floor(time_s).astype(np.int64),
        "millis": np.floor(time_s * 1000.0).astype(np.int64),
        "fmt": fmt,
    }


def _sample_items(rng: np.random.Generator, counts: np.ndarray, starts: np.ndarray, catalogue: dict) -> np.ndarray:
    """Each user walks across 2-4 categories over their history; some events explore any category."""
    users, events = counts.size, int(counts.sum())
    share = catalogue["category_share"]
    n_cat = share.size
    first = rng.choice(n_cat, users, p=share)
    step = rng.integers(1, max(n_cat, 2), users)
    segment = np.maximum(1, counts // rng.integers(2, 5, users))
    position = np.arange(events, dtype=np.int64) - np.repeat(starts, counts)
    walked = (position // np.repeat(segment, counts)) * np.repeat(step, counts)
    category = (np.repeat(first, counts) + walked) % n_cat
    explore = np.flatnonzero(rng.random(events) < _EXPLORE_SHARE)
    category[explore] = rng.choice(n_cat, explore.size, p=share)
    slot = np.searchsorted(catalogue["key"], category + rng.random(events), side="right")
    return catalogue["order"][np.minimum(slot, catalogue["order"].size - 1)].astype(np.int32)


def _event_times(rng: np.random.Generator, counts: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Epoch seconds: sessions of short gaps separated by gaps of days, each user placed in 2019-2024."""
    users, events = counts.size, int(counts.sum())
    short = rng.random(events) < _SHORT_GAP_SHARE
    gaps = np.where(short, rng.exponential(90.0, events), rng.lognormal(np.log(2 * 86400.0), 1.0, events))
    gaps[starts[counts > 0]] = 0.0
    elapsed = np.cumsum(gaps)
    base = np.zeros(users)
    base[counts > 0] = elapsed[starts[counts > 0]]
    elapsed -= np.repeat(base, counts)
    span = np.zeros(users)
    span[counts > 0] = elapsed[(starts + counts - 1)[counts > 0]]
    window = 0.95 * (_END - _START)
    scale = np.minimum(1.0, window / np.maximum(span, 1.0))
    origin = _START + rng.random(users) * (_END - _START - span * scale)
    return np.repeat(origin, counts) + elapsed * np.repeat(scale, counts)


def _shuffled_rows(rng: np.random.Generator, events: int, duplicates: int) -> np.ndarray:
    """Row indices in writing order: every event once, some events twice, all shuffled."""
    copies = rng.choice(events, duplicates, replace=False) if duplicates else np.empty(0, np.int64)
    rows = np.concatenate([np.arange(events, dtype=np.int64), copies])
    return rows[rng.permutation(rows.size)]


def _malformed_lines(
    rng: np.random.Generator, n: int, log: dict, user_ids: pa.Array, item_ids: pa.Array
) -> tuple[np.ndarray, np.ndarray]:
    """`n` broken lines (as bytes) built from random events, and the kind of each one."""
    kinds = rng.integers(0, len(MALFORMED_KINDS), n)
    rows = rng.integers(0, max(int(log["user"].size), 1), n)
    fields_kept = rng.integers(1, 4, n)
    bad_ts = rng.integers(0, len(_BAD_TIMESTAMPS), n)
    lines = []
    for kind, row, kept, ts in zip(kinds, rows, fields_kept, bad_ts, strict=True):
        value = f"{log['value'][row]:.2f}"
        fields = [
            user_ids[int(log["user"][row])].as_py(),
            item_ids[int(log["item"][row])].as_py(),
            EVENT_TYPES[log["etype"][row]],
            value,
            str(log["seconds"][row]),
        ]
        if kind == 0:
            fields = fields[: int(kept) + 1]
        elif kind == 1:
            fields[3] = value.replace(".", ",")
        else:
            fields[4] = _BAD_TIMESTAMPS[ts]
        lines.append((",".join(fields) + "\n").encode())
    return np.array(lines, dtype=object), kinds


def _chunk_csv(rows: np.ndarray, log: dict, user_ids: pa.Array, item_ids: pa.Array) -> pa.Buffer:
    """The CSV bytes (no header) of the events at `rows`, with each row's own timestamp format."""
    fmt = log["fmt"][rows]
    seconds = log["seconds"][rows]
    timestamps = pa.array(np.where(fmt == 1, log["millis"][rows], seconds)).cast(pa.string())
    is_iso = fmt == 2
    # casting a timestamp to string gives "YYYY-MM-DD HH:MM:SS", ten times faster than pc.strftime
    iso = pa.array(seconds[is_iso], type=pa.timestamp("s")).cast(pa.string())
    iso = pc.binary_join_element_wise(pc.replace_substring(iso, " ", "T"), "Z", "")
    timestamps = pc.replace_with_mask(timestamps, pa.array(is_iso), iso)
    table = pa.table(
        {
            "user_id": user_ids.take(pa.array(log["user"][rows])),
            "item_id": item_ids.take(pa.array(log["item"][rows])),
            "event_type": pa.array(EVENT_TYPES).take(pa.array(log["etype"][rows])),
            "value": pa.array(log["value"][rows]),
            "timestamp": timestamps,
        }
    )
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return sink.getvalue()


def _splice(out: BinaryIO, chunk: pa.Buffer, positions: np.ndarray, lines: np.ndarray) -> None:
    """Write `chunk`, inserting `lines[k]` before its row `positions[k]` (== row count: at the end)."""
    view = memoryview(chunk)
    if positions.size == 0:
        out.write(view)
        return
    line_ends = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == ord("\n")) + 1
    boundaries = np.concatenate([[0], line_ends])[positions]
    previous = 0
    for boundary, line in zip(boundaries, lines, strict=True):
        out.write(view[previous:boundary])
        out.write(line)
        previous = int(boundary)
    out.write(view[previous:])


def _write_items(path: Path, item_ids: pa.Array, catalogue: dict) -> None:
    names = pa.array(catalogue["names"])
    table = pa.table(
        {
            "item_id": item_ids,
            "title": pa.array(catalogue["titles"], type=pa.string()),
            "category": names.take(pa.array(catalogue["category"])),
        }
    )
    with path.open("wb") as out:
        out.write((",".join(table.column_names) + "\n").encode())
        pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=False, quoting_style="none"))
