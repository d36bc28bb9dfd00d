"""Load benchmark of `lmrec serve`: recommendation latency at a sustained open-loop rate, and the top rate.

Starts the service in a subprocess on 127.0.0.1 (a free port, a fresh SQLite store) with a SASRec run on
MovieLens-100K (trained briefly when missing) and drives it from this process with an asyncio HTTP/1.1 client.
Arrivals follow a fixed schedule (rate r: request i is due at i / r seconds, whether or not earlier ones
have returned), and each latency is measured from the request's scheduled time, so a stalled server or
client is charged for the queueing it causes (no coordinated omission). Users are real user ids, drawn
uniformly with a fixed seed; `--event-share` of the requests (default 5%) are preceded, on the same connection,
by a POST of a new view event of that user (a random item, timestamped now), so their reply must be computed
again and their latency includes the POST's. `--explain` asks every request for explanations. After a short
unmeasured warm-up, the target rate runs for `--duration` seconds; then the rate steps up for `--step-seconds`
each until a step misses p99 <= 10 ms (or has errors) twice in a row. The service's own counter says how many
replies it computed and how many it answered from a user's memo (repeated requests of an unchanged user).
Prints the tables and writes JSON to --results (default bench/work/serve_load.json, ignored by git, so that
a trial run never replaces the committed figures; those were written with the command below).

    python bench/serve_load.py --rate 1000 --duration 60 --results bench/results/serve_load.json
    python bench/serve_load.py --rate 200 --explain --results bench/results/serve_load-explain.json

`--backend onnx` (with `--int8`, the int8 export) exports the run into --work and serves it through ONNX Runtime
(`lmrec serve RUN --backend onnx --export DIR`).
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
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from lmrec import api
from lmrec.data.dataset import PreparedDataset
from lmrec.registry.run import RunDir

ROOT = Path(__file__).resolve().parent
P99_BAR_MS = 25.0  # the service's latency bar (docs/serving.md): p50 <= 5 ms, p99 <= 25 ms, no errors
P50_BAR_MS = 5.0
THROUGHPUT_P99_MS = 10.0  # the throughput bar: 1,000 recommendations/s with p99 <= 10 ms (issue 15)
STEPS = (300, 400, 500, 600, 800, 1000, 1100, 1200, 1500, 2000, 2500, 3000)


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


def start_server(
    run: Path, store: Path, key: str, log: Path, extra: tuple[str, ...] = ()
) -> tuple[subprocess.Popen, str]:
    """`lmrec serve` in a subprocess (with `extra` options); returns it and its base URL once /readyz answers."""
    port = free_port()
    env = {**os.environ, "LMREC_API_KEYS": key, "OMP_WAIT_POLICY": "PASSIVE", "LMREC_THREADS": "1"}
    command = [sys.executable, "-c", "from lmrec.cli import main; main()", "serve", str(run), "--port", str(port),
               "--store", f"sqlite:///{store}", "--poll", "0", "--log-level", "warning", *extra]  # fmt: skip
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
        self.head = f"Host: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        """Send one GET and read the whole reply; returns its status code."""
        return await self.send(f"GET {path} HTTP/1.1\r\n{self.head}\r\n".encode())

    async def post(self, path: str, body: bytes) -> int:
        """Send one POST of a JSON body and read the whole reply; returns its status code."""
        head = (
            f"POST {path} HTTP/1.1\r\n{self.head}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return await self.send(head.encode() + body)

    async def send(self, request: bytes) -> int:
        """Write one request and read the whole reply; returns its status code."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:"))
        await self.reader.readexactly(length)
        return int(lines[0].split()[1])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@dataclass(frozen=True)
class Job:
    """One scheduled request: a GET of `path`, after a POST of `event` (a JSON events batch) when given."""

    path: str
    event: bytes | None = None


def jobs(users: np.ndarray, items: np.ndarray, k: int, explain: bool, event_share: float, seed: int) -> list[Job]:
    """Recommendation requests of `users`, `event_share` of them preceded by a new view of a random item."""
    rng = np.random.default_rng(seed + 1)
    query = f"k={k}" + ("&explain=true" if explain else "")
    out = []
    for user, item, posts in zip(
        users, rng.choice(items, len(users)), rng.random(len(users)) < event_share, strict=True
    ):
        event = None
        if posts:
            event = json.dumps({"events": [{"user_id": str(user), "item_id": str(item), "type": "view",
                                            "timestamp": "now"}]}).encode()  # fmt: skip
        out.append(Job(f"/v1/users/{user}/recommendations?{query}", event))
    return out


async def open_loop(url: str, key: str, work: list[Job], rate: float, seconds: float, connections: int) -> dict:
    """Run `work` (cycled) at `rate` jobs per second for `seconds` over a fixed set of keep-alive connections.

    A job waits in a queue until a connection is free. Its GET's latency runs from its scheduled time (or,
    after a POST, from the POST's reply: the event had to be committed first) to the end of the GET's reply;
    the POSTs' latencies, from the scheduled time, are kept apart.
    """
    host, port = url.removeprefix("http://").split(":")
    count = int(rate * seconds)
    latencies = np.full(count, np.nan)
    posts = np.full(count, np.nan)
    errors: Counter[str] = Counter()
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()

    async def worker() -> None:
        connection = Connection(host, int(port), key)
        while (job := await queue.get()) is not None:
            i, due = job
            try:
                task = work[i % len(work)]
                if task.event is not None:
                    status = await connection.post(
                        "/v1/events", task.event.replace(b'"now"', str(time.time()).encode())
                    )
                    if status != 200:
                        errors[f"POST HTTP {status}"] += 1
                    posts[i] = time.perf_counter() - due
                    due = max(due, time.perf_counter())
                status = await connection.get(task.path)
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
        "posts": int(np.isfinite(posts).sum()),
        **{f"post_p{q:g}_ms": float(np.nanpercentile(posts * 1000, q)) for q in (50, 99) if np.isfinite(posts).any()},
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


