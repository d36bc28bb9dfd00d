"""MovieLens raw files: tell the ratings and movies files of a folder (ML-100K, ML-1M/10M, ML-20M and later),
their dialect and encoding, and fold ML-100K's 0/1 genre columns into one `genres` column once loaded."""

from __future__ import annotations

import codecs
from pathlib import Path

import duckdb

from lmrec.data.sqlutil import ident, literal
from lmrec.data.tables import Layout, Loaded, TableSpec
from lmrec.errors import DataError

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)  # fmt: skip

MOVIELENS_TEMPLATE = "{title} | {genres}"


def fold_genres(con: duckdb.DuckDBPyConnection, loaded: Loaded, flags: tuple[str, ...]) -> None:
    """Replace ML-100K's 0/1 genre columns by one `genres` column ('Action|Comedy'), as in later MovieLens."""
    parts = ", ".join(f"CASE WHEN {ident(g)} = '1' THEN {literal(g)} END" for g in flags)
    table = ident(loaded.table)
    con.execute(f"ALTER TABLE {table} ADD COLUMN genres VARCHAR")
    con.execute(f"UPDATE {table} SET genres = NULLIF(concat_ws('|', {parts}), '')")
    for flag in flags:
        con.execute(f"ALTER TABLE {table} DROP COLUMN {ident(flag)}")
    loaded.columns = [c for c in loaded.columns if c not in flags] + ["genres"]


def movielens_layout(path: Path, encoding: str | None = None) -> Layout:
    """A MovieLens folder or ratings file; `encoding` applies to the ratings and to `movies.csv`."""
    folder = path if path.is_dir() else path.parent
    ratings = {
        "u.data": ("\t", ("user_id", "item_id", "rating", "timestamp"), "u.item"),
        "ratings.dat": ("::", ("userId", "movieId", "rating", "timestamp"), "movies.dat"),
        "ratings.csv": (None, None, "movies.csv"),
    }
    candidates = ratings if path.is_dir() else {k: v for k, v in ratings.items() if k == path.name}
    for file, (delimiter, names, items_file) in candidates.items():
        if not (folder / file).is_file():
            continue
        events = TableSpec(
            folder / file,
            "csv",
            delimiter=delimiter,
            names=names,
            header=names is None,
            encoding=encoding,
            quote="" if names else None,
        )
        items = movielens_items(folder / items_file, encoding) if (folder / items_file).is_file() else None
        return Layout("movielens", folder.name, events, items, text_template=MOVIELENS_TEMPLATE)
    raise DataError(f"no MovieLens ratings file (u.data, ratings.dat or ratings.csv) at {path}.")


def movielens_items(path: Path, encoding: str | None = None) -> TableSpec:
    """A MovieLens movies file: `movies.csv` in `encoding`; the older files' encoding is detected."""
    name = path.name.lower()
    if name == "movies.csv":
        return TableSpec(path, "csv", encoding=encoding)
    encoding = _utf8_or_latin1(path)
    if name == "u.item":
        names = ("item_id", "title", "release_date", "video_release_date", "imdb_url", *ML100K_GENRES)
        return TableSpec(path, "csv", "|", names, header=False, encoding=encoding, quote="", genre_flags=ML100K_GENRES)
    return TableSpec(path, "csv", "::", ("movieId", "title", "genres"), header=False, encoding=encoding, quote="")


def _utf8_or_latin1(path: Path) -> str:
    """MovieLens text files are Latin-1 in ML-100K/1M and UTF-8 later: check the bytes, streaming."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8"
