"""Online replay of MovieLens-100K through `lmrec serve`: periodic retraining against the stale first model.

Protocol (issue 13):
1. The 100,000 ML-100K events are sorted by timestamp (ties in file order). The first 50% are written to a
   CSV, prepared (`lmrec data prepare --split temporal`), a SASRec is trained on them with the shipped config
   (`lmrec train --model sasrec`, `train.max_seconds=--first-seconds`) and registered and promoted
   (`lmrec registry add --promote`) as version 1.
2. Two services run as separate `lmrec serve` processes, each with its own SQLite store and an API key:
   (a) on the registry (it follows promotions, `--poll 1`), (b) on the first run's folder (stale).
3. The remaining events are replayed in time order, one at a time (so the rate is bounded by the round
   trips; at most two requests are in flight, one per service): for each event both services are asked
   for the user's top 10 (`GET /v1/users/{id}/recommendations?k=10`, seen items excluded as by default),
   then the event is `POST /v1/events`-ed to both, so both hold the same live histories. A hit is the
   event's item in the top 10; NDCG@10 = 1/log2(rank+2) with the 0-based rank, 0 for a miss.
4. The replayed half is cut into windows of 10% of the log (10,000 events). After each window but the last
   the replay pauses and `lmrec retrain REGISTRY --store <store of (a)> --json` runs once (its wall time
   and JSON are recorded; training budget `--retrain-seconds`, patience `--retrain-patience`, otherwise the
   command's defaults: 20% of the new events for the gate, 10% for early stopping, margin 0). While it runs,
   and until (a)'s `/readyz` reports the registry's promoted version, a light probe load (about 20 GETs per
   second per service) keeps both services busy, and every failed request is counted: no request may fail
   during a promotion.
5. Per window and over the replayed windows: online HR@10 and NDCG@10 of (a) and (b), and the paired
   difference (a) − (b) per event with a 95% bootstrap interval resampling users
   (`lmrec.evaluation.stats.paired_test`). The bar: retraining beats the stale model over the replayed
   windows with an interval excluding 0, and no request fails.
6. Warm vs scratch (skip with --skip-warm): on the last retrain's snapshot, SASRec is trained (i) from
   scratch with version 1's config and (ii) warm-started from the version that retrain started from, with
   the same config and budget (`--warm-seconds`, the shipped patience). From each run's per-epoch history:
   scratch's best validation NDCG@10 and the training seconds it took to reach it, and the seconds the warm
   run took to first reach that value. The bar: warm ≤ 1/3 of scratch's time.

Prints rich tables and writes bench/results/replay.json (a --limit smoke run writes WORK/replay-smoke.json
instead). A full run took 27 minutes on the shared 2-core machine (first model 2.6 min, replay of 50,000
events at 70-100 events/s 11 min, 4 retrains 3 min, warm vs scratch 10 min); the prepared first half and the
first model are reused when the work folder has them with the same settings.

    export LMREC_DATA_DIR=/work/shared/data OMP_WAIT_POLICY=PASSIVE LMREC_THREADS=1
    python bench/replay.py                                        # the full benchmark
    python bench/replay.py --limit 2000 --window-events 500 --first-seconds 30 --retrain-seconds 15 \\
        --warm-seconds 30 --work /tmp/lmrec-replay-smoke           # a smoke run of a few minutes
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import platform
import random
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from lmrec.data.dataset import PreparedDataset
from lmrec.evaluation.stats import paired_test
from lmrec.registry.versions import ModelRegistry

ROOT = Path(__file__).resolve().parent
K = 10
LOG_SHARE_FIRST = 0.5
PROBE_INTERVAL = 0.05  # seconds between probe GETs per service during a retrain and promotion
PICKUP_TIMEOUT = 180.0  # seconds to wait for service (a) to serve a promoted version
console = Console(width=None if sys.stdout.isatty() else 200)


# -- data and the first model ----------------------------------------------------------------------


def data_dir() -> Path:
    return Path(os.environ.get("LMREC_DATA_DIR", ROOT.parent.parent / "shared" / "data"))


def load_events() -> list[tuple[str, str, float, float]]:
    """ML-100K events (user, item, rating, timestamp) sorted by timestamp, ties in file order."""
    path = data_dir() / "ml-100k" / "ml-100k.inter"
    if not path.is_file():
        raise SystemExit(f"{path} is missing; set LMREC_DATA_DIR to the folder holding ml-100k/.")
    with path.open(encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))[1:]
    times = np.array([float(r[3]) for r in rows])
    order = np.argsort(times, kind="stable")
    return [(rows[i][0], rows[i][1], float(rows[i][2]), float(rows[i][3])) for i in order]


def lmrec_cmd(*args: str) -> list[str]:
    """The `lmrec` command line of this interpreter's environment."""
    return [sys.executable, "-c", "from lmrec.cli import main; main()", *args]


