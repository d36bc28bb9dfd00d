"""Dataset registry: resolution order, and downloads from a local HTTP server that honours Range."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lmrec.data.registry import (
    CATALOGUE,
    DatasetEntry,
    RemoteFile,
    fetch,
    get_entry,
    list_datasets,
    resolve_source,
    sha256_file,
)
from lmrec.errors import DataError

SHARED_ML100K = Path("/work/shared/data/ml-100k")


@dataclass
class FileServer:
    """Files served at http://127.0.0.1:port/<name>, and a record of every request's headers."""

    port: int
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)
    honour_range: bool = True
    stop_after: int | None = None
    gate: threading.Event | None = None  # when set, bodies are sent only once the event is set

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


def _handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server.requests.append(dict(self.headers.items()))
            body = server.files.get(self.path.lstrip("/"))
            if body is None:
                self.send_error(404)
                return
            match = server.honour_range and re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            start = int(match.group(1)) if match else 0
            if start >= len(body) and match:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206 if match else 200)
            if match:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            if server.gate is not None:
                server.gate.wait(timeout=30)
            self.wfile.write(body[start : server.stop_after])

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    state = FileServer(port=0)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def _toy_zip(rows: int = 2000) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("toy/ratings.csv", "user,item,rating\n" + "".join(f"{i},{i % 7},5\n" for i in range(rows)))
        zf.writestr("toy/README.txt", "a toy dataset\n")
    return buffer.getvalue()


def _entry(url: str, sha256: str | None, name: str = "toy") -> DatasetEntry:
    return DatasetEntry(
        name=name,
        description="a toy dataset",
        format="csv",
        files=(RemoteFile(url, sha256),),
        licence="test only",
        citation="none",
        homepage="http://127.0.0.1/",
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_download_verifies_and_extracts(file_server: FileServer, tmp_path: Path) -> None:
    data = _toy_zip()
    file_server.files["toy.zip"] = data
    entry = _entry(file_server.url("toy.zip"), _sha256(data))

    path = fetch(entry, tmp_path)

    assert path == tmp_path / "toy" / "toy"
    assert (path / "ratings.csv").read_text().startswith("user,item,rating\n")
    assert sha256_file(tmp_path / "toy" / "toy.zip") == _sha256(data)
    assert not list(tmp_path.rglob("*.part"))
    assert len(file_server.requests) == 1
    assert fetch(entry, tmp_path) == path
    assert len(file_server.requests) == 1, "a verified cache must not download again"


def test_checksum_mismatch_names_both_hashes_and_leaves_nothing(file_server: FileServer, tmp_path: Path) -> None:
    data = _toy_zip()
    file_server.files["toy.zip"] = data
    wrong = "0" * 64

    with pytest.raises(DataError) as excinfo:
        fetch(_entry(file_server.url("toy.zip"), wrong), tmp_path)

    message = str(excinfo.value)
    assert wrong in message and _sha256(data) in message and file_server.url("toy.zip") in message
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["toy.zip.lock"], "only the empty lock file stays"


def _wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _start_fetch(entry: DatasetEntry, cache: Path, results: dict, key: str, **options: float) -> threading.Thread:
    """Run `fetch` in a thread; its path or exception lands in results[key]."""

    def run() -> None:
        try:
            results[key] = fetch(entry, cache, **options)
        except Exception as exc:  # handed to the test thread
            results[key] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_concurrent_fetches_download_once_and_share_the_file(file_server: FileServer, tmp_path: Path) -> None:
    data = _toy_zip()
    file_server.files["toy.zip"] = data
    file_server.gate = threading.Event()
    entry = _entry(file_server.url("toy.zip"), _sha256(data))
    results: dict = {}

    first = _start_fetch(entry, tmp_path, results, "first")
    _wait_for(lambda: len(file_server.requests) == 1)  # the first is mid-download
    second = _start_fetch(entry, tmp_path, results, "second")
    time.sleep(0.5)
    assert len(file_server.requests) == 1, "the second fetch must wait, not download the same .part"
    file_server.gate.set()
    first.join(30)
    second.join(30)

    assert results == {"first": tmp_path / "toy" / "toy", "second": tmp_path / "toy" / "toy"}
    assert len(file_server.requests) == 1
    assert sha256_file(tmp_path / "toy" / "toy.zip") == _sha256(data)
    assert not list(tmp_path.rglob("*.part"))


def test_waiting_too_long_for_another_download_says_so(file_server: FileServer, tmp_path: Path) -> None:
    data = _toy_zip()
    file_server.files["toy.zip"] = data
    file_server.gate = threading.Event()
    entry = _entry(file_server.url("toy.zip"), _sha256(data))
    results: dict = {}
    first = _start_fetch(entry, tmp_path, results, "first")
    _wait_for(lambda: len(file_server.requests) == 1)

    with pytest.raises(DataError, match=r"another process is downloading toy\.zip of toy into .*toy\.zip\.lock"):
        fetch(entry, tmp_path, lock_wait=0.3)

    file_server.gate.set()
    first.join(30)
    assert results["first"] == tmp_path / "toy" / "toy"
    assert len(file_server.requests) == 1


def test_zip_extracted_by_another_process_meanwhile_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "toy.zip"
    archive.write_bytes(_toy_zip())
    original = zipfile.ZipFile.extractall

    def extract_while_another_finishes(self: zipfile.ZipFile, path: str | None = None, *args: object) -> None:
        (tmp_path / "toy").mkdir()
        (tmp_path / "toy" / "ratings.csv").write_text("theirs\n")
        original(self, path, *args)

    monkeypatch.setattr(zipfile.ZipFile, "extractall", extract_while_another_finishes)

    assert resolve_source("toy", archive) == tmp_path / "toy"
    assert (tmp_path / "toy" / "ratings.csv").read_text() == "theirs\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_partial_download_is_resumed_with_a_range_request(file_server: FileServer, tmp_path: Path) -> None:
    data = _toy_zip()
    file_server.files["toy.zip"] = data
    half = len(data) // 2
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "toy.zip.part").write_bytes(data[:half])

    path = fetch(_entry(file_server.url("toy.zip"), _sha256(data)), tmp_path)

    assert [request.get("Range") for request in file_server.requests] == [f"bytes={half}-"]
    assert sha256_file(tmp_path / "toy" / "toy.zip") == _sha256(data)
    assert (path / "ratings.csv").is_file()
    assert not (tmp_path / "toy" / "toy.zip.part").exists()


