"""Amazon reviews (2018 and 2023): tell a source's review file and its meta file (the items table), and
how the meta file is read (list fields joined, the default text fields always present)."""

from __future__ import annotations

from pathlib import Path

from lmrec.data.tables import Layout, TableSpec, path_stem, strip_compression
from lmrec.errors import DataError

# Amazon item text by release (told apart by the file suffix: .json is 2018, .jsonl is 2023).
AMAZON_TEXT_FIELDS = {".json": ("title", "brand", "category"), ".jsonl": ("title", "store", "categories")}
AMAZON_LIST_SEPARATOR = ", "


def amazon_layout(path: Path, encoding: str | None = None) -> Layout:
    """Amazon reviews: the review file (a folder's only non-meta JSON lines file) and its meta file, if any."""
    if path.is_dir():
        reviews = amazon_files(path)
        if len(reviews) != 1:
            found = ", ".join(p.name for p in reviews) or "none"
            raise DataError(
                f"{path} needs exactly one Amazon review file (*.json.gz or *.jsonl.gz besides meta_*; "
                f"found: {found}); give the file itself."
            )
        review = reviews[0]
    elif is_meta(path.name):
        raise DataError(f"{path} is an Amazon metadata file; give the review file or the folder holding both.")
    else:
        review = path
    suffix = amazon_suffix(review.name)
    if suffix is None:
        raise DataError(f"{review} is not an Amazon review file (*.json, *.jsonl, optionally .gz).")
    meta = amazon_meta(review)
    fields = AMAZON_TEXT_FIELDS[suffix]
    return Layout(
        "amazon",
        path.name if path.is_dir() else path_stem(path),
        TableSpec(review, "jsonl", encoding=encoding),
        amazon_items(meta, encoding) if meta is not None else None,
        text_template=" | ".join("{" + f + "}" for f in fields),
    )


def amazon_items(path: Path, encoding: str | None = None) -> TableSpec:
    """An Amazon meta file: JSON lines with list fields joined and the default text fields always present."""
    keys = AMAZON_TEXT_FIELDS.get(amazon_suffix(path.name), ())
    return TableSpec(path, "jsonl", encoding=encoding, list_separator=AMAZON_LIST_SEPARATOR, json_keys=keys)


def amazon_suffix(name: str) -> str | None:
    """The suffix ".json" or ".jsonl" when `name` is a JSON (lines) file, compressed or not; else None."""
    suffix = Path(strip_compression(name.lower())).suffix
    return suffix if suffix in AMAZON_TEXT_FIELDS else None


def amazon_files(folder: Path, meta: bool = False) -> list[Path]:
    """The JSON (lines) files of a folder: the review files, or with `meta` the `meta_*` files."""
    return sorted(p for p in folder.iterdir() if p.is_file() and amazon_suffix(p.name) and is_meta(p.name) == meta)


def is_meta(name: str) -> bool:
    """True for an Amazon metadata file name (`meta_*`)."""
    return name.lower().startswith("meta_")


def amazon_meta(review: Path) -> Path | None:
    """The meta file beside a review file: `meta_CATEGORY.*` (reviews `CATEGORY[_5].*`), else the only `meta_*`."""
    metas = amazon_files(review.parent, meta=True)
    category = path_stem(review).removesuffix("_5")
    named = [p for p in metas if path_stem(p) == f"meta_{category}"]
    if named:
        return named[0]
    return metas[0] if len(metas) == 1 else None