def run_cmd(args: list[str], log: Path, what: str, timeout: float | None = None) -> tuple[float, str]:
    """Run a command with stderr to `log`; returns (wall seconds, stdout). Stops the benchmark on failure."""
    started = time.perf_counter()
    with log.open("ab") as err:
        err.write(f"\n$ {' '.join(args)}\n".encode())
        err.flush()
        try:
            done = subprocess.run(args, stdout=subprocess.PIPE, stderr=err, timeout=timeout, env=child_env())
        except subprocess.TimeoutExpired:
            raise SystemExit(f"{what} took longer than {timeout:.0f} s; see {log}") from None
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise SystemExit(f"{what} failed with exit status {done.returncode}; see {log}:\n{tail}")
    return time.perf_counter() - started, done.stdout.decode(errors="replace")


def child_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "LMREC_THREADS": os.environ.get("LMREC_THREADS", "1")}
    env.setdefault("LMREC_DATA_DIR", str(data_dir()))
    return {**env, **extra}


def first_model(work: Path, first: list, seconds: float, logs: Path) -> dict:
    """Prepare the first half and train SASRec on it (both reused when present with the same settings)."""
    stamp = {"events": len(first), "first_seconds": seconds, "last": list(first[-1])}
    stamp_file = work / "first-settings.json"
    data, run = work / "first", work / "first-run"
    reuse = stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp
    if reuse and (data / "manifest.json").is_file() and (run / "metrics.json").is_file():
        console.print(f"reusing the prepared first half {data} and the first run {run}")
        return {"reused": True, **json.loads((work / "first-timing.json").read_text())}
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(run, ignore_errors=True)
    source = work / "first-half.csv"
    with source.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "item_id", "rating", "timestamp"])
        writer.writerows((u, i, f"{r:g}", f"{t:.0f}") for u, i, r, t in first)
    console.print(f"preparing the first {len(first):,} events …")
    prepare_s, _ = run_cmd(
        lmrec_cmd(
            "data",
            "prepare",
            str(source),
            "--out",
            str(data),
            "--split",
            "temporal",
            "--user-col",
            "user_id",
            "--item-col",
            "item_id",
            "--time-col",
            "timestamp",
            "--value-col",
            "rating",
            "--name",
            "ml-100k-first-half",
            "--overwrite",
        ),
        logs / "first.log",
        "lmrec data prepare",
    )
    console.print(f"training SASRec on them (budget {seconds:g} s) …")
    train_s, _ = run_cmd(
        lmrec_cmd(
            "train", str(data), "--model", "sasrec", "--out", str(run), "--set", f"train.max_seconds={seconds:g}"
        ),
        logs / "first.log",
        "lmrec train (first model)",
    )
    timing = {"prepare_seconds": prepare_s, "train_wall_seconds": train_s}
    (work / "first-timing.json").write_text(json.dumps(timing))
    stamp_file.write_text(json.dumps(stamp))
    return {"reused": False, **timing}


