"""How cost grows (issue 15): preparation, training, full-ranking evaluation and serving against their sizes.

Four parts, each measured in pieces that are kept in the results JSON and reused when the script runs again
(`--fresh` measures them anew):

- `prepare`: `lmrec data prepare` on synthetic logs (`lmrec data synth`, CSV, 100 events per user, 50,000
  items) of `--sizes` events, each in a fresh child process under `--memory-limit` with `--temp-dir` (DuckDB
  spills beyond it); wall time, the child's own peak RSS and CPU times (`os.wait4`), and the most the spill
  folder held. The log, the prepared output and the spill folder are deleted after each size.
- `train`: SASRec (shipped config, max length 50) for `--epochs` epochs (`train.eval_every` = epochs, so the
  first epoch trains only) by `lmrec train` in a child process, on ML-100K protocol R (bench/quality.py's
  preparation: RecBole's leave-one-out targets), on synthetic logs shaped like ML-100K at `--scales` times
  its interactions (943 x scale users, 1,682 items, 100,000 x scale events) and on the throughput logs of
  600 users x 165 events with `--throughput-items` items. Seconds per epoch from the run's metrics.json
  history, per trained position (every training event after a user's first, once per epoch); user and sys
  CPU seconds of the child (`os.wait4`) and of its first epoch alone (a wrapper around the trainer's epoch
  in the child records `getrusage(RUSAGE_SELF)` before and after it).
- `eval`: full-ranking cost per user at `--catalogues` items, as bench/faiss_recall.py builds them (the
  ML-100K SASRec run's item table extended by perturbed copies; queries are real user states): exact scores
  and top-10 (in batches of 64 users, as the evaluator scores, and one user at a time) against a search of
  the service's FAISS index (IVF-Flat, one query per call), and FAISS recall@10 against exact.
- `serve`: in-process `Engine.recommend` latency (k = 10, seen items excluded, what the service computes
  for a request) with that SASRec grown to each catalogue size; the Engine picks FAISS above EXACT_LIMIT
  by itself, and at those sizes the exact path is timed too (`exact_limit` raised). No HTTP.

Prints a table per part with the growth exponent between consecutive sizes (1 = linear), writes
bench/results/scale.json and the plot docs/img/scale.svg.

    python bench/scale.py                                   # everything (most of an hour on one core)
    python bench/scale.py --parts prepare --sizes 1M,3M     # some parts, some sizes
    python bench/scale.py --parts eval,serve --catalogues 10k,100k --fresh
    python bench/scale.py --parts train --scales "" --no-protocol-r --throughput-items 100k \
        --full-catalogue-users 0 --set train.loss=ce --tag=-ce          # a variant, kept as items-100k-ce
    python bench/scale.py --parts ""                        # only the tables and the plot, from the JSON

The 99,956-item log (`--full-catalogue-users`, 20,000 users, 600 of them trained) validates over 20,000 users
and 100k items after each epoch: about two minutes each time on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
GIB = 1024**3
DEFAULT_MEMORY_LIMIT = "2GB"  # other limits are kept apart, as "<events>@<limit>", and left out of the plot
ONE_RUN_ABOVE = 10_000_000  # larger logs are prepared once, smaller ones --prepare-runs times
PREPARE_RSS_BAR = 3 * GIB  # the 30M-event preparation under --memory-limit 2GB
POSITION_BAR = 3.0  # the 10k-item epoch's time per position, at most 3x ML-100K protocol R's
SYS_BAR = 0.15  # and its kernel time under 15% of its user time
ML100K = {"users": 943, "items": 1682, "events": 100_000}
PARTS = ("prepare", "train", "eval", "serve")
COVER_FROM = 50_000  # throughput catalogues this large also train on a log that holds (nearly) all their items

# In the training child: the CPU (user, sys) and wall time of every epoch and of every validation inside one,
# written to $SCALE_EPOCH_LOG after each epoch.
EPOCH_WRAPPER = """
import json, os, resource, time
from lmrec.training import trainer
epoch, validate, rows, checks = trainer.Trainer._epoch, trainer.Trainer.validate, [], []
def usage():
    now = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall_s": time.perf_counter(), "user_s": now.ru_utime, "sys_s": now.ru_stime, "minor_faults": now.ru_minflt}
def spent(before):
    return {key: value - before[key] for key, value in usage().items()}
def timed_validate(self):
    before = usage()
    try:
        return validate(self)
    finally:
        checks.append(spent(before))
def timed_epoch(self, training_log):
    before, checks[:] = usage(), []
    epoch(self, training_log)
    row = spent(before)
    row["validation"] = checks[0] if checks else None
    rows.append(row)
    with open(os.environ["SCALE_EPOCH_LOG"], "w") as out:
        json.dump(rows, out)
