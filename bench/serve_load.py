"""Load benchmark of `lmrec serve`: recommendation latency at a sustained open-loop rate, and the top rate.

Starts the service in a subprocess on 127.0.0.1 (a free port, a fresh SQLite store) with a SASRec run on
MovieLens-100K (trained briefly when missing) and drives it from this process with an asyncio HTTP/1.1 client.
Arrivals follow a fixed schedule (rate r: request i is due at i / r seconds, whether or not earlier ones
have returned), and each latency is measured from the request's scheduled time, so a stalled server or
client is charged for the queueing it causes (no coordinated omission). Users are real user ids, drawn
uniformly with a fixed seed. After a short unmeasured warm-up, the target rate runs for `--duration`
seconds; then the rate steps up for `--step-seconds` each until a step misses the p99 bar (or has errors)
twice in a row.
Prints the tables and writes JSON to --results (default bench/work/serve_load.json, ignored by git, so that
a trial run never replaces the committed figures; those were written with the command below).

    python bench/serve_load.py --rate 200 --duration 60 --results bench/results/serve_load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from lmrec import api
from lmrec.data.dataset import PreparedDataset
from lmrec.registry.run import RunDir

ROOT = Path(__file__).resolve().parent
P99_BAR_MS = 25.0
P50_BAR_MS = 5.0
STEPS = (300, 400, 500, 600, 800, 1000, 1200, 1500, 2000)


def ensure_run(work: Path) -> Path:
    """The MovieLens-100K SASRec run under `work`, prepared and trained (3 epochs) when missing."""
    data, run = work / "ml-100k", work / "serve-sasrec"
    if not (data / "manifest.json").is_file():
        api.prepare("ml-100k", data, overwrite=True)
    if not (run / "metrics.json").is_file():
        api.train(data, run, model="sasrec", overrides=["train.epochs=3"], overwrite=True)
    return run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(run: Path, store: Path, key: str, log: Path) -> tuple[subprocess.Popen, str]:
    """`lmrec serve` in a subprocess; returns it and its base URL once /readyz answers."""
    port = free_port()
    env = {**os.environ, "LMREC_API_KEYS": key, "OMP_WAIT_POLICY": "PASSIVE", "LMREC_THREADS": "1"}
    command = [sys.executable, "-c", "from lmrec.cli import main; main()", "serve", str(run), "--port", str(port),
               "--store", f"sqlite:///{store}", "--poll", "0", "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}; see {log}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"the server did not become ready; see {log}")


class Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough HTTP for GETs to this service.

    httpx's pool costs about a millisecond of client CPU per request on this machine, which the client
    shares with the server; a plain asyncio stream costs a tenth of that and so measures the server.
    """

    def __init__(self, host: str, port: int, key: str) -> None:
        self.host, self.port = host, port
        self.head = f"Host: {host}:{port}\r\nAuthorization: Bearer {key}\r\n\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        """Send one GET and read the whole reply; returns its status code."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {path} HTTP/1.1\r\n{self.head}".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:"))
        await self.reader.readexactly(length)
        return int(lines[0].split()[1])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def open_loop(url: str, key: str, paths: list[str], rate: float, seconds: float, connections: int) -> dict:
    """GET `paths` (cycled) at `rate` per second for `seconds` over a fixed set of keep-alive connections.

    A request waits in a queue until a connection is free; its latency runs from its scheduled time.
    """
    host, port = url.removeprefix("http://").split(":")
    count = int(rate * seconds)
    latencies = np.full(count, np.nan)
    errors: Counter[str] = Counter()
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()

    async def worker() -> None:
        connection = Connection(host, int(port), key)
        while (job := await queue.get()) is not None:
            i, due = job
            try:
                status = await connection.get(paths[i % len(paths)])
                if status != 200:
                    errors[f"HTTP {status}"] += 1
            except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration) as exc:
                errors[type(exc).__name__] += 1
                connection.close()
            latencies[i] = time.perf_counter() - due
        connection.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    start = time.perf_counter() + 0.05
    for i in range(count):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((i, due))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - start
    ms = latencies * 1000
    return {
        "rate": rate,
        "seconds": seconds,
        "requests": count,
        "achieved_rate": count / elapsed,
        "errors": dict(errors),
        **{f"p{q:g}_ms": float(np.percentile(ms, q)) for q in (50, 90, 99, 99.9)},
        "max_ms": float(ms.max()),
        "mean_ms": float(ms.mean()),
    }


