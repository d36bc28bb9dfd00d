"""Data-preparation benchmark: `lmrec data prepare` on a synthetic 10M-event log, against the bars.

Generates the log with `lmrec.data.synth` (or reuses one made with the same parameters), runs
`lmrec data prepare LOG --items ITEMS --out DIR --overwrite` --runs times, each in a fresh child
process, and measures each child's wall time and peak RSS (`os.wait4` returns the resource usage of
that one child, unlike RUSAGE_CHILDREN, which is a maximum over every child so far). Prints a table,
checks the medians against the bars (<= 60 s wall, <= 4 GiB peak RSS) and writes
bench/results/prepare.json, with the environment that sets DuckDB's threads and memory (`LMREC_THREADS`,
default every core; `LMREC_DUCKDB_MEMORY`) and the load average before each run, since the machine may be
shared. Not a test: run it by hand.

    python bench/prepare.py                                               # the full benchmark
    python bench/prepare.py --events 1000000 --users 10000 --items 5000   # a quick trial
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

from lmrec.data.synth import write_synthetic_log

ROOT = Path(__file__).resolve().parent
WALL_BAR_S = 60.0
RSS_BAR_BYTES = 4 * 1024**3
GIB = 1024**3

console = Console()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; the defaults are the benchmark's official size."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "work", help="folder for the log and outputs")
    parser.add_argument("--runs", type=int, default=3, help="number of timed prepare runs")
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "prepare.json")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.work = args.work.resolve()
    return args


def ensure_log(work: Path, events: int, users: int, items: int, seed: int) -> tuple[dict, float | None]:
    """The synthetic log's summary, generating the log unless one with the same parameters is complete.

    Returns the summary and the generation time in seconds (None when reused). The summary file is
    written last, so an interrupted generation is never reused.
    """
    log = work / f"log-e{events}-u{users}-i{items}-s{seed}.csv"
    summary_path = log.with_suffix(".summary.json")
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if Path(summary["path"]).is_file() and Path(summary["items_path"]).is_file():
            return summary, None
    start = time.perf_counter()
    summary = write_synthetic_log(log, users=users, items=items, events=events, seed=seed)
    seconds = time.perf_counter() - start
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary, seconds


def lmrec_command() -> list[str]:
    """The `lmrec` console script of this interpreter's environment, else the same entry point via -c."""
    script = shutil.which("lmrec", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-c", "from lmrec.cli import main; main()"]


def run_once(command: list[str], output_log: Path) -> dict:
    """Run `command` in a child process; return its wall time, its own peak RSS and its exit code."""
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    with output_log.open("wb") as output:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    rss_unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {"wall_s": wall, "peak_rss_bytes": usage.ru_maxrss * rss_unit, "exit_code": child.returncode}


def load_average() -> float:
    """The machine's 1-minute load average (other jobs slow a run down on a shared machine)."""
    return round(os.getloadavg()[0], 2)


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a child's output, to show why a run failed."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def verdict(passed: bool, failed: bool) -> str:
    """How a median compares with its bar, in words for the table."""
    if failed:
        return "not judged, a run failed; bar"
    return "within bar" if passed else "OVER bar"


def report(runs: list[dict], medians: dict, passed: dict, failed: bool) -> None:
    """Print the runs and the medians against the bars."""
    table = Table(title="lmrec data prepare")
    for column in ("run", "wall (s)", "peak RSS (GiB)", "exit"):
        table.add_column(column, justify="right")
    for i, run in enumerate(runs, 1):
        table.add_row(str(i), f"{run['wall_s']:.1f}", f"{run['peak_rss_bytes'] / GIB:.2f}", str(run["exit_code"]))
    table.add_section()
    table.add_row(
        "median",
        f"{medians['wall_s']:.1f} ({verdict(passed['wall'], failed)} {WALL_BAR_S:.0f})",
        f"{medians['peak_rss_bytes'] / GIB:.2f} ({verdict(passed['rss'], failed)} {RSS_BAR_BYTES / GIB:.0f})",
        "",
    )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    """Generate or reuse the log, time the prepare runs, report and write the JSON; 1 if a bar fails."""
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    summary, generation_s = ensure_log(args.work, args.events, args.users, args.items, args.seed)
    if generation_s is None:
        console.print(f"reusing {summary['path']}")
    else:
        console.print(f"generated {summary['rows_written']:,} lines in {generation_s:.1f} s: {summary['path']}")

    out = args.work / "prepared"
    command = [
        *lmrec_command(),
        *("data", "prepare", summary["path"], "--items", summary["items_path"]),
        *("--out", str(out), "--overwrite"),
    ]
    runs = []
    for i in range(1, args.runs + 1):
        output_log = args.work / f"prepare-run{i}.log"
        load = load_average()
        run = {**run_once(command, output_log), "load_1m_before": load}
        runs.append(run)
        console.print(
            f"run {i}: {run['wall_s']:.1f} s, {run['peak_rss_bytes'] / GIB:.2f} GiB, exit {run['exit_code']} "
            f"(load before {load})"
        )
        if run["exit_code"] != 0:
            console.print(f"[red]run {i} failed[/]; the end of {output_log}:\n{tail(output_log)}", highlight=False)
            break

    medians = {key: statistics.median(run[key] for run in runs) for key in ("wall_s", "peak_rss_bytes")}
    succeeded = all(run["exit_code"] == 0 for run in runs) and len(runs) == args.runs
    passed = {
        "wall": succeeded and medians["wall_s"] <= WALL_BAR_S,
        "rss": succeeded and medians["peak_rss_bytes"] <= RSS_BAR_BYTES,
    }
    report(runs, medians, passed, failed=not succeeded)
    manifest_path = out / "manifest.json"
    result = {
        "benchmark": "prepare",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "params": {"events": args.events, "users": args.users, "items": args.items, "seed": args.seed},
        "log": summary,
        "generation_s": generation_s,
        "runs": runs,
        "median": medians,
        "bars": {"wall_s": WALL_BAR_S, "peak_rss_bytes": RSS_BAR_BYTES},
        "passed": passed,
        "manifest": json.loads(manifest_path.read_text()) if succeeded and manifest_path.is_file() else None,
        "env": {name: os.environ.get(name) for name in ("LMREC_THREADS", "LMREC_DUCKDB_MEMORY", "OMP_WAIT_POLICY")},
        "host": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "memory_bytes": psutil.virtual_memory().total,
        },
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.results}")
    return 0 if all(passed.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