def test_server_ignoring_range_restarts_from_zero(file_server: FileServer, tmp_path: Path) -> None:
    data = _toy_zip()
    file_server.files["toy.zip"] = data
    file_server.honour_range = False
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "toy.zip.part").write_bytes(data[:100])

    fetch(_entry(file_server.url("toy.zip"), _sha256(data)), tmp_path)

    assert sha256_file(tmp_path / "toy" / "toy.zip") == _sha256(data)


def test_interrupted_download_keeps_part_and_resumes(file_server: FileServer, tmp_path: Path) -> None:
    data = _toy_zip()
    file_server.files["toy.zip"] = data
    file_server.stop_after = 1000
    entry = _entry(file_server.url("toy.zip"), _sha256(data))

    with pytest.raises(DataError, match=r"run again to resume|cannot download"):
        fetch(entry, tmp_path)
    assert (tmp_path / "toy" / "toy.zip.part").stat().st_size == 1000

    file_server.stop_after = None
    fetch(entry, tmp_path)
    assert file_server.requests[-1].get("Range") == "bytes=1000-"
    assert sha256_file(tmp_path / "toy" / "toy.zip") == _sha256(data)


def test_complete_part_file_is_accepted_after_416(file_server: FileServer, tmp_path: Path) -> None:
    data = _toy_zip()
    file_server.files["toy.zip"] = data
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "toy.zip.part").write_bytes(data)

    fetch(_entry(file_server.url("toy.zip"), _sha256(data)), tmp_path)

    assert sha256_file(tmp_path / "toy" / "toy.zip") == _sha256(data)


def test_multi_file_dataset_resolves_to_its_folder(file_server: FileServer, tmp_path: Path) -> None:
    file_server.files["reviews.jsonl.gz"] = b"reviews"
    file_server.files["meta.jsonl.gz"] = b"meta"
    entry = DatasetEntry(
        name="shop",
        description="two files",
        format="amazon-2023",
        files=(
            RemoteFile(file_server.url("reviews.jsonl.gz"), None, role="interactions"),
            RemoteFile(file_server.url("meta.jsonl.gz"), _sha256(b"meta"), role="items"),
        ),
        licence="test only",
        citation="none",
        homepage="http://127.0.0.1/",
    )

    folder = fetch(entry, tmp_path)

    assert folder == tmp_path / "shop"
    assert (folder / "reviews.jsonl.gz").read_bytes() == b"reviews"
    assert (folder / "meta.jsonl.gz").read_bytes() == b"meta"
    assert (folder / "reviews.jsonl.gz.sha256").read_text().split()[0] == _sha256(b"reviews")


