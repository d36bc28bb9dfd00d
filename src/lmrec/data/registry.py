"""The dataset registry: a catalogue of public datasets, and where each one is found on this machine.

`resolve_source` looks, in order, at an explicit path, at `$LMREC_DATA_DIR/<name>/`, at the download
cache (`$LMREC_CACHE_DIR`, default `~/.cache/lmrec/datasets`) and finally downloads the catalogue's
files: streamed with a progress bar, resumed from a `.part` file with an HTTP Range request, checked
against their SHA-256, renamed into place atomically, and zip archives extracted once. Each file is
checked, downloaded and extracted under an exclusive lock (`flock` on an empty `<file>.lock` beside it,
left in place), so a second process fetching the same dataset waits for the first and then finds the
verified file, or says after `lock_wait` seconds that another process is still downloading it.

Where the checksums come from (nothing was downloaded to compute them here, since this project's
build machines have no internet access):

- MovieLens (ml-100k, ml-1m, ml-20m, ml-latest-small): SHA-256 and byte sizes from tensorflow/datasets,
  `tensorflow_datasets/url_checksums/movielens.txt` (commit 1c076ac3c19c8ea83e1d1a75e0623c9a699e0d7c).
  Other public projects pin the same four values on their own, e.g. TensorFlow's MovieLens-1M
  recommendation example (`MOVIELENS_ZIP_HASH`) and the Julia DataDeps registration of ml-20m.
  GroupLens itself publishes only MD5 sums (`<name>.zip.md5`). The ml-latest-small hash is for its
  2018-09-26 build; GroupLens may rebuild "latest" at the same URL, and the hash would then fail.
- Amazon reviews 2018 and 2023 (McAuley lab, UCSD): no SHA-256 is published by the lab or found pinned
  anywhere, so `sha256=None`. The hash is recorded on first download (trust on first use) in a
  `<file>.sha256` file beside the download, and later reads and re-downloads are checked against it.
- amazon-industrial (MiniOneRec's preprocessing of Amazon 2018 Industrial and Scientific): the SHA-256 and
  sizes of the five files as copied byte for byte from the public repository ZhangChen0212/MiniOneRec
  at commit d03130d8 (the project's `shared/data/amazon-industrial/SOURCE.md`); the URLs are that commit's
  raw files. Like every `$LMREC_DATA_DIR` copy, a local copy is not checked against them (the prepared
  dataset's manifest records the SHA-256 of every file it read).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from tqdm import tqdm

from lmrec.errors import DataError
from lmrec.locks import file_lock, is_locked
from lmrec.runtime import show_progress

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "LMREC_DATA_DIR"
CACHE_DIR_ENV = "LMREC_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/lmrec/datasets")
TIMEOUT_S = 60.0
LOCK_WAIT_S = 3600.0  # how long to wait for another process's download of the same file
_CHUNK = 1 << 20
_USER_AGENT = "lmrec-dataset-registry/0.1"


@dataclass(frozen=True)
class RemoteFile:
    """One published file: its official URL, its SHA-256 (None: recorded on first download), its size.

    `role` says what the file holds: "archive" (a zip with the whole dataset), "interactions" (the
    behaviour log to prepare), "items" (item metadata, for `--items`), "examples" (RecBole benchmark files)
    or "sequences" (the full sequences those examples were cut from, kept for reference, not read).
    """

    url: str
    sha256: str | None
    size: int | None = None
    role: str = "archive"

    @property
    def filename(self) -> str:
        """The file's name in the cache: the last part of the URL's path."""
        return Path(urlsplit(self.url).path).name

    @property
    def is_zip(self) -> bool:
        """Whether the file is a zip archive to extract after download."""
        return self.filename.lower().endswith(".zip")


@dataclass(frozen=True)
class DatasetEntry:
    """A catalogued dataset: its files, a format hint for the readers, and its terms of use."""

    name: str
    description: str
    format: str
    files: tuple[RemoteFile, ...]
    licence: str
    citation: str
    homepage: str


_GROUPLENS = "https://files.grouplens.org/datasets/movielens"
_MOVIELENS_LICENCE = (
    "Research use only; do not redistribute it, use it commercially or imply endorsement by the "
    "University of Minnesota or GroupLens without permission; cite Harper & Konstan (2015)."
)
_MOVIELENS_CITATION = (
    "F. Maxwell Harper and Joseph A. Konstan. 2015. The MovieLens Datasets: History and Context. "
    "ACM Transactions on Interactive Intelligent Systems 5, 4, Article 19. https://doi.org/10.1145/2827872"
)
# The McAuley lab has moved these files between hosts (deepyeti.ucsd.edu/jianmo, jmcauley.ucsd.edu,
# datarepo.eng.ucsd.edu/mcauley_group); mcauleylab.ucsd.edu/public_datasets is the current one.
_AMAZON_2018 = "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2"
_AMAZON_2018_CITATION = (
    "Jianmo Ni, Jiacheng Li and Julian McAuley. 2019. Justifying Recommendations using "
    "Distantly-Labeled Reviews and Fine-Grained Aspects. EMNLP-IJCNLP 2019."
)
_AMAZON_2023 = "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023/raw"
_AMAZON_2023_CITATION = (
    "Yupeng Hou, Jiacheng Li, Zhankui He, An Yan, Xiusi Chen and Julian McAuley. 2024. Bridging "
    "Language and Items for Retrieval and Recommendation. arXiv:2403.03952."
)
_AMAZON_LICENCE = (
    "Amazon review text and metadata collected by the McAuley lab (UCSD); no licence is published, "
    "the lab asks for research use and citation; do not redistribute."
)


def _movielens(name: str, description: str, size: int, sha256: str) -> DatasetEntry:
    return DatasetEntry(
        name=name,
        description=description,
        format="movielens",
        files=(RemoteFile(f"{_GROUPLENS}/{name}.zip", sha256, size),),
        licence=_MOVIELENS_LICENCE,
        citation=_MOVIELENS_CITATION,
        homepage="https://grouplens.org/datasets/movielens/",
    )


def _amazon_2018(category: str) -> DatasetEntry:
    return DatasetEntry(
        name=_canonical(f"amazon-2018-{category}"),
        description=(
            f"Amazon reviews 2018, {category.replace('_', ' ')}: 5-core reviews (every user and item has "
            "at least 5) as gzipped JSON lines, with product metadata"
        ),
        format="amazon-2018",
        files=(
            RemoteFile(f"{_AMAZON_2018}/categoryFilesSmall/{category}_5.json.gz", None, role="interactions"),
            RemoteFile(f"{_AMAZON_2018}/metaFiles2/meta_{category}.json.gz", None, role="items"),
        ),
        licence=_AMAZON_LICENCE,
        citation=_AMAZON_2018_CITATION,
        homepage="https://nijianmo.github.io/amazon/",
    )


def _amazon_2023(category: str) -> DatasetEntry:
    return DatasetEntry(
        name=_canonical(f"amazon-2023-{category}"),
        description=(
            f"Amazon Reviews 2023, {category.replace('_', ' ')}: all reviews and item metadata as gzipped JSON lines"
        ),
        format="amazon-2023",
        files=(
            RemoteFile(f"{_AMAZON_2023}/review_categories/{category}.jsonl.gz", None, role="interactions"),
            RemoteFile(f"{_AMAZON_2023}/meta_categories/meta_{category}.jsonl.gz", None, role="items"),
        ),
        licence=_AMAZON_LICENCE,
        citation=_AMAZON_2023_CITATION,
        homepage="https://amazon-reviews-2023.github.io/",
    )


_MINIONEREC = (
    "https://raw.githubusercontent.com/ZhangChen0212/MiniOneRec/d03130d84d34d405b045d89fc3ac546b934d2d54/data/Amazon"
)
_MINIONEREC_CITATION = (
    _AMAZON_2018_CITATION + " Preprocessing (5-core, examples of at most 10 earlier items, split globally by "
    "time 8:1:1): MiniOneRec, https://github.com/AkaliKong/MiniOneRec (Apache-2.0 code)."
)
_INDUSTRIAL_FILES = (
    ("item.json", "937600c7a03652f55864a1d12d6e9fe8ca3e24ecc4e255a88216b25c5f949496", 3_008_778, "items"),
    ("inter.json", "bcffb33274493b6f451ee69e144c90766bd7e6cd4777fa54f78a0beb0526ffae", 626_055, "sequences"),
    ("train.inter", "788d1018bf6710c45e929c65402443700e92494dd9e9b8b20aa3238ee4a7bb1f", 950_826, "examples"),
    ("valid.inter", "ffe5b8999f2a97cd0e9d3aad2113de8d39bb93cf1a224f531c0803bb127f0968", 138_045, "examples"),
    ("test.inter", "bf47aa9c6d1df2c8d3420fdb9cd49195df26d895b652d65d2ba727c1233681cb", 145_159, "examples"),
)


def _amazon_industrial() -> DatasetEntry:
    return DatasetEntry(
        name="amazon-industrial",
        description=(
            "Amazon reviews 2018, Industrial and Scientific, as preprocessed by MiniOneRec: 7,694 users, 3,686 "
            "products with title, brand and description, RecBole benchmark files of 36,259 / 4,532 / 4,533 "
            "train / valid / test examples"
        ),
        format="recbole-benchmark",
        files=tuple(
            RemoteFile(f"{_MINIONEREC}/Industrial_and_Scientific.{suffix}", sha256, size, role)
            for suffix, sha256, size, role in _INDUSTRIAL_FILES
        ),
        licence=(
            "Amazon review data for research use: cite Ni, Li and McAuley (EMNLP 2019) and MiniOneRec for the "
            "preprocessing; do not redistribute."
        ),
        citation=_MINIONEREC_CITATION,
        homepage="https://github.com/AkaliKong/MiniOneRec",
    )


def _canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-")


CATALOGUE: dict[str, DatasetEntry] = {
    entry.name: entry
    for entry in (
        _movielens(
            "ml-100k",
            "MovieLens 100K: 100,000 ratings (1-5) by 943 users on 1,682 movies, 1997-1998",
            4_924_029,
            "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        ),
        _movielens(
            "ml-1m",
            "MovieLens 1M: 1,000,209 ratings (1-5) by 6,040 users on 3,706 movies, 2000-2003",
            5_917_549,
            "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        ),
        _movielens(
            "ml-20m",
            "MovieLens 20M: 20,000,263 ratings (0.5-5) by 138,493 users on 26,744 movies, 1995-2015",
            198_702_078,
            "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
        ),
        _movielens(
            "ml-latest-small",
            "MovieLens latest small (2018-09-26 build): 100,836 ratings (0.5-5) by 610 users on 9,724 movies",
            978_202,
            "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
        ),
        *(
            _amazon_2018(category)
            for category in (
                "All_Beauty",
                "Luxury_Beauty",
                "Industrial_and_Scientific",
                "Prime_Pantry",
                "Software",
            )
        ),
        *(
            _amazon_2023(category)
            for category in ("All_Beauty", "Amazon_Fashion", "Industrial_and_Scientific", "Software")
        ),
        _amazon_industrial(),
    )
}


def list_datasets() -> list[DatasetEntry]:
    """All catalogued datasets sorted by name, for a CLI listing."""
    return sorted(CATALOGUE.values(), key=lambda entry: entry.name)


def get_entry(name: str, catalogue: Mapping[str, DatasetEntry] = CATALOGUE) -> DatasetEntry:
    """The catalogue entry called `name` (case and `_`/`-` do not matter); DataError naming the known ones."""
    entry = catalogue.get(name) or catalogue.get(_canonical(name))
    if entry is None:
        raise DataError(
            f"unknown dataset {name!r}; the known datasets are {', '.join(sorted(catalogue))}, and a path "
            f"to a file or folder also works (--source PATH, or a folder at ${DATA_DIR_ENV}/{name}/)."
        )
    return entry


def cache_dir() -> Path:
    """The download cache: `$LMREC_CACHE_DIR/datasets`, else `~/.cache/lmrec/datasets`."""
    root = os.environ.get(CACHE_DIR_ENV)
    return (Path(root) / "datasets" if root else Path(DEFAULT_CACHE_DIR)).expanduser()


def resolve_source(
    name: str,
    source: Path | None = None,
    *,
    download: bool = True,
    catalogue: Mapping[str, DatasetEntry] = CATALOGUE,
) -> Path:
    """A local file or folder holding dataset `name`, found or fetched in the order the module describes.

    A folder from `$LMREC_DATA_DIR` is returned as it is (its format is detected by the readers and it
    is not checked against the download's hash); `download=False` fails instead of going to the network.
    """
    if source is not None:
        return _resolve_explicit(Path(source))
    local = _data_dir_copy(name)
    if local is not None:
        return local
    return fetch(get_entry(name, catalogue), download=download)


def fetch(
    entry: DatasetEntry,
    cache: Path | None = None,
    *,
    download: bool = True,
    timeout: float = TIMEOUT_S,
    lock_wait: float = LOCK_WAIT_S,
) -> Path:
    """Make every file of `entry` present and verified under `cache/<name>/` and return the dataset's path.

    Files already cached are re-hashed and kept if they match; missing or corrupt ones are downloaded,
    each under its lock (waiting up to `lock_wait` seconds for another process holding it). The path is
    the extracted folder for a single-zip dataset, else the dataset's cache folder, where each file of
    `entry.files` is `folder / file.filename` (its `role` tells which is which).
    """
    folder = (cache if cache is not None else cache_dir()) / entry.name
    extracted: list[Path] = []
    for remote in entry.files:
        target = folder / remote.filename
        if not download and not target.is_file():
            raise _offline(entry.name, folder)
        with _file_lock(target, entry.name, lock_wait):
            if not _cached_ok(target, remote):
                if not download:
                    raise _offline(entry.name, folder)
                logger.info("downloading %s (%s)", entry.name, entry.licence)
                _download(remote, target, entry.name, timeout)
            if remote.is_zip:
                extracted.append(_extract_once(target, folder / Path(remote.filename).stem))
    return extracted[0] if len(entry.files) == 1 and extracted else folder


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file as lowercase hex, read in chunks so large files need little memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fallback(name: str) -> str:
    return f"pass --source PATH or put a copy at ${DATA_DIR_ENV}/{name}/"


def _offline(name: str, folder: Path) -> DataError:
    return DataError(f"{name} is not in the download cache ({folder}) and downloading is off; {_fallback(name)}.")


def _file_lock(target: Path, name: str, wait: float) -> AbstractContextManager[None]:
    """Hold the lock of `<target>.lock`; wait up to `wait` seconds while another process holds it."""
    lock = target.with_name(target.name + ".lock")

    def busy() -> DataError:
        return DataError(
            f"another process is downloading {target.name} of {name} into {target.parent} (it holds "
            f"{lock}); wait for it to finish and run again, or stop that process."
        )

    if is_locked(lock):
        logger.info("another process is downloading %s (it holds %s); waiting for it", target.name, lock)
    return file_lock(lock, wait=wait, busy=busy)


def _data_dir_copy(name: str) -> Path | None:
    root = os.environ.get(DATA_DIR_ENV)
    if not root or Path(name).name != name:
        return None  # unset, or a name with a path in it, which must not reach outside the folder
    for candidate in dict.fromkeys((name, _canonical(name))):
        folder = Path(root).expanduser() / candidate
        if folder.is_dir():
            return folder
    return None


def _resolve_explicit(source: Path) -> Path:
    path = source.expanduser()
    if not path.exists():
        raise DataError(f"{path} does not exist; pass an existing file, folder or .zip as --source.")
    if path.is_file() and path.suffix.lower() == ".zip":
        try:
            return _extract_once(path, path.with_suffix(""))
        except OSError:
            fallback = cache_dir() / "sources" / f"{path.stem}-{_path_key(path)}"
            logger.info("cannot extract %s beside it; extracting into %s", path, fallback)
            fallback.parent.mkdir(parents=True, exist_ok=True)
            return _extract_once(path, fallback)
    return path


def _path_key(path: Path) -> str:
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]


def _hash_record(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _recorded_hash(path: Path) -> str | None:
    record = _hash_record(path)
    if not record.is_file():
        return None
    fields = record.read_text().split()
    return fields[0].lower() if fields else None


def _write_hash_record(path: Path, sha256: str) -> None:
    record = _hash_record(path)
    tmp = record.with_name(record.name + ".tmp")
    with tmp.open("w") as handle:
        handle.write(f"{sha256}  {path.name}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, record)


def _cached_ok(target: Path, remote: RemoteFile) -> bool:
    if not target.is_file():
        return False
    expected = remote.sha256 or _recorded_hash(target)
    if expected is None:
        logger.warning("cached %s has no recorded SHA-256; downloading it again", target)
    else:
        actual = sha256_file(target)
        if actual == expected:
            return True
        logger.warning("cached %s has SHA-256 %s, not %s; downloading it again", target, actual, expected)
    target.unlink()
    return False


def _download(remote: RemoteFile, dest: Path, name: str, timeout: float) -> None:
    """Stream `remote` into `dest.part` (resuming it), verify its SHA-256, then rename it to `dest`."""
    expected = remote.sha256 or _recorded_hash(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _stream(remote, part, name, timeout)
    actual = sha256_file(part)
    if expected is not None and actual != expected:
        part.unlink()
        origin = "" if remote.sha256 else f" (recorded at the first download in {_hash_record(dest)})"
        raise DataError(
            f"the download of {remote.url} has SHA-256 {actual} but {expected} was expected{origin}, so it "
            f"was deleted; if the file was re-published upstream, {_fallback(name)}."
        )
    if expected is None:
        logger.info("no published SHA-256 for %s; recorded %s on first download", remote.url, actual)
    _write_hash_record(dest, actual)
    os.replace(part, dest)


def _stream(remote: RemoteFile, part: Path, name: str, timeout: float) -> None:
    """Append the rest of `remote` to `part`: a Range request when part exists, a full one otherwise."""
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(remote.url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            return  # nothing left to fetch: the .part already holds the whole file; the hash decides
        raise DataError(
            f"downloading {remote.url} failed with HTTP {exc.code} {exc.reason}; {_fallback(name)}."
        ) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _unreachable(remote.url, name, exc) from exc
    with response:
        resumed = bool(offset) and response.status == 206
        if resumed:
            _check_content_range(response, offset, remote.url, part)
        elif offset:
            logger.info("%s ignored the Range request; downloading it from the start", remote.url)
        length = response.headers.get("Content-Length")
        start = offset if resumed else 0
        total = start + int(length) if length is not None else remote.size
        with (
            part.open("ab" if resumed else "wb") as out,
            tqdm(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=remote.filename,
                disable=None if show_progress() else True,  # None: on a terminal only
            ) as bar,
        ):
            received = _copy(response, out, bar, remote.url, name)
            out.flush()
            os.fsync(out.fileno())
    if length is not None and received < int(length):
        raise DataError(
            f"the download of {remote.url} stopped after {start + received} of {start + int(length)} bytes "
            f"(run again to resume it); {_fallback(name)}."
        )


def _copy(response: http.client.HTTPResponse, out: BinaryIO, bar: tqdm, url: str, name: str) -> int:
    received = 0
    while True:
        try:
            chunk = response.read(_CHUNK)
        except (OSError, http.client.HTTPException) as exc:
            raise _unreachable(url, name, exc) from exc
        if not chunk:
            return received
        out.write(chunk)
        received += len(chunk)
        bar.update(len(chunk))


def _check_content_range(response: http.client.HTTPResponse, offset: int, url: str, part: Path) -> None:
    content_range = response.headers.get("Content-Range", "")
    unit, _, spec = content_range.partition(" ")
    if unit != "bytes" or not spec.startswith(f"{offset}-"):
        part.unlink()
        raise DataError(
            f"{url} answered the request to resume at byte {offset} with Content-Range {content_range!r}, "
            "so the partial download was deleted; run again to download it from the start."
        )


def _unreachable(url: str, name: str, exc: BaseException) -> DataError:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return DataError(f"cannot download {url} ({reason or type(exc).__name__}); {_fallback(name)}.")


def _extract_once(archive: Path, target: Path) -> Path:
    """Extract `archive` into folder `target` (its single top folder, if any, becomes `target`), once."""
    if target.is_dir():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        os.replace(_content_root(tmp), target)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{archive} is not a valid zip archive ({exc}); delete it and try again.") from exc
    except OSError:
        if not target.is_dir():
            raise
        logger.info("%s was extracted by another process meanwhile; using it", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _content_root(folder: Path) -> Path:
    entries = [path for path in folder.iterdir() if path.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return folder