def passes(result: dict, p99_ms: float = THROUGHPUT_P99_MS) -> bool:
    return not result["errors"] and result["p99_ms"] <= p99_ms


def reply_counts(url: str, key: str) -> dict[str, float]:
    """The service's counts of computed and remembered replies so far (its Prometheus counter)."""
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=10).text
    counts = {}
    for line in text.splitlines():
        if line.startswith("lmrec_recommendation_replies_total{"):
            counts[line.split('source="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return counts


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
    parser.add_argument("--explain", action="store_true", help="ask every request for explanations")
    parser.add_argument("--event-share", type=float, default=0.05, help="share of requests preceded by a new event")
    parser.add_argument("--results", type=Path, default=ROOT / "work" / "serve_load.json", help="JSON to write")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch", help="the served process's backend")
    parser.add_argument("--int8", action="store_true", help="with --backend onnx: serve the int8 export")
    args = parser.parse_args()
    console = Console()
    run = args.run or ensure_run(args.work)
    extra: tuple[str, ...] = ()
    if args.backend == "onnx":  # exported afresh into --work (lmrec export), served with --backend onnx --export
        export = args.work / ("serve-onnx-int8" if args.int8 else "serve-onnx")
        api.export(run, export, int8=args.int8, overwrite=True)
        extra = ("--backend", "onnx", "--export", str(export))
    dataset = PreparedDataset.load(RunDir(run).info()["dataset"])
    rng = np.random.default_rng(args.seed)
    users = rng.choice(np.asarray(dataset.user_ids, dtype=str), size=200_000)
    work = jobs(users, np.asarray(dataset.item_ids[1:], dtype=str), args.k, args.explain, args.event_share, args.seed)
    key = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="lmrec-load-") as tmp:
        log = Path(tmp) / "server.log"
        server, url = start_server(run, Path(tmp) / "events.sqlite", key, log, extra)
        try:
            asyncio.run(open_loop(url, key, work[::-1], args.rate, args.warmup, args.connections))
            warm = reply_counts(url, key)
            sustained = asyncio.run(open_loop(url, key, work, args.rate, args.duration, args.connections))
            counts = reply_counts(url, key)
            sustained["replies"] = {name: counts.get(name, 0) - warm.get(name, 0) for name in ("computed", "cached")}
            steps = []
            for rate in (r for r in STEPS if r > args.rate):
                for _attempt in range(2):  # a failed step is measured once more: the machine may be shared
                    steps.append(asyncio.run(open_loop(url, key, work, rate, args.step_seconds, args.connections)))
                    if passes(steps[-1]):
                        break
                if not passes(steps[-1]):
                    break
        finally:
            server.terminate()
            server.wait(timeout=30)
    best = max((r["rate"] for r in [sustained, *steps] if passes(r)), default=None)
    what = f"GET /v1/users/{{id}}/recommendations?k={args.k}" + ("&explain=true" if args.explain else "")
    console.print(latency_table(f"{what}, {args.event_share:.0%} after a new event, {args.duration:g} s sustained",
                                [sustained]))  # fmt: skip
    console.print(latency_table(f"rate steps of {args.step_seconds:g} s", steps))
    service_bar = sustained["p50_ms"] <= P50_BAR_MS and passes(sustained, P99_BAR_MS)
    throughput_bar = args.rate >= 1000 and passes(sustained)
    replies = sustained["replies"]
    console.print(
        f"sustained {args.rate:g}/s: p50 {sustained['p50_ms']:.2f} ms, p99 {sustained['p99_ms']:.2f} ms, "
        f"errors {sum(sustained['errors'].values())}; {sustained['posts']} events posted before their GET, "
        f"POST p50 {sustained.get('post_p50_ms', float('nan')):.2f} ms, "
        f"p99 {sustained.get('post_p99_ms', float('nan')):.2f} ms; replies computed {replies['computed']:.0f}, "
        f"from memo {replies['cached']:.0f}\n"
        f"service bar (p50 ≤ {P50_BAR_MS:g} ms, p99 ≤ {P99_BAR_MS:g} ms): {'meets' if service_bar else 'misses'}; "
        f"throughput bar (≥ 1000/s, p99 ≤ {THROUGHPUT_P99_MS:g} ms): {'meets' if throughput_bar else 'misses'}; "
        f"highest rate with p99 ≤ {THROUGHPUT_P99_MS:g} ms: {best}/s"
    )
    out = args.results
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "run": str(run), "k": args.k, "explain": args.explain, "event_share": args.event_share,
        "sustained": sustained, "steps": steps, "max_rate_meeting_p99_10ms": best,
        "meets_service_bar": service_bar, "meets_throughput_bar": throughput_bar,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg": os.getloadavg()},
        "client": f"asyncio keep-alive client, {args.connections} connections, open loop, same machine",
        "server": "lmrec serve, 1 worker, SQLite store", "backend": args.backend + (" int8" if args.int8 else ""),
    }, indent=2) + "\n")  # fmt: skip
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