def test_offline_is_one_sentence_naming_url_and_source(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/toy.zip"

    with pytest.raises(DataError) as excinfo:
        fetch(_entry(url, None), tmp_path, timeout=5)

    message = str(excinfo.value)
    assert url in message and "--source PATH" in message and "$LMREC_DATA_DIR/toy/" in message
    assert "\n" not in message and message.endswith(".")
    assert not list(tmp_path.rglob("*.zip"))


def test_http_error_names_url(file_server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"HTTP 404.*--source PATH"):
        fetch(_entry(file_server.url("missing.zip"), None), tmp_path)


def test_unpublished_hash_is_recorded_on_first_use_and_enforced(file_server: FileServer, tmp_path: Path) -> None:
    data = _toy_zip()
    file_server.files["toy.zip"] = data
    entry = _entry(file_server.url("toy.zip"), None)
    archive = tmp_path / "toy" / "toy.zip"

    fetch(entry, tmp_path)
    assert (tmp_path / "toy" / "toy.zip.sha256").read_text().split()[0] == _sha256(data)

    archive.write_bytes(b"corrupted")
    fetch(entry, tmp_path)
    assert sha256_file(archive) == _sha256(data), "a corrupt cached file is downloaded again"

    archive.write_bytes(b"corrupted")
    file_server.files["toy.zip"] = _toy_zip(rows=10)
    with pytest.raises(DataError, match=r"recorded at the first download"):
        fetch(entry, tmp_path)
    assert not archive.exists()


def test_download_off_and_not_cached(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"downloading is off.*--source PATH"):
        fetch(_entry("http://127.0.0.1:9/toy.zip", None), tmp_path, download=False)


def test_resolve_downloads_into_the_cache(
    file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _toy_zip()
    file_server.files["toy.zip"] = data
    monkeypatch.setenv("LMREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LMREC_DATA_DIR", raising=False)
    catalogue = {"toy": _entry(file_server.url("toy.zip"), _sha256(data))}

    path = resolve_source("toy", catalogue=catalogue)

    assert path == tmp_path / "cache" / "datasets" / "toy" / "toy"
    assert resolve_source("TOY", catalogue=catalogue, download=False) == path


def test_data_dir_folder_comes_before_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "data" / "ml-100k"
    folder.mkdir(parents=True)
    monkeypatch.setenv("LMREC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LMREC_CACHE_DIR", str(tmp_path / "cache"))

    assert resolve_source("ml-100k", download=False) == folder
    assert resolve_source("ML_100K", download=False) == folder
    assert not (tmp_path / "cache").exists()
    with pytest.raises(DataError, match="unknown dataset"):
        resolve_source("../data/ml-100k", download=False)


@pytest.mark.skipif(not SHARED_ML100K.is_dir(), reason="shared RecBole copy of ml-100k not present")
def test_shared_recbole_copy_resolves_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMREC_DATA_DIR", str(SHARED_ML100K.parent))

    assert resolve_source("ml-100k", download=False) == SHARED_ML100K


def test_explicit_file_and_folder_are_returned_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMREC_DATA_DIR", str(tmp_path))
    log = tmp_path / "log.csv"
    log.write_text("user,item\n")
    (tmp_path / "ml-100k").mkdir()

    assert resolve_source("ml-100k", log) == log
    assert resolve_source("anything", tmp_path) == tmp_path


def test_explicit_zip_is_extracted_beside_it_once(tmp_path: Path) -> None:
    archive = tmp_path / "toy.zip"
    archive.write_bytes(_toy_zip())

    path = resolve_source("toy", archive)

    assert path == tmp_path / "toy"
    assert (path / "ratings.csv").is_file() and (path / "README.txt").is_file()
    (path / "ratings.csv").write_text("edited\n")
    assert resolve_source("toy", archive) == path
    assert (path / "ratings.csv").read_text() == "edited\n", "an extracted zip is not extracted again"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_explicit_missing_path_and_bad_zip(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        resolve_source("toy", tmp_path / "nope.csv")
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a valid zip"):
        resolve_source("toy", tmp_path / "broken.zip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.zip"]


def test_unknown_name_lists_known_names_and_mentions_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LMREC_DATA_DIR", raising=False)
    with pytest.raises(DataError) as excinfo:
        resolve_source("ml-3b", download=False)
    message = str(excinfo.value)
    assert "ml-3b" in message and "ml-100k" in message and "amazon-2023-all-beauty" in message
    assert "--source PATH" in message


def test_catalogue_is_well_formed() -> None:
    names = [entry.name for entry in list_datasets()]
    assert names == sorted(CATALOGUE) and len(set(names)) == len(names)
    for name in ("ml-100k", "ml-1m", "ml-20m", "ml-latest-small"):
        entry = get_entry(name)
        (remote,) = entry.files
        assert remote.url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        assert remote.sha256 is not None and re.fullmatch(r"[0-9a-f]{64}", remote.sha256)
        assert "Harper" in entry.licence and "Research use only" in entry.licence
    for entry in CATALOGUE.values():
        assert entry.files and all(remote.url.startswith("https://") for remote in entry.files)
        assert all(r.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", r.sha256) for r in entry.files)
    assert get_entry("amazon-2018-All_Beauty").name == "amazon-2018-all-beauty"
    formats = {"movielens", "amazon-2018", "amazon-2023", "recbole-benchmark"}
    assert {e.format for e in CATALOGUE.values()} == formats
    expected = {
        "movielens": ["archive"],
        "recbole-benchmark": ["examples", "examples", "examples", "items", "sequences"],
    }
    for entry in CATALOGUE.values():
        roles = sorted(remote.role for remote in entry.files)
        assert roles == expected.get(entry.format, ["interactions", "items"])