trainer.Trainer._epoch, trainer.Trainer.validate = timed_epoch, timed_validate
from lmrec.cli import main
main()
"""


def size(text: str) -> int:
    """`30M` -> 30,000,000, `10k` -> 10,000, `250` -> 250."""
    text = text.strip().lower().replace("_", "")
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if factor > 1 else text) * factor)


def label(n: int) -> str:
    """10,000,000 -> `10M`, 100,000 -> `100k`."""
    for unit, value in (("M", 1_000_000), ("k", 1_000)):
        if n >= value and n % value == 0:
            return f"{n // value}{unit}"
    return str(n)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated: prepare,train,eval,serve")
    parser.add_argument("--sizes", default="1M,3M,10M,30M", help="events of the prepared logs")
    parser.add_argument("--prepare-runs", type=int, default=3, help="runs per size up to 10M events (median)")
    parser.add_argument("--events-per-user", type=int, default=100)
    parser.add_argument("--prepare-items", type=int, default=50_000)
    parser.add_argument("--memory-limit", default=DEFAULT_MEMORY_LIMIT, help="DuckDB's memory limit for every prepare")
    parser.add_argument("--scales", default="1,4,16", help="multiples of ML-100K's interactions (train part)")
    parser.add_argument("--throughput-items", default="10k,100k", help="items of the 600 x 165 logs")
    parser.add_argument(
        "--full-catalogue-users",
        type=int,
        default=20_000,
        help="users of the log that covers a large throughput catalogue (600 of them train; 0: none)",
    )
    parser.add_argument("--set", action="append", default=[], help="extra `lmrec train --set` for every training")
    parser.add_argument("--tag", default="", help="suffix of the training pieces' names (e.g. for a --set variant)")
    parser.add_argument("--no-protocol-r", action="store_true", help="skip the ML-100K protocol R training")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per training (the fastest one is reported)")
    parser.add_argument("--catalogues", default="10k,100k,1M", help="items for the eval and serve parts")
    parser.add_argument("--eval-users", type=int, default=943)
    parser.add_argument("--serve-users", type=int, default=400)
    parser.add_argument("--serve-passes", type=int, default=2)
    parser.add_argument("--noise", type=float, default=0.1, help="perturbation of the copied item vectors")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="measure again pieces the results already hold")
    parser.add_argument("--work", type=Path, default=ROOT / "work" / "scale")
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "scale.json")
    parser.add_argument("--plot", type=Path, default=ROOT.parent / "docs" / "img" / "scale.svg")
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    args.sizes = [size(s) for s in args.sizes.split(",") if s]
    args.scales = [int(s) for s in args.scales.split(",") if s]
    args.throughput_items = [size(s) for s in args.throughput_items.split(",") if s]
    args.catalogues = [size(s) for s in args.catalogues.split(",") if s]
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    args.work = args.work.resolve()
    return args


# -- child processes ---------------------------------------------------------------------------------------


def lmrec_command() -> list[str]:
    """The `lmrec` console script of this interpreter's environment, else the same entry point via -c."""
    script = shutil.which("lmrec", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-c", "from lmrec.cli import main; main()"]


def folder_bytes(path: Path) -> int:
    """Bytes of the files under `path` (0 when it does not exist); files vanishing meanwhile are skipped."""
    total = 0
    for base, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a file that vanished meanwhile
                total += os.stat(os.path.join(base, name)).st_size
    return total


def run_child(
    command: list[str], output_log: Path, env: dict | None = None, watch: Path | None = None, check: bool = True
) -> dict:
    """Run `command`; its wall time, its own peak RSS and CPU times (`os.wait4`: this child only, where
    RUSAGE_CHILDREN would keep the maximum over every child so far), its exit code and, with `watch`, the
    most that folder held while it ran (sampled every 0.5 s)."""
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"), **(env or {})}
    most, done = [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            most[0] = max(most[0], folder_bytes(watch))

    sampler = threading.Thread(target=sample, daemon=True) if watch else None
    load = round(os.getloadavg()[0], 2)
    with output_log.open("wb") as output:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
        if sampler:
            sampler.start()
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
    done.set()
    if sampler:
        sampler.join()
    rss_unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    result = {
        "wall_s": wall,
        "peak_rss_bytes": usage.ru_maxrss * rss_unit,
        "user_s": usage.ru_utime,
        "sys_s": usage.ru_stime,
        "exit_code": os.waitstatus_to_exitcode(status),
        "load_1m_before": load,
    }
    if watch:
        result["spill_peak_bytes"] = most[0]
    if result["exit_code"] != 0:
        lines = output_log.read_text(errors="replace").splitlines()[-15:]
        result["output_tail"] = lines
        if not check:
            return result
        raise SystemExit(f"{' '.join(map(str, command))} failed ({result['exit_code']}):\n" + "\n".join(lines))
    return result


def synth(log: Path, users: int, items: int, events: int, seed: int) -> dict:
    """Write a synthetic log with `lmrec data synth` in a child (its memory stays out of this process)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [*lmrec_command(), "data", "synth", "--users", str(users), "--items", str(items),
               "--events", str(events), "--seed", str(seed), "--out", str(log)]  # fmt: skip
    return run_child(command, log.with_suffix(".synth.txt"))


def items_file(log: Path) -> Path:
    """The items CSV that `lmrec data synth` writes beside a log."""
    return log.with_name(f"{log.stem}.items.csv")


def remove(*paths: Path) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()


# -- part 1: preparation ----------------------------------------------------------------------------------


def measure_prepare(args: argparse.Namespace, events: int) -> dict:
    """Generate a log of `events` events, prepare it in a child under the memory limit (--prepare-runs times up
    to ONE_RUN_ABOVE events, once above), delete it all."""
    work = args.work / "prepare"
    users = max(1, events // args.events_per_user)
    log = work / f"log-{label(events)}.csv"
    out, spill = work / f"prepared-{label(events)}", work / f"spill-{label(events)}"
    remove(out, spill)
    spill.mkdir(parents=True)
    print(f"prepare {label(events)}: writing the log ({users:,} users, {args.prepare_items:,} items)", flush=True)
    generated = synth(log, users, args.prepare_items, events, args.seed)
    log_bytes = log.stat().st_size
    command = [*lmrec_command(), "data", "prepare", str(log), "--items", str(items_file(log)), "--out", str(out),
               "--overwrite", "--memory-limit", args.memory_limit, "--temp-dir", str(spill)]  # fmt: skip
    runs = []
    for i in range(args.prepare_runs if events <= ONE_RUN_ABOVE else 1):
        print(f"prepare {label(events)}: preparing {log_bytes / GIB:.2f} GiB of CSV (run {i + 1})", flush=True)
        runs.append(run_child(command, work / f"prepare-{label(events)}-{i + 1}.txt", watch=spill, check=False))
        if runs[-1]["exit_code"] != 0:
            print("\n".join(runs[-1]["output_tail"]), flush=True)
            break
    numbers = [key for key, value in runs[0].items() if isinstance(value, (int, float))]
    median = {key: statistics.median(r[key] for r in runs) for key in numbers}
    failed = runs[-1]["exit_code"] != 0
    manifest = {} if failed else json.loads((out / "manifest.json").read_text())
    remove(log, items_file(log), out, spill)
    return {
        "events": events,
        "users": users,
        "items": args.prepare_items,
        "log_bytes": log_bytes,
        "synth_s": generated["wall_s"],
        "memory_limit": args.memory_limit,
        **median,  # of each figure over the runs
        "runs": runs,
        "failed": failed,
        "rows_read": manifest.get("rows_read"),
        "interactions": manifest.get("interactions"),
        "dropped": manifest.get("dropped", {}),
    }


# -- part 2: training ---------------------------------------------------------------------------------------


def prepared_synthetic(args: argparse.Namespace, name: str, users: int, items: int, events: int) -> Path:
    """A synthetic log prepared with a leave-one-out split (kept under the work folder; the log is deleted)."""
    data = args.work / "train" / f"data-{name}"
    if (data / "manifest.json").is_file():
        return data
    log = args.work / "train" / f"log-{name}.csv"
    synth(log, users, items, events, args.seed)
    command = [*lmrec_command(), "data", "prepare", str(log), "--items", str(items_file(log)), "--out", str(data),
               "--overwrite", "--split", "loo"]  # fmt: skip
    run_child(command, args.work / "train" / f"prepare-{name}.txt")
    remove(log, items_file(log))
    return data


def prepared_protocol_r(args: argparse.Namespace) -> Path:
    """ML-100K prepared as bench/quality.py's protocol R (RecBole's leave-one-out targets)."""
    data = args.work / "train" / "data-ml100k-R"
    if (data / "manifest.json").is_file():
        return data
    data_dir = Path(os.environ.get("LMREC_DATA_DIR", ROOT.parent.parent / "shared" / "data"))
    command = [*lmrec_command(), "data", "prepare", "ml-100k", "--out", str(data), "--overwrite", "--split", "loo",
               "--targets", str(data_dir / "ml-100k" / "recbole-loo-split.tsv")]  # fmt: skip
    data.parent.mkdir(parents=True, exist_ok=True)
    run_child(command, args.work / "train" / "prepare-ml100k-R.txt")
    return data


def trained_positions(data: Path, max_len: int, user_fraction: float, seed: int) -> dict:
    """Users, items, training events and trained positions (targets per epoch) of a prepared dataset; with
    `user_fraction` < 1, of the users the trainer keeps (the same seeded draw as `Trainer._training_lengths`)."""
    from lmrec.data.dataset import PreparedDataset
    from lmrec.training.windows import WindowSet

    dataset = PreparedDataset.load(data)
    lengths = dataset.train_lengths.copy()
    if user_fraction < 1:
        users = np.flatnonzero(lengths > 0)
        keep = np.random.default_rng(seed).choice(users, size=max(1, round(user_fraction * len(users))), replace=False)
        mask = np.zeros_like(lengths, dtype=bool)
        mask[keep] = True
        lengths[~mask] = 0
    windows = WindowSet(dataset.items, dataset.offsets[:-1], lengths, max_len)
    return {
        "users": int(dataset.n_users),
        "trained_users": int(np.count_nonzero(lengths >= 2)),
        "items": int(dataset.n_items),
        "interactions": len(dataset.items),
        "train_events": int(lengths.sum()),
        "positions": windows.n_targets,
        "windows": len(windows),
    }


def minus(total: dict, part: dict | None) -> dict:
    """CPU and wall figures of `total` without those of `part` (a validation inside an epoch)."""
    return {key: value - (part or {}).get(key, 0) for key, value in total.items() if key != "validation"}


def measure_train(args: argparse.Namespace, name: str, data: Path, user_fraction: float = 1.0) -> dict:
    """Train SASRec for --epochs epochs in a child; per epoch its training time (the trainer's epoch seconds
    without the validation inside them), per trained position, and its user and sys CPU seconds."""
    run_dir = args.work / "train" / f"run-{name}"
    epoch_log = args.work / "train" / f"epochs-{name}.json"
    remove(epoch_log)
    overrides = [f"train.epochs={args.epochs}", "model.max_len=50", "eval.mask_history=false",
                 f"train.threads={os.environ.get('LMREC_THREADS', '1') or 1}"]  # fmt: skip
    if user_fraction < 1:
        overrides.append(f"train.user_fraction={user_fraction}")
    overrides += args.set
    command = [sys.executable, "-c", EPOCH_WRAPPER, "train", str(data), "--model", "sasrec", "--out", str(run_dir),
               "--overwrite", "--seed", str(args.seed), *(x for o in overrides for x in ("--set", o))]  # fmt: skip
    shape = trained_positions(data, 50, user_fraction, args.seed)
    print(f"train {name}: {shape['trained_users']:,} of {shape['users']:,} users, {shape['items']:,} items, "
          f"{shape['positions']:,} positions", flush=True)  # fmt: skip
    run = run_child(command, args.work / "train" / f"train-{name}.txt", env={"SCALE_EPOCH_LOG": str(epoch_log)})
    metrics = json.loads((run_dir / "metrics.json").read_text())
    objective = re.search(r"loss auto: (\w+) for", (args.work / "train" / f"train-{name}.txt").read_text())
    seconds = [row["seconds"] for row in metrics["history"]]
    epoch_s = [b - a for a, b in zip([0.0, *seconds[:-1]], seconds, strict=True)]
    epochs = json.loads(epoch_log.read_text())
    trained = [minus(cpu, cpu["validation"]) for cpu in epochs]
    train_s = [s - (cpu["validation"] or {}).get("wall_s", 0.0) for s, cpu in zip(epoch_s, epochs, strict=True)]
    best = min(range(len(train_s)), key=train_s.__getitem__)  # the least disturbed epoch on a shared machine
    return {
        **shape,
        "user_fraction": user_fraction,
        "overrides": args.set,
        "loss": objective.group(1)
        if objective
        else next((o[11:] for o in args.set if o.startswith("train.loss=")), None),
        "epochs": len(epoch_s),
        "epoch_s": epoch_s,  # the trainer's epoch seconds, validation included
        "epoch_train_s": train_s,  # the same without the validation
        "epoch_cpu": epochs,  # per epoch in the child: wall, user, sys, minor faults; and of its validation
        "train_epoch_s": train_s[best],
        "us_per_position": train_s[best] / shape["positions"] * 1e6,
        "epoch_user_s": trained[best]["user_s"],
        "epoch_sys_s": trained[best]["sys_s"],
        "epoch_sys_over_user": trained[best]["sys_s"] / max(trained[best]["user_s"], 1e-9),
        "validation_s": (epochs[best]["validation"] or {}).get("wall_s"),
        "process": run,
        "process_sys_over_user": run["sys_s"] / max(run["user_s"], 1e-9),
        "valid_ndcg@10": metrics["valid"].get("ndcg@10"),
    }


# -- parts 3 and 4: evaluation and serving at large catalogues ------------------------------------------------


def base_run(args: argparse.Namespace):
    """The ML-100K SASRec run that bench/faiss_recall.py and bench/serve_load.py use (trained when missing)."""
    from lmrec import api
    from serve_load import ensure_run

    return api.Recommender.load(ensure_run(ROOT / "work"))


def measure_eval(args: argparse.Namespace, recommender, n_items: int) -> dict:
    """Exact full ranking (batched and per user) and FAISS search at `n_items`, with FAISS recall@10."""
    import torch

    from faiss_recall import catalogue, exact_top, user_states
    from lmrec.serve.retrieval import DEFAULT_PROBES, InnerProductIndex, default_lists

    with torch.inference_mode():
        table = recommender.model.output_embeddings().numpy()
    vectors = catalogue(table, n_items, args.noise, args.seed)
    queries = user_states(recommender, args.eval_users)
    exact_top(vectors, queries[:64], 10)  # warm-up
    started = time.perf_counter()
    truth = exact_top(vectors, queries, 10)
    batched_ms = (time.perf_counter() - started) / len(queries) * 1000
    items = torch.from_numpy(vectors[1:])
    single = []
    with torch.inference_mode():
        for query in torch.from_numpy(queries):
            started = time.perf_counter()
            torch.topk(items @ query, 10)
            single.append(time.perf_counter() - started)
    started = time.perf_counter()
    index = InnerProductIndex(vectors, seed=args.seed)
    build_s = time.perf_counter() - started
    found, times = [], []
    for query in queries:
        started = time.perf_counter()
        _, ids = index.search(query[None], 10)
        times.append(time.perf_counter() - started)
        found.append(ids[0])
    recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))
    single_ms, faiss_ms = np.asarray(single) * 1000, np.asarray(times) * 1000
    return {
        "items": n_items,
        "users": len(queries),
        "exact_batched_ms_per_user": batched_ms,
        "exact_single_ms": summary_ms(single_ms),
        "faiss_ms": summary_ms(faiss_ms),
        "faiss_recall@10": recall,
        "faiss_build_s": build_s,
        "lists": default_lists(n_items),
        "probes": min(DEFAULT_PROBES, default_lists(n_items)),
    }


def summary_ms(ms: np.ndarray) -> dict:
    """Mean, p50 and p99 of milliseconds."""
    return {"mean": float(ms.mean()), "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


class GrownDataset:
    """A prepared dataset seen with `n_items` items: its own, then synthetic ids for the copies."""

    def __init__(self, dataset, n_items: int) -> None:
        self._dataset = dataset
        self.n_items = n_items
        extra = np.asarray([f"copy-{i}" for i in range(n_items - dataset.n_items)], dtype=object)
        self.item_ids = np.concatenate([dataset.item_ids, extra])

    def __getattr__(self, name: str):
        return getattr(self._dataset, name)


def grown_engine(recommender, vectors: np.ndarray, exact_limit: int | None = None):
    """A service Engine on the SASRec whose item table is `vectors` (`[n_items + 1, d]`)."""
    import torch
    from torch import nn

    from lmrec.inference.recommender import Recommender
    from lmrec.serve.engine import Engine

    model = copy.deepcopy(recommender.model)
    model.item_emb = nn.Embedding.from_pretrained(torch.from_numpy(vectors), freeze=True, padding_idx=0)
    model.n_items = len(vectors) - 1
    model.eval()
    dataset = GrownDataset(recommender.dataset, model.n_items)
    grown = Recommender(recommender.run, dataset, model, recommender.config)
    options = {} if exact_limit is None else {"exact_limit": exact_limit}
    return Engine(grown, "scale", **options)


def time_engine(engine, histories: list[np.ndarray], passes: int) -> dict:
    """p50 / p99 / mean milliseconds of `Engine.recommend` (k = 10, seen excluded) over every history, `passes`
    times after an unmeasured warm-up over the first 50."""
    for history in histories[:50]:
        engine.recommend(history, 10, exclude_seen=True)
    times = []
    for _ in range(passes):
        for history in histories:
            started = time.perf_counter()
            engine.recommend(history, 10, exclude_seen=True)
            times.append(time.perf_counter() - started)
    ms = np.asarray(times) * 1000
    return {"calls": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean())}  # fmt: skip


def measure_serve(args: argparse.Namespace, recommender, n_items: int, exact_limit: int | None = None) -> dict:
    """Engine.recommend latency at `n_items`: the Engine's own choice, and exact scoring where it chose FAISS."""
    import torch

    from faiss_recall import catalogue
    from lmrec.serve.retrieval import EXACT_LIMIT

    with torch.inference_mode():
        table = recommender.model.output_embeddings().numpy()
    vectors = catalogue(table, n_items, args.noise, args.seed)
    dataset = recommender.dataset
    histories = [dataset.sequence(u) for u in range(min(args.serve_users, dataset.n_users))]
    started = time.perf_counter()
    engine = grown_engine(recommender, vectors, exact_limit)
    build_s = time.perf_counter() - started
    result = {
        "items": n_items,
        "users": len(histories),
        "retrieval": "faiss" if engine.index is not None else "exact",
        "engine_build_s": build_s,
        "engine": time_engine(engine, histories, args.serve_passes),
    }
    if engine.index is not None:
        truth = [[r.item for r in grown_engine_exact(engine, h)] for h in histories]
        found = [[r.item for r in engine.recommend(h, 10, exclude_seen=True)] for h in histories]
        result["recall@10_vs_exact"] = float(
            np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
        )
        del engine
        exact = grown_engine(recommender, vectors, exact_limit=max(n_items, EXACT_LIMIT))
        result["exact"] = time_engine(exact, histories, args.serve_passes)
    return result


def grown_engine_exact(engine, history: np.ndarray):
    """The exact top 10 of an Engine that uses FAISS, computed with its model's `score_all` as the Engine does
    below EXACT_LIMIT."""
    index, engine.index = engine.index, None
    try:
        return engine.recommend(history, 10, exclude_seen=True)
    finally:
        engine.index = index


# -- growth, tables, plot ---------------------------------------------------------------------------------


def exponent(x0: float, y0: float, x1: float, y1: float) -> float | None:
    """The log-log slope between two points: 1 is linear growth, 0 constant."""
    if min(x0, y0, x1, y1) <= 0 or x0 == x1:
        return None
    return math.log(y1 / y0) / math.log(x1 / x0)


def slopes(rows: list[dict], x: str, y) -> list[str]:
    """The growth exponent from each row to the next one, as text ("" for the first row)."""
    out = [""]
    for a, b in itertools.pairwise(rows):
        e = exponent(a[x], y(a), b[x], y(b))
        out.append("" if e is None else f"{e:.2f}")
    return out


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def cpu_per_position(row: dict) -> float:
    """CPU microseconds (user + sys) per trained position of a training's reported epoch: what the epoch costs
    without the waits that other jobs on a shared machine add to its wall time."""
    return (row["epoch_user_s"] + row["epoch_sys_s"]) / row["positions"] * 1e6


def print_tables(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(160, shutil.get_terminal_size().columns))
    prepare = sorted(results.get("prepare", {}).values(), key=lambda r: (r["memory_limit"] != DEFAULT_MEMORY_LIMIT,
                                                                        r["memory_limit"], r["events"]))  # fmt: skip
    if prepare:
        table = Table(title="lmrec data prepare (synthetic CSV, --temp-dir for spilling; exp.: growth exponent)")
        for column in ("limit", "events", "CSV GiB", "wall s", "exp.", "peak RSS GiB", "user s", "sys s", "spill GiB",
                       "µs/event"):  # fmt: skip
            table.add_column(column, justify="right")
        for row, slope in zip(prepare, slopes(prepare, "events", lambda r: r["wall_s"]), strict=True):
            name = label(row["events"]) + (" FAILED" if row.get("failed") else "")
            table.add_row(row["memory_limit"], name, f"{row['log_bytes'] / GIB:.2f}", f"{row['wall_s']:.1f}", slope,
                          f"{row['peak_rss_bytes'] / GIB:.2f}", f"{row['user_s']:.1f}", f"{row['sys_s']:.1f}",
                          f"{row.get('spill_peak_bytes', 0) / GIB:.2f}",
                          f"{row['wall_s'] / row['events'] * 1e6:.2f}")  # fmt: skip
        console.print(table)
    train = results.get("train", {})
    if train:
        table = Table(title="SASRec training epoch (the faster of the epochs, validation left out), one thread")
        for column in ("data", "users", "items", "positions", "s/epoch", "µs/position", "× R", "CPU µs/position",
                       "× R", "epoch user s", "epoch sys s", "sys/user", "process sys/user"):  # fmt: skip
            table.add_column(column, justify="right")
        reference = train.get("ml100k-R", {}).get("us_per_position")
        cpu_reference = cpu_per_position(train["ml100k-R"]) if "ml100k-R" in train else None
        for name, row in train.items():
            ratio = f"{row['us_per_position'] / reference:.2f}" if reference else ""
            cpu_ratio = f"{cpu_per_position(row) / cpu_reference:.2f}" if cpu_reference else ""
            table.add_row(name, f"{row['users']:,}", f"{row['items']:,}", f"{row['positions']:,}",
                          f"{row['train_epoch_s']:.1f}", f"{row['us_per_position']:.1f}", ratio,
                          f"{cpu_per_position(row):.1f}", cpu_ratio,
                          f"{row['epoch_user_s']:.1f}", f"{row['epoch_sys_s']:.2f}",
                          f"{row['epoch_sys_over_user']:.1%}", percent(row.get("process_sys_over_user")))  # fmt: skip
        console.print(table)
    evaluation = sorted(results.get("eval", {}).values(), key=lambda r: r["items"])
    if evaluation:
        table = Table(title="Full ranking per user: exact scores + top-10 against FAISS IVF-Flat")
        for column in ("items", "exact ms/user (64/batch)", "exp.", "exact ms (1 user) p50", "FAISS ms p50",
                       "FAISS ms p99", "lists/probes", "recall@10", "build s"):  # fmt: skip
            table.add_column(column, justify="right")
        exps = slopes(evaluation, "items", lambda r: r["exact_batched_ms_per_user"])
        for row, slope in zip(evaluation, exps, strict=True):
            table.add_row(label(row["items"]), f"{row['exact_batched_ms_per_user']:.3f}", slope,
                          f"{row['exact_single_ms']['p50']:.2f}", f"{row['faiss_ms']['p50']:.2f}",
                          f"{row['faiss_ms']['p99']:.2f}", f"{row['lists']}/{row['probes']}",
                          f"{row['faiss_recall@10']:.4f}", f"{row['faiss_build_s']:.1f}")  # fmt: skip
        console.print(table)
    serve = sorted(results.get("serve", {}).values(), key=lambda r: r["items"])
    if serve:
        table = Table(title="Engine.recommend in process (k = 10, seen excluded), one thread")
        for column in ("items", "retrieval", "p50 ms", "p99 ms", "mean ms", "exact p50 ms", "exact p99 ms",
                       "recall@10 vs exact"):  # fmt: skip
            table.add_column(column, justify="right")
        for row in serve:
            exact = row.get("exact", row["engine"])
            recall = row.get("recall@10_vs_exact")
            table.add_row(label(row["items"]), row["retrieval"], f"{row['engine']['p50_ms']:.2f}",
                          f"{row['engine']['p99_ms']:.2f}", f"{row['engine']['mean_ms']:.2f}",
                          f"{exact['p50_ms']:.2f}", f"{exact['p99_ms']:.2f}",
                          "" if recall is None else f"{recall:.4f}")  # fmt: skip
        console.print(table)


def bars(results: dict) -> dict:
    """The issue's bars that the measured pieces can judge."""
    out = {}
    big = results.get("prepare", {}).get(str(30_000_000))
    if big:
        out["prepare_30M_peak_rss"] = {
            "value_gib": big["peak_rss_bytes"] / GIB,
            "bar_gib": PREPARE_RSS_BAR / GIB,
            "memory_limit": big["memory_limit"],
            "passed": not big.get("failed") and big["peak_rss_bytes"] <= PREPARE_RSS_BAR,
        }
    train = results.get("train", {})
    reference = train.get("ml100k-R")
    for name, row in train.items():
        if not name.startswith("items-") or reference is None:
            continue
        ratio = row["us_per_position"] / reference["us_per_position"]
        out[f"throughput_{name}"] = {
            "us_per_position": row["us_per_position"],
            "ml100k_R_us_per_position": reference["us_per_position"],
            "ratio": ratio,
            "cpu_us_per_position": cpu_per_position(row),
            "cpu_ratio": cpu_per_position(row) / cpu_per_position(reference),
            "sys_over_user": row["epoch_sys_over_user"],
            "process_sys_over_user": row["process_sys_over_user"],
            # the bar is on the 10k-item log; larger catalogues are reported beside it
            "passed": ratio <= POSITION_BAR and row["epoch_sys_over_user"] < SYS_BAR if name == "items-10k" else None,
            "bar": f"per-position time <= {POSITION_BAR:g}x ML-100K R, sys < {SYS_BAR:.0%} of user"
            if name == "items-10k"
            else "none (reported)",
        }
    return out


def plot(results: dict, path: Path) -> None:
    """Four log-log panels, each with a dashed line of linear growth through its first point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "lmrec-scale"
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))

    def panel(ax, xs, series, title, xlabel, ylabel, linear=True):
        for name, ys, style in series:
            if xs and ys:
                ax.plot(xs[: len(ys)], ys, style, label=name)
        if linear and xs and series and series[0][1]:
            x0, y0 = xs[0], series[0][1][0]
            ax.plot([x0, xs[-1]], [y0, y0 * xs[-1] / x0], ":", color="grey", label="linear")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8)

    prepare = sorted((r for k, r in results.get("prepare", {}).items() if "@" not in k), key=lambda r: r["events"])
    panel(axes[0][0], [r["events"] for r in prepare],
          [("wall s", [r["wall_s"] for r in prepare], "o-"),
           ("peak RSS GiB", [r["peak_rss_bytes"] / GIB for r in prepare], "s-")],
          "lmrec data prepare", "events", "seconds / GiB")  # fmt: skip
    if prepare:
        axes[0][0].axhline(PREPARE_RSS_BAR / GIB, color="red", lw=0.8, ls="--", label="RSS bar 3 GiB (30M)")
        axes[0][0].legend(fontsize=8)
    train = sorted((r for n, r in results.get("train", {}).items() if n.startswith("x")),
                   key=lambda r: r["positions"])  # fmt: skip
    panel(axes[0][1], [r["positions"] for r in train],
          [("s / epoch", [r["train_epoch_s"] for r in train], "o-")],
          "SASRec epoch, ML-100K shape at 1×, 4×, 16×", "trained positions", "seconds")  # fmt: skip
    untagged = re.compile(r"ml100k-R|items-\w+(-covered)?")  # not the --tag variants
    catalogue = sorted((r for n, r in results.get("train", {}).items() if untagged.fullmatch(n)),
                       key=lambda r: r["items"])  # fmt: skip
    panel(axes[0][2], [r["items"] for r in catalogue],
          [("wall µs / position", [r["us_per_position"] for r in catalogue], "o-"),
           ("CPU µs / position", [cpu_per_position(r) for r in catalogue], "s-")],
          "SASRec epoch per trained position, by catalogue", "items in the softmax",
          "µs per trained position")  # fmt: skip
    axes[1][0].axis("off")
    axes[1][0].text(0, 0.5, "dotted: linear growth through the first point\n\n"
                    "bench/scale.py, one thread, shared 2-core machine", fontsize=9, va="center")  # fmt: skip
    evaluation = sorted(results.get("eval", {}).values(), key=lambda r: r["items"])
    panel(axes[1][1], [r["items"] for r in evaluation],
          [("exact, 64 users per batch", [r["exact_batched_ms_per_user"] for r in evaluation], "o-"),
           ("exact, one user", [r["exact_single_ms"]["p50"] for r in evaluation], "^-"),
           ("FAISS IVF p50", [r["faiss_ms"]["p50"] for r in evaluation], "s-")],
          "full ranking per user", "items", "ms per user")  # fmt: skip
    serve = sorted(results.get("serve", {}).values(), key=lambda r: r["items"])
    panel(axes[1][2], [r["items"] for r in serve],
          [("exact p99", [r.get("exact", r["engine"])["p99_ms"] for r in serve], "o-"),
           ("exact p50", [r.get("exact", r["engine"])["p50_ms"] for r in serve], "o--"),
           ("served p99 (FAISS above 100k)", [r["engine"]["p99_ms"] for r in serve], "s-"),
           ("served p50", [r["engine"]["p50_ms"] for r in serve], "s--")],
          "Engine.recommend in process", "items", "ms")  # fmt: skip
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    svg = path.suffix == ".svg"
    fig.savefig(path, format=path.suffix[1:], metadata={"Date": None} if svg else None)
    plt.close(fig)


# -- main -------------------------------------------------------------------------------------------------


def load_results(path: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    return {}


def save(results: dict, path: Path) -> None:
    results["bars"] = bars(results)
    results["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    results = load_results(args.results)
    results["benchmark"] = "scale"
    results["env"] = {name: os.environ.get(name) for name in ("LMREC_THREADS", "OMP_WAIT_POLICY", "LMREC_DATA_DIR")}
    results["host"] = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}

    def piece(part: str, key: str, measure) -> None:
        held = results.setdefault(part, {})
        if key in held and not args.fresh:
            print(f"{part} {key}: reusing the figures of {held[key].get('measured', 'an earlier run')}", flush=True)
            return
        started = time.perf_counter()
        held[key] = {**measure(), "measured": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        print(f"{part} {key}: done in {time.perf_counter() - started:.0f} s", flush=True)
        save(results, args.results)

    if "prepare" in args.parts:
        for events in args.sizes:
            key = str(events) if args.memory_limit == DEFAULT_MEMORY_LIMIT else f"{events}@{args.memory_limit}"
            piece("prepare", key, lambda events=events: measure_prepare(args, events))
    if "train" in args.parts:
        if not args.no_protocol_r:
            name = f"ml100k-R{args.tag}"
            piece("train", name, lambda name=name: measure_train(args, name, prepared_protocol_r(args)))
        for scale in args.scales:
            name = f"x{scale}{args.tag}"
            shape = {key: value * (scale if key != "items" else 1) for key, value in ML100K.items()}
            piece("train", name, lambda name=name, scale=scale, shape=shape: measure_train(
                args, name, prepared_synthetic(args, f"x{scale}", **shape)))  # fmt: skip
        for n_items in args.throughput_items:
            data = f"items-{label(n_items)}"
            name = data + args.tag
            piece("train", name, lambda name=name, data=data, n=n_items: measure_train(
                args, name, prepared_synthetic(args, data, 600, n, 99_000)))  # fmt: skip
            if args.full_catalogue_users and n_items >= COVER_FROM:
                # 99,000 events cannot hold every item of a large catalogue: a log of more users covers it,
                # and `train.user_fraction` trains 600 of them, so that the epoch has the same positions
                data, users = f"items-{label(n_items)}-covered", args.full_catalogue_users
                name = data + args.tag
                piece("train", name, lambda name=name, data=data, n=n_items, users=users: measure_train(
                    args, name, prepared_synthetic(args, data, users, n, users * 165), 600 / users))  # fmt: skip
    if "eval" in args.parts or "serve" in args.parts:
        import torch

        torch.set_num_threads(int(os.environ.get("LMREC_THREADS", "1") or 1))
        import faiss

        faiss.omp_set_num_threads(int(os.environ.get("LMREC_THREADS", "1") or 1))
        recommender = base_run(args)
        for n_items in args.catalogues:
            if "eval" in args.parts:
                piece("eval", str(n_items), lambda n=n_items: measure_eval(args, recommender, n))
            if "serve" in args.parts:
                piece("serve", str(n_items), lambda n=n_items: measure_serve(args, recommender, n))

    save(results, args.results)
    print_tables(results)
    for name, bar in results["bars"].items():
        verdict = {True: "met", False: "NOT met", None: "reported"}[bar["passed"]]
        print(f"bar {name}: {verdict} ({json.dumps(bar)})")
    plot(results, args.plot)
    print(f"wrote {args.results} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
