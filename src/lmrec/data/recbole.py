"""RecBole files: atomic `NAME.inter` with its `NAME.item` / `NAME.user`, and benchmark files
`NAME.{train,valid,test}.inter` with their item side file (`NAME.item.json`, `NAME.item` or UniSRec `NAME.text`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lmrec.data.tables import Layout, TableSpec
from lmrec.errors import DataError

BENCHMARK_SPLITS = ("train", "valid", "test")
BENCHMARK_TEXT_TEMPLATE = "{title} | {brand} | {description}"
_BENCHMARK_NAMES = "NAME.train.inter, NAME.valid.inter, NAME.test.inter"


def recbole_layout(path: Path, encoding: str | None = None, given: bool = False) -> Layout:
    """RecBole atomic files (`NAME.inter`), or benchmark files when only they are there or `given` is asked."""
    if path.is_file():
        stem = _benchmark_stem(path.name)
        if stem is not None:
            return _benchmark(path.parent, stem, encoding)
        if given:
            raise DataError(
                f"{path} is not a RecBole benchmark file (NAME.train.inter, NAME.valid.inter, NAME.test.inter)."
            )
        return _recbole_atomic(path, encoding)
    stems = sorted({s for p in path.glob("*.inter") if (s := _benchmark_stem(p.name)) is not None})
    atomic = sorted(p for p in path.glob("*.inter") if _benchmark_stem(p.name) is None)
    if stems and (given or not atomic):
        if len(stems) != 1:
            raise DataError(f"{path} holds benchmark files of {', '.join(stems)}; give one of their files itself.")
        return _benchmark(path, stems[0], encoding)
    if given:
        raise DataError(f"{path} has no RecBole benchmark files ({_BENCHMARK_NAMES}).")
    named = path / f"{path.name}.inter"
    if named.is_file():
        return _recbole_atomic(named, encoding)
    if len(atomic) != 1:
        found = ", ".join(p.name for p in atomic) or "none"
        raise DataError(f"{path} needs exactly one NAME.inter file (found: {found}); give the file itself.")
    return _recbole_atomic(atomic[0], encoding)


def _recbole_atomic(inter: Path, encoding: str | None) -> Layout:
    """RecBole atomic files: `NAME.inter` with `NAME.item` and `NAME.user` beside it when they exist."""
    stem = inter.name[: -len(inter.suffix)]
    side = {ext: inter.with_name(f"{stem}.{ext}") for ext in ("item", "user")}
    return Layout(
        "recbole",
        stem,
        recbole_spec(inter, encoding),
        items=recbole_spec(side["item"], encoding) if side["item"].is_file() else None,
        users=recbole_spec(side["user"], encoding) if side["user"].is_file() else None,
    )


def _benchmark_stem(name: str) -> str | None:
    """NAME of a benchmark file `NAME.train.inter`, `NAME.valid.inter` or `NAME.test.inter`; else None."""
    for split in BENCHMARK_SPLITS:
        suffix = f".{split}.inter"
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _benchmark(folder: Path, stem: str, encoding: str | None) -> Layout:
    """RecBole benchmark files of `stem` in `folder`, with the first item side file found and `NAME.user`."""
    files = {split: folder / f"{stem}.{split}.inter" for split in BENCHMARK_SPLITS}
    missing = [path.name for path in files.values() if not path.is_file()]
    if missing:
        raise DataError(f"RecBole benchmark files of {stem} in {folder} lack {', '.join(missing)}.")
    specs = {split: recbole_spec(path, encoding) for split, path in files.items()}
    items = next(
        (folder / f"{stem}{ext}" for ext in (".item.json", ".item", ".text") if (folder / f"{stem}{ext}").is_file()),
        None,
    )
    users = folder / f"{stem}.user"
    return Layout(
        "recbole-benchmark",
        stem,
        specs.pop("train"),
        items=_benchmark_items(items, encoding) if items is not None else None,
        users=recbole_spec(users, encoding) if users.is_file() else None,
        text_template=BENCHMARK_TEXT_TEMPLATE,
        given=specs,
    )


def _benchmark_items(path: Path, encoding: str | None) -> TableSpec:
    """The item side file of benchmark files, its Python-list-looking strings read as plain text."""
    if path.name.endswith(".item.json"):
        return TableSpec(path, "json-object", encoding=encoding, list_strings=True)
    if path.name.endswith(".text"):
        return text_spec(path, encoding)
    return replace(recbole_spec(path, encoding), list_strings=True)


def text_spec(path: Path, encoding: str | None = None) -> TableSpec:
    """A UniSRec text file: `item_id<TAB>text` per line, with or without a header (`item_id:token ...`)."""
    with path.open(encoding=encoding or "utf-8", errors="replace") as handle:
        first = handle.readline().split("\t", 1)[0].strip().lower()
    if first.startswith("item_id"):
        return replace(recbole_spec(path, encoding), list_strings=True)
    return TableSpec(
        path, "csv", "\t", ("item_id", "text"), header=False, encoding=encoding, quote="", list_strings=True
    )


def recbole_spec(path: Path, encoding: str | None = None) -> TableSpec:
    """RecBole atomic file: tab separated, no quoting, header `name:type` read with the types removed."""
    if not path.is_file():
        raise DataError(f"{path} does not exist.")
    with path.open(encoding=encoding or "utf-8", errors="replace") as handle:
        header = handle.readline().rstrip("\r\n")
    if not header:
        raise DataError(f"{path} is empty.")
    names = tuple(col.rpartition(":")[0] if ":" in col else col for col in header.split("\t"))
    return TableSpec(path, "csv", "\t", names, header=True, encoding=encoding, quote="")