# -- services --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One `lmrec serve` process on a free port."""

    def __init__(self, name: str, source: Path, store: Path, key: str, log: Path, poll: float) -> None:
        self.name, self.store, self.log = name, store, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = lmrec_cmd(
            "serve",
            str(source),
            "--port",
            str(self.port),
            "--store",
            f"sqlite:///{store}",
            "--poll",
            f"{poll:g}",
            "--log-level",
            "warning",
        )
        self.process = subprocess.Popen(
            command, env=child_env(LMREC_API_KEYS=key), stdout=log.open("wb"), stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 180.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"service {self.name} exited with {self.process.returncode}; see {self.log}")
            try:
                reply = httpx.get(f"{self.url}/readyz", timeout=2)
                if reply.status_code == 200:
                    return reply.json()
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise SystemExit(f"service {self.name} did not become ready in {timeout:.0f} s; see {self.log}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class Arm:
    """The client side of one service: an HTTP client and its error counts."""

    def __init__(self, name: str, server: Server, key: str) -> None:
        self.name, self.server = name, server
        self.client = httpx.AsyncClient(
            base_url=server.url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(60.0),
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
        )
        self.errors: Counter[str] = Counter()  # every failed request of the replay, by kind
        self.probe_errors: Counter[str] = Counter()  # failed requests of the probe load (retrains, promotions)
        self.requests = 0
        self.probe_requests = 0

    async def top(self, user: str, errors: Counter[str]) -> tuple[list[str], str, int] | None:
        """The user's top-K item ids, the served version and the number of events in the history it read
        (known and unknown items), or None (counted) when the request failed."""
        try:
            reply = await self.client.get(f"/v1/users/{user}/recommendations", params={"k": K})
        except httpx.HTTPError as exc:
            errors[f"GET {type(exc).__name__}"] += 1
            return None
        if reply.status_code != 200:
            errors[f"GET HTTP {reply.status_code}"] += 1
            return None
        body = reply.json()
        return (
            [item["item_id"] for item in body["items"]],
            body["model_version"],
            (body["history_length"] + body["unknown_items"]),
        )

    async def post(self, index: int, event: tuple[str, str, float, float]) -> bool:
        """POST one event (retried with its idempotency key, so it is stored once); False when it never went in."""
        user, item, rating, timestamp = event
        body = {
            "events": [{"user_id": user, "item_id": item, "type": "rating", "timestamp": timestamp, "value": rating}]
        }
        for _attempt in range(3):
            self.requests += 1
            try:
                reply = await self.client.post("/v1/events", json=body, headers={"Idempotency-Key": f"replay-{index}"})
            except httpx.HTTPError as exc:
                self.errors[f"POST {type(exc).__name__}"] += 1
                await asyncio.sleep(0.5)
                continue
            if reply.status_code == 200 and reply.json().get("accepted") == 1:
                return True
            self.errors[f"POST HTTP {reply.status_code}"] += 1
            await asyncio.sleep(0.5)
        return False

    async def ready(self) -> dict | None:
        try:
            reply = await self.client.get("/readyz")
            return reply.json() if reply.status_code == 200 else None
        except httpx.HTTPError:
            return None


# -- replay ----------------------------------------------------------------------------------------


def ndcg(rank: int | None) -> float:
    return 0.0 if rank is None else 1.0 / math.log2(rank + 2)


async def replay_window(arms: tuple[Arm, Arm], events: list, start: int, records: list[dict], rate: float) -> None:
    """Ask both services for the top K before each event, then post the event to both (time order)."""
    a, b = arms
    started = time.perf_counter()
    for offset, event in enumerate(events):
        if rate > 0:
            delay = started + offset / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        index = start + offset
        user, item = event[0], event[1]
        a.requests += 1
        b.requests += 1
        tops = await asyncio.gather(a.top(user, a.errors), b.top(user, b.errors))
        record = {"index": index, "user": user, "item": item}
        for name, top in zip(("a", "b"), tops, strict=True):
            if top is None:
                record[f"rank_{name}"], record[f"ok_{name}"], record[f"version_{name}"] = None, False, None
                record[f"events_{name}"] = None
            else:
                ids, version, seen = top
                record[f"rank_{name}"] = ids.index(item) if item in ids else None
                record[f"ok_{name}"], record[f"version_{name}"], record[f"events_{name}"] = True, version, seen
        records.append(record)
        posted = await asyncio.gather(a.post(index, event), b.post(index, event))
        if not all(posted):
            raise SystemExit(
                f"event {index} could not be stored in service(s) "
                f"{[arm.name for arm, ok in zip(arms, posted, strict=True) if not ok]}; see the logs"
            )


async def probe(arms: tuple[Arm, Arm], users: list[str], stop: asyncio.Event) -> None:
    """A light read load on both services until `stop` is set; failures go to each arm's probe_errors."""
    rng = random.Random(0)

    async def one(arm: Arm) -> None:
        while not stop.is_set():
            arm.probe_requests += 1
            await arm.top(rng.choice(users), arm.probe_errors)
            await asyncio.sleep(PROBE_INTERVAL)

    await asyncio.gather(*(one(arm) for arm in arms))


async def retrain_round(arms: tuple[Arm, Arm], reg: Path, store: Path, args, users: list[str], log: Path) -> dict:
    """One `lmrec retrain` with the probe load running, then wait until (a) serves the promoted version."""
    a = arms[0]
    before = {arm.name: sum(arm.probe_errors.values()) for arm in arms}
    before_requests = {arm.name: arm.probe_requests for arm in arms}
    stop = asyncio.Event()
    load = asyncio.create_task(probe(arms, users, stop))
    command = lmrec_cmd(
        "retrain",
        str(reg),
        "--store",
        f"sqlite:///{store}",
        "--json",
        "--set",
        f"train.max_seconds={args.retrain_seconds:g}",
        "--set",
        f"train.patience={args.retrain_patience}",
    )
    started = time.perf_counter()
    try:
        with log.open("ab") as err:
            err.write(f"\n$ {' '.join(command)}\n".encode())
            err.flush()
            process = await asyncio.create_subprocess_exec(
                *command, stdout=subprocess.PIPE, stderr=err, env=child_env()
            )
            try:
                stdout, _ = await asyncio.wait_for(process.communicate(), timeout=args.retrain_seconds * 4 + 900)
            except TimeoutError:
                process.kill()
                await process.wait()
                raise SystemExit(f"lmrec retrain ran past its timeout; see {log}") from None
        wall = time.perf_counter() - started
        if process.returncode != 0:
            raise SystemExit(
                f"lmrec retrain failed with {process.returncode}; see {log}:\n{log.read_text(errors='replace')[-2000:]}"
            )
        lines = [line for line in stdout.decode(errors="replace").splitlines() if line.startswith("{")]
        if not lines:
            raise SystemExit(f"lmrec retrain printed no JSON line; stdout: {stdout[-500:]!r}; see {log}")
        result = json.loads(lines[-1])
        promoted = ModelRegistry(reg).promoted()
        wanted = str(promoted.version) if promoted is not None else None
        pickup_started = time.perf_counter()
        served = None
        while time.perf_counter() - pickup_started < PICKUP_TIMEOUT:
            status = await a.ready()
            served = status.get("model_version") if status else None
            if served == wanted:
                break
            await asyncio.sleep(0.1)
        pickup = time.perf_counter() - pickup_started
        await asyncio.sleep(1.0)  # a little load after the swap, too
    finally:
        stop.set()
        await load
    return {
        "wall_seconds": wall,
        "result": result,
        "promoted_version": wanted,
        "served_after": served,
        "picked_up": served == wanted,
        "pickup_seconds": pickup,
        "probe_requests": {arm.name: arm.probe_requests - before_requests[arm.name] for arm in arms},
        "probe_errors": {arm.name: sum(arm.probe_errors.values()) - before[arm.name] for arm in arms},
    }


# -- statistics ------------------------------------------------------------------------------------


def summarise(records: list[dict]) -> dict:
    """Online HR@10 and NDCG@10 of both arms and their paired differences (users resampled)."""
    usable = [r for r in records if r["ok_a"] and r["ok_b"]]
    out: dict = {"events": len(records), "paired_events": len(usable), "users": len({r["user"] for r in usable})}
    if not usable:
        return out
    users = np.array([r["user"] for r in usable])
    for metric, value in (("hr@10", lambda rank: float(rank is not None)), ("ndcg@10", ndcg)):
        va = np.array([value(r["rank_a"]) for r in usable])
        vb = np.array([value(r["rank_b"]) for r in usable])
        test = paired_test(va - vb, groups=users)
        out[metric] = {
            "a": float(va.mean()),
            "b": float(vb.mean()),
            "delta": test.delta,
            "ci95": [test.low, test.high],
            "p_value": test.p_value,
            "n": test.n,
        }
    out["versions_a"] = dict(Counter(r["version_a"] for r in usable))
    # both services must read the same live history (dataset plus stored events, nothing twice or lost)
    out["history_mismatches"] = sum(r["events_a"] != r["events_b"] for r in usable)
    return out


# -- warm vs scratch -------------------------------------------------------------------------------


def curve(run: Path) -> list[tuple[float, float]]:
    """(cumulative training seconds, validation NDCG@10) per validated epoch of a run."""
    history = json.loads((run / "metrics.json").read_text()).get("history", [])
    return [(float(h["seconds"]), float(h["ndcg@10"])) for h in history if "ndcg@10" in h and "seconds" in h]


def warm_vs_scratch(reg: Path, rounds: list[dict], work: Path, seconds: float, logs: Path) -> dict:
    """Scratch and warm-started SASRec on the last retrain's snapshot, and the time each needs."""
    last = next((r for r in reversed(rounds) if r["result"].get("version") is not None), None)
    if last is None:
        return {"skipped": "no retrain registered a version, so there is no snapshot"}
    registry = ModelRegistry(reg)
    version = registry.get(int(last["result"]["version"]))
    snapshot, parent = Path(version.dataset), int(last["result"]["parent"])
    config = registry.get(1).path / "config.yaml"
    folder = work / "warm-vs-scratch"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    budget = ["--set", f"train.max_seconds={seconds:g}"]
    runs = {}
    for name, extra in (("scratch", []), ("warm", ["--warm-start", str(registry.get(parent).path)])):
        console.print(f"warm vs scratch: training {name} on {snapshot.parent.name} (budget {seconds:g} s) …")
        wall, _ = run_cmd(
            lmrec_cmd("train", str(snapshot), "--config", str(config), "--out", str(folder / name), *budget, *extra),
            logs / "warm-vs-scratch.log",
            f"lmrec train ({name})",
        )
        metrics = json.loads((folder / name / "metrics.json").read_text())
        runs[name] = {
            "wall_seconds": wall,
            "curve": curve(folder / name),
            "epochs": metrics.get("epochs"),
            "train_seconds": metrics.get("train_seconds"),
            "stopped_by": metrics.get("stopped_by"),
        }
    scratch, warm = runs["scratch"]["curve"], runs["warm"]["curve"]
    if not scratch or not warm:
        return {"skipped": "a run has no validation history", "runs": runs}
    best_seconds, best = max(scratch, key=lambda p: (p[1], -p[0]))
    best_seconds = next(s for s, v in scratch if v == best)  # the first epoch with the best value
    reached = next((s for s, v in warm if v >= best), None)
    ratio = None if reached is None else reached / best_seconds
    near = next((s for s, v in warm if v >= 0.98 * best), None)  # supplementary: within 2% of scratch's best
    return {
        "snapshot": str(snapshot),
        "parent_version": parent,
        "config": str(config),
        "budget_seconds": seconds,
        "scratch_best_ndcg@10": best,
        "scratch_seconds_to_best": best_seconds,
        "scratch_train_seconds": scratch[-1][0],
        "warm_best_ndcg@10": max(v for _, v in warm),
        "warm_first_epoch_ndcg@10": warm[0][1],
        "warm_seconds_to_reach": reached,
        "ratio": ratio,
        "ratio_to_scratch_total": None if reached is None else reached / scratch[-1][0],
        "warm_seconds_to_98pct": near,
        "ratio_98pct": None if near is None else near / best_seconds,
        "meets_bar": ratio is not None and ratio <= 1 / 3,
        "runs": runs,
    }


# -- tables ----------------------------------------------------------------------------------------


def fmt_delta(m: dict) -> str:
    lo, hi = m["ci95"]
    return f"{m['delta']:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def window_table(report: dict) -> Table:
    table = Table(
        title=f"Online replay, MovieLens-100K in time order: (a) retraining vs (b) stale first model, top {K}"
    )
    for column in (
        "window",
        "events",
        "users",
        "(a) versions",
        "HR a",
        "HR b",
        "ΔHR (a−b) [95%]",
        "NDCG a",
        "NDCG b",
        "ΔNDCG (a−b) [95%]",
        "p",
        "hist ≠",
    ):
        table.add_column(column, justify="left" if column in ("window", "(a) versions") else "right")

    def row(label: str, s: dict, style: str = "") -> None:
        if "ndcg@10" not in s:
            table.add_row(label, str(s["events"]), *[""] * 10)
            return
        versions = ", ".join(f"v{v}: {n}" for v, n in sorted(s["versions_a"].items()))
        hr, nd = s["hr@10"], s["ndcg@10"]
        table.add_row(
            label,
            f"{s['events']:,}",
            str(s["users"]),
            versions,
            f"{hr['a']:.4f}",
            f"{hr['b']:.4f}",
            fmt_delta(hr),
            f"{nd['a']:.4f}",
            f"{nd['b']:.4f}",
            fmt_delta(nd),
            f"{nd['p_value']:.3f}",
            str(s["history_mismatches"]),
            style=style,
        )

    for w in report["windows"]:
        row(f"{w['window']} ({w['from']:,}–{w['to']:,})", w)
    row("all replayed", report["overall"], "bold")
    if report.get("after_first_retrain"):
        row("after 1st retrain", report["after_first_retrain"], "bold")
    table.caption = (
        "intervals: paired bootstrap over users (1,000 resamples); p for ΔNDCG; "
        "window i covers events [from, to) of the time-ordered log; hist ≠: events where the two "
        "services read live histories of different lengths (should be 0)"
    )
    return table


def retrain_table(report: dict) -> Table:
    table = Table(title="lmrec retrain after each window (service (a)'s registry)")
    for column in (
        "after window",
        "wall s",
        "snapshot s",
        "train s",
        "from → version",
        "gate events",
        "gate NDCG cand / cur",
        "gate Δ [95%]",
        "decision",
        "served after",
        "pickup s",
        "probe req a/b",
        "probe err a/b",
    ):
        table.add_column(column, justify="right")
    for r in report["retrains"]:
        res, secs, gate = r["result"], r["result"].get("seconds", {}), r["result"].get("gate", {})
        if res.get("skipped"):
            decision, frm, window, ndcg_pair, delta = f"skipped: {res['skipped']}", f"{res['parent']}", "", "", ""
        else:
            decision = "promoted" if res["promoted"] else "kept (not promoted)"
            frm = f"{res['parent']} → {res['version']}"
            window = f"{gate['window']['events']:,}"
            ndcg_pair = f"{gate['candidate']:.4f} / {gate['current']:.4f}"
            delta = f"{gate['delta']:+.4f} [{gate['ci95'][0]:+.4f}, {gate['ci95'][1]:+.4f}]"
        table.add_row(
            str(r["after_window"]),
            f"{r['wall_seconds']:.0f}",
            f"{secs.get('snapshot', 0):.1f}",
            f"{secs.get('train', 0):.0f}",
            frm,
            window,
            ndcg_pair,
            delta,
            decision,
            str(r["served_after"]),
            f"{r['pickup_seconds']:.1f}",
            f"{r['probe_requests']['a']}/{r['probe_requests']['b']}",
            f"{r['probe_errors']['a']}/{r['probe_errors']['b']}",
        )
    return table


def warm_table(w: dict) -> Table:
    table = Table(title=f"Warm start vs scratch on the last retrain's snapshot (budget {w['budget_seconds']:g} s each)")
    for column in ("run", "epochs", "train s", "best valid NDCG@10", "seconds to scratch's best", "stopped by"):
        table.add_column(column, justify="right")
    s, m = w["runs"]["scratch"], w["runs"]["warm"]
    table.add_row(
        "scratch",
        str(s["epochs"]),
        f"{w['scratch_train_seconds']:.0f}",
        f"{w['scratch_best_ndcg@10']:.4f}",
        f"{w['scratch_seconds_to_best']:.0f}",
        str(s["stopped_by"]),
    )
    reached = "never" if w["warm_seconds_to_reach"] is None else f"{w['warm_seconds_to_reach']:.0f}"
    table.add_row(
        f"warm (from v{w['parent_version']})",
        str(m["epochs"]),
        f"{m['curve'][-1][0]:.0f}",
        f"{w['warm_best_ndcg@10']:.4f}",
        reached,
        str(m["stopped_by"]),
    )
    ratio = "n/a" if w["ratio"] is None else f"{w['ratio']:.3f}"
    table.caption = f"ratio warm / scratch = {ratio} (bar ≤ 0.333): {'meets' if w['meets_bar'] else 'misses'} the bar"
    return table


# -- main ------------------------------------------------------------------------------------------


async def replay_all(arms, events, split, windows, args, reg, store_a, logs) -> tuple[list, list, float]:
    records: list[dict] = []
    retrains: list[dict] = []
    replay_seconds = 0.0
    try:
        for w, (lo, hi) in enumerate(windows, start=1):
            started = time.perf_counter()
            await replay_window(arms, events[lo:hi], lo, records, args.max_rate)
            took = time.perf_counter() - started
            replay_seconds += took
            console.print(
                f"window {w} ({lo:,}–{hi:,}): {hi - lo:,} events replayed in {took:.0f} s "
                f"({(hi - lo) / max(took, 1e-9):.0f} events/s); errors a {sum(arms[0].errors.values())}, "
                f"b {sum(arms[1].errors.values())}"
            )
            if w < len(windows):
                nxt = windows[w]
                users = sorted({e[0] for e in events[nxt[0] : nxt[1]]}) or [events[hi - 1][0]]
                console.print(f"retrain after window {w} …")
                r = await retrain_round(arms, reg, store_a, args, users, logs / "retrain.log")
                r["after_window"] = w
                retrains.append(r)
                res = r["result"]
                what = (
                    f"skipped: {res['skipped']}"
                    if res.get("skipped")
                    else f"v{res['parent']} → v{res['version']} {'promoted' if res['promoted'] else 'kept'} "
                    f"({res['gate']['reason']})"
                )
                console.print(
                    f"  retrain {r['wall_seconds']:.0f} s: {what}; (a) serves v{r['served_after']} "
                    f"after {r['pickup_seconds']:.1f} s; probe errors {r['probe_errors']}"
                )
    finally:
        for arm in arms:
            await arm.client.aclose()
    return records, retrains, replay_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/lmrec-bench-replay"))
    parser.add_argument("--first-seconds", type=float, default=600.0, help="training budget of the first model")
    parser.add_argument("--retrain-seconds", type=float, default=120.0, help="training budget of each retrain")
    parser.add_argument("--retrain-patience", type=int, default=5, help="early-stopping patience of each retrain")
    parser.add_argument("--warm-seconds", type=float, default=600.0, help="budget of each warm/scratch run")
    parser.add_argument("--window-events", type=int, default=None, help="events per window (default 10%% of the log)")
    parser.add_argument("--limit", type=int, default=None, help="replay only the first N events of the second half")
    parser.add_argument("--max-rate", type=float, default=0.0, help="events per second at most (0: sequential only)")
    parser.add_argument("--skip-warm", action="store_true", help="skip the warm-vs-scratch part")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="JSON to write (default bench/results/replay.json; WORK/replay-smoke.json with --limit)",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    work = args.work.resolve()
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    events = load_events()
    split = int(len(events) * LOG_SHARE_FIRST)
    window_events = args.window_events or len(events) // 10
    end = len(events) if args.limit is None else min(len(events), split + args.limit)
    windows = [(lo, min(lo + window_events, end)) for lo in range(split, end, window_events)]
    console.print(
        f"{len(events):,} events; first {split:,} train the first model; replaying {end - split:,} "
        f"in {len(windows)} window(s) of {window_events:,}"
    )

    first = first_model(work, events[:split], args.first_seconds, logs)
    run = work / "first-run"
    first_metrics = json.loads((run / "metrics.json").read_text())
    reg = work / "reg"
    for stale in (reg, work / "stores", work / "warm-vs-scratch"):
        shutil.rmtree(stale, ignore_errors=True)
    (work / "stores").mkdir()
    run_cmd(
        lmrec_cmd("registry", "add", str(run), "--registry", str(reg), "--promote"),
        logs / "registry.log",
        "lmrec registry add",
    )
    known_items = set(PreparedDataset.load(work / "first").item_ids[1:].astype(str).tolist())
    known_users = set(PreparedDataset.load(work / "first").user_ids.astype(str).tolist())

    key = secrets.token_urlsafe(32)
    store_a, store_b = work / "stores" / "a.sqlite", work / "stores" / "b.sqlite"
    servers: list[Server] = []
    try:
        servers.append(Server("a (registry)", reg, store_a, key, logs / "serve-a.log", poll=1.0))
        servers.append(Server("b (stale)", run, store_b, key, logs / "serve-b.log", poll=0.0))
        for server in servers:
            status = server.wait_ready()
            console.print(f"service {server.name} ready at {server.url}: {status}")
        arms = (Arm("a", servers[0], key), Arm("b", servers[1], key))
        records, retrains, replay_seconds = asyncio.run(
            replay_all(arms, events, split, windows, args, reg, store_a, logs)
        )
    finally:
        for server in servers:
            server.stop()
    window_reports = []
    for w, (lo, hi) in enumerate(windows, start=1):
        recs = [r for r in records if lo <= r["index"] < hi]
        window_reports.append(
            {
                "window": w,
                "from": lo,
                "to": hi,
                **summarise(recs),
                "new_item_events": sum(r["item"] not in known_items for r in recs),
                "new_user_events": sum(r["user"] not in known_users for r in recs),
            }
        )
    after = windows[1][0] if len(windows) > 1 else None
    report: dict = {
        "protocol": "ML-100K sorted by time; first 50% → first SASRec (v1); the rest replayed through POST "
        "/v1/events to (a) a service on the registry (retrained after each window) and (b) a service on the "
        "first run (stale); top-10 asked before each event",
        "settings": {
            "events": len(events),
            "first_events": split,
            "replayed_events": end - split,
            "window_events": window_events,
            "limit": args.limit,
            "first_seconds": args.first_seconds,
            "retrain": {
                "max_seconds": args.retrain_seconds,
                "patience": args.retrain_patience,
                "holdout": 0.2,
                "valid": 0.1,
                "margin": 0.0,
                "warm_start": True,
            },
            "warm_seconds": args.warm_seconds,
            "k": K,
            "max_rate": args.max_rate,
            "replay": "sequential in time order; per event GET both services concurrently, then POST to both "
            "(≤ 2 requests in flight); the replay pauses during each retrain while a probe load of about "
            f"{1 / PROBE_INTERVAL:.0f} GET/s per service runs",
        },
        "first_model": {
            **first,
            "valid": first_metrics.get("valid"),
            "test": first_metrics.get("test"),
            "epochs": first_metrics.get("epochs"),
            "train_seconds": first_metrics.get("train_seconds"),
        },
        "windows": window_reports,
        "overall": summarise(records),
        "after_first_retrain": summarise([r for r in records if r["index"] >= after]) if after else None,
        "retrains": retrains,
        "errors": {
            arm.name: {
                "replay": dict(arm.errors),
                "replay_requests": arm.requests,
                "probe": dict(arm.probe_errors),
                "probe_requests": arm.probe_requests,
            }
            for arm in arms
        },
        "replay_seconds": replay_seconds,
    }
    console.print(window_table(report))
    if retrains:
        console.print(retrain_table(report))
    total_errors = sum(sum(arm.errors.values()) + sum(arm.probe_errors.values()) for arm in arms)
    console.print(f"errors: {json.dumps(report['errors'])}")
    overall = report["overall"].get("ndcg@10")
    if overall:
        beats = overall["ci95"][0] > 0
        report["meets_bar"] = {"retraining_beats_stale": beats, "no_errors": total_errors == 0}
        console.print(
            f"over the replayed windows: ΔNDCG@10 (a−b) {fmt_delta(overall)}, ΔHR@10 "
            f"{fmt_delta(report['overall']['hr@10'])} → retraining {'beats' if beats else 'does not beat'} "
            f"the stale model with an interval excluding 0; {total_errors} failed request(s)"
        )
    if not args.skip_warm:
        report["warm_vs_scratch"] = warm_vs_scratch(reg, retrains, work, args.warm_seconds, logs)
        w = report["warm_vs_scratch"]
        if "skipped" in w:
            console.print(f"warm vs scratch skipped: {w['skipped']}")
        else:
            console.print(warm_table(w))
    report["total_seconds"] = time.perf_counter() - started
    report["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg": os.getloadavg()}
    out = args.results or (work / "replay-smoke.json" if args.limit is not None else ROOT / "results" / "replay.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    (work / "records.json").write_text(json.dumps(records))
    console.print(f"total {report['total_seconds'] / 60:.1f} min; wrote {out} (per-event records: {work}/records.json)")


if __name__ == "__main__":
    main()
