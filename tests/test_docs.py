"""Every command block of README.md and docs/*.md runs as written, in bash, on a small slice of MovieLens-100K;
the README's Python example runs as written on the whole of it.

The blocks of each file run in order in one working folder (README first, so that the docs find its runs).
Only budgets are changed, by shell functions defined before the blocks: `lmrec train`, `pretrain` and `tune` get
`--set train.epochs=2` (`tune` also `--trials 2`), `lmrec classify train` small example caps, `lmrec serve` a
free port and runs in the background until its /readyz answers, and `curl` is pointed at that port. A few
lines cannot run here (they are the contract's own commands, or need a server this machine has not); they are
listed in SKIP with the reason, and the test fails if one of them is no longer in the docs, so the list cannot rot.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # minutes: it trains every model the docs train (`-m "not slow"` leaves it out)

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SKIP = {
    "make demo": "the contract's main job; CI and people run it, not the test suite",
    "make test": "the contract's test command; this test is part of it",
    "--store postgresql://lmrec:secret@db/lmrec --workers 4": "needs a PostgreSQL server at host db",
    "--every 6h": "retrains every six hours until stopped",
}
USERS = ("1", "42")  # the users the docs name, plus the SMALL users with the fewest ratings
SMALL = 12

PRELUDE = r"""
set -euo pipefail
lmrec() {
  case "$1" in
    train|pretrain) command lmrec "$@" --set train.epochs=2 ;;
    tune) command lmrec "$@" --set train.epochs=2 --trials 2 ;;
    classify)
      if [ "$2" = train ]; then
        command lmrec "$@" --max-train-examples 48 --max-valid-examples 16 --max-test-examples 48
      else
        command lmrec "$@"
      fi ;;
    serve)
      stop_servers  # one at a time, on the one port
      command lmrec "$@" --port "$DOC_PORT" --poll 0.2 >>"$DOC_LOG" 2>&1 &
      local pid=$!
      echo "$pid" >>"$DOC_PIDS"
      for _ in $(seq 300); do
        if command curl -sf -o /dev/null "localhost:$DOC_PORT/readyz"; then return 0; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
      done
      echo "lmrec serve did not start; its log:" >&2; cat "$DOC_LOG" >&2; return 1 ;;
    *) command lmrec "$@" ;;
  esac
}
curl() { command curl --fail-with-body -sS "${@//localhost:8000/localhost:$DOC_PORT}"; echo; }
stop_servers() {
  [ -f "$DOC_PIDS" ] || return 0
  local pid
  for pid in $(cat "$DOC_PIDS"); do
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  done
  rm -f "$DOC_PIDS"
}
trap stop_servers EXIT
"""


def command_blocks(path: Path) -> list[str]:
    """The ```bash blocks of a Markdown file, continuation lines joined, with the SKIP commands taken out."""
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S)
    commands = [re.sub(r"\\\n\s*", " ", block).splitlines() for block in blocks]
    return ["\n".join(line for line in lines if not _skipped(line)) for lines in commands]


def _skipped(line: str) -> bool:
    return any(marker in line for marker in SKIP)


def test_every_skipped_line_is_still_in_the_docs() -> None:
    text = "\n".join(path.read_text() for path in DOCS)
    assert [marker for marker in SKIP if marker not in text] == []


@pytest.fixture(scope="module")
def small_movielens(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An LMREC_DATA_DIR whose ml-100k holds users 1 and 42 and the users with the fewest ratings, in the
    real files' RecBole atomic format (a local copy is read as it is, so it needs no checksum)."""
    real, root = data_root / "ml-100k", tmp_path_factory.mktemp("docs-data")
    rows = list(csv.reader((real / "ml-100k.inter").open(), delimiter="\t"))
    counts: dict[str, int] = {}
    for row in rows[1:]:
        counts[row[0]] = counts.get(row[0], 0) + 1
    keep = set(USERS) | set(sorted(counts, key=lambda user: (counts[user], int(user)))[:SMALL])
    events = [row for row in rows[1:] if row[0] in keep]
    items = {row[1] for row in events}
    assert "50" in items, "the docs predict item 50 for user 42"
    folder = root / "ml-100k"
    folder.mkdir()
    _write(folder / "ml-100k.inter", [rows[0], *events])
    for name, wanted in (("ml-100k.item", items), ("ml-100k.user", keep)):
        table = list(csv.reader((real / name).open(), delimiter="\t"))
        _write(folder / name, [table[0], *(row for row in table[1:] if row[0] in wanted)])
    return root


def _write(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="") as handle:
        csv.writer(handle, delimiter="\t", lineterminator="\n").writerows(rows)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_command_blocks_run_as_written(small_movielens: Path, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    script = PRELUDE
    for path in DOCS:
        for number, block in enumerate(command_blocks(path), 1):
            script += f"\necho '### {path.name} block {number}' >&2\n{block}\n"
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "LMREC_DATA_DIR": str(small_movielens),
        "LMREC_CACHE_DIR": str(tmp_path / "cache"),
        "LMREC_REGISTRY": "",
        "DOC_PORT": str(_free_port()),
        "DOC_PIDS": str(tmp_path / "servers.pid"),
        "DOC_LOG": str(tmp_path / "servers.log"),
    }
    env.pop("LMREC_REGISTRY")
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, f"{done.stderr[-6000:]}\n--- stdout ---\n{done.stdout[-3000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-6000:]
    assert (work / "runs" / "tuned" / "metrics.json").is_file() and (work / "recs.parquet").is_file()


def test_python_example_runs(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("LMREC_DATA_DIR", str(data_root))
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    assert blocks, "README has no Python example"
    exec(compile(blocks[0], "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert 0 < float(lines[0]) < 1  # test NDCG@10
    assert len(lines) == 7  # 5 recommendations and HR@10
    assert (tmp_path / "runs" / "api-sasrec" / "metrics.json").is_file()