def latency_table(title: str, rows: list[dict]) -> Table:
    table = Table(title=title)
    for column in ("rate/s", "achieved/s", "requests", "errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            f"{r['rate']:g}", f"{r['achieved_rate']:.0f}", str(r["requests"]), str(sum(r["errors"].values())),
            *(f"{r[k]:.2f}" for k in ("p50_ms", "p90_ms", "p99_ms", "p99.9_ms", "max_ms")),
        )  # fmt: skip
    return table


def passes(result: dict) -> bool:
    return not result["errors"] and result["p99_ms"] <= P99_BAR_MS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "work")
    parser.add_argument("--run", type=Path, default=None, help="a trained run (default: train one under --work)")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections of the client")
    parser.add_argument("--results", type=Path, default=ROOT / "work" / "serve_load.json", help="JSON to write")
    args = parser.parse_args()
    console = Console()
    run = args.run or ensure_run(args.work)
    dataset = PreparedDataset.load(RunDir(run).info()["dataset"])
    rng = np.random.default_rng(args.seed)
    users = rng.choice(np.asarray(dataset.user_ids, dtype=str), size=200_000)
    paths = [f"/v1/users/{u}/recommendations?k={args.k}" for u in users]
    key = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="lmrec-load-") as tmp:
        log = Path(tmp) / "server.log"
        server, url = start_server(run, Path(tmp) / "events.sqlite", key, log)
        try:
            asyncio.run(open_loop(url, key, paths[::-1], args.rate, args.warmup, args.connections))
            sustained = asyncio.run(open_loop(url, key, paths, args.rate, args.duration, args.connections))
            steps = []
            for rate in (r for r in STEPS if r > args.rate):
                for _attempt in range(2):  # a failed step is measured once more: the machine may be shared
                    steps.append(asyncio.run(open_loop(url, key, paths, rate, args.step_seconds, args.connections)))
                    if passes(steps[-1]):
                        break
                if not passes(steps[-1]):
                    break
        finally:
            server.terminate()
            server.wait(timeout=30)
    best = max((r["rate"] for r in [sustained, *steps] if passes(r)), default=None)
    console.print(latency_table(f"GET /v1/users/{{id}}/recommendations?k={args.k}, {args.duration:g} s sustained",
                                [sustained]))  # fmt: skip
    console.print(latency_table(f"rate steps of {args.step_seconds:g} s", steps))
    verdict = sustained["p50_ms"] <= P50_BAR_MS and passes(sustained)
    console.print(
        f"sustained {args.rate:g}/s: p50 {sustained['p50_ms']:.2f} ms, p99 {sustained['p99_ms']:.2f} ms, "
        f"errors {sum(sustained['errors'].values())} → {'meets' if verdict else 'misses'} the bar "
        f"(p50 ≤ {P50_BAR_MS:g} ms, p99 ≤ {P99_BAR_MS:g} ms); highest rate with p99 ≤ {P99_BAR_MS:g} ms: {best}/s"
    )
    out = args.results
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "run": str(run), "k": args.k, "sustained": sustained, "steps": steps, "max_rate_meeting_p99": best,
        "meets_bar": verdict,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg": os.getloadavg()},
        "client": f"asyncio keep-alive client, {args.connections} connections, open loop, same machine",
        "server": "lmrec serve, 1 worker, SQLite store",
    }, indent=2) + "\n")  # fmt: skip
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
