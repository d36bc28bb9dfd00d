"""Distributed data-parallel training: SASRec on MovieLens-100K with 1 and with N processes.

Each run is `lmrec train` in a fresh process (`--nproc N` starts torchrun: gloo on CPU, one torch thread per
process), with the shipped SASRec config, the same seed, the same global batch (train.batch_size 64) and the
same number of epochs (patience off, so every run trains them all), on protocol R's preparation (RecBole's
leave-one-out targets, max length 50, history not masked). Prints a table of wall seconds (the whole
command: start-up, training, validation each epoch and the final evaluation), trained positions per
second (training targets x epochs / the trainer's seconds, which include rank 0's validation each epoch),
the best validation NDCG@10 and the test NDCG@10 of that checkpoint, and the machine's 1-minute load average
before each run (N processes gain only with N cores free); writes bench/results/ddp.json. Not a test: run it
by hand.

    python bench/ddp.py --epochs 10 --procs 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lmrec import api
from lmrec.data.dataset import PreparedDataset
from lmrec.registry.run import RunDir
from lmrec.training.windows import WindowSet

ROOT = Path(__file__).resolve().parent
MODEL = "sasrec"
OVERRIDES = ["model.max_len=50", "eval.mask_history=false", "train.patience=100000"]  # protocol R; all epochs


def prepared(data_dir: Path, work: Path) -> Path:
    """ML-100K prepared as protocol R (bench/quality.py) once; reused when the options are unchanged."""
    out = work / "ml-100k-R"
    api.prepare("ml-100k", out, split="loo", targets=str(data_dir / "ml-100k" / "recbole-loo-split.tsv"))
    return out


def train_targets(data: Path, max_len: int = 50) -> int:
    """Prediction targets per epoch: every training event after a user's first (the trainer's windows)."""
    dataset = PreparedDataset.load(data)
    return WindowSet(dataset.items, dataset.offsets[:-1], dataset.train_lengths, max_len).n_targets


def run(data: Path, out: Path, procs: int, epochs: int, seed: int, threads: int, extra: list[str]) -> dict:
    """Train one run in a fresh process (torchrun's when procs > 1); its figures from metrics.json."""
    sets = [f"--set={item}" for item in [*OVERRIDES, f"train.epochs={epochs}", *extra]]
    command = [sys.executable, "-m", "lmrec", "-q", "train", str(data), "--model", MODEL, "--out", str(out)]
    command += ["--overwrite", "--seed", str(seed), *sets, *(["--nproc", str(procs)] if procs > 1 else [])]
    env = {**os.environ, "LMREC_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(threads)}
    load = os.getloadavg()[0]  # other work on the machine: two processes need two free cores to gain
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "processes": procs,
        "global_batch_size": RunDir(out).config().train.batch_size,
        "wall_seconds": wall,
        "train_seconds": metrics["train_seconds"],
        "seconds_per_epoch": metrics["seconds_per_epoch"],
        "epochs": metrics["epochs"],
        "best_epoch": metrics["best_epoch"],
        "best_valid_ndcg@10": metrics["valid"]["ndcg@10"],
        "test_ndcg@10": metrics["test"]["ndcg@10"],
        "test_hr@10": metrics["test"]["hr@10"],
        "losses": [row["loss"] for row in metrics["history"]],
        "valid_ndcg@10_per_epoch": [row.get("ndcg@10") for row in metrics["history"]],
        "peak_rss_mb_rank0": metrics["peak_rss_mb"],
        "load_average_before": load,
        "load_average_after": os.getloadavg()[0],
        "distributed": metrics.get("distributed"),
    }


def render(report: dict) -> Table:
    """The printed table: one row per process count."""
    table = Table(
        title=f"SASRec on MovieLens-100K (protocol R), {report['epochs']} epochs, seed {report['seed']}, "
        f"global batch {report['global_batch_size']}, {report['threads_per_process']} thread per process"
    )
    columns = ("processes", "wall s", "train s", "positions/s", "best valid ndcg@10", "test ndcg@10", "load before")
    for column in columns:
        table.add_column(column, justify="right")
    for row in report["runs"]:
        table.add_row(
            str(row["processes"]),
            f"{row['wall_seconds']:.1f}",
            f"{row['train_seconds']:.1f}",
            f"{row['positions_per_second']:,.0f}",
            f"{row['best_valid_ndcg@10']:.4f}",
            f"{row['test_ndcg@10']:.4f}",
            f"{row['load_average_before']:.1f}",
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--procs", default="1,2", help="process counts to compare, the first the baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--work", type=Path, default=ROOT / "work" / "ddp")
    parser.add_argument("--set", action="append", default=[], help="extra config override for every run")
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "ddp.json")
    args = parser.parse_args()
    data_dir = Path(os.environ.get("LMREC_DATA_DIR", ROOT.parent.parent / "shared" / "data"))
    started = time.time()
    data = prepared(data_dir, args.work)
    targets = train_targets(data)
    runs = []
    for procs in (int(p) for p in args.procs.split(",")):
        row = run(data, args.work / f"{MODEL}-p{procs}", procs, args.epochs, args.seed, args.threads, args.set)
        row["positions_per_second"] = targets * row["epochs"] / row["train_seconds"]
        runs.append(row)
    base = runs[0]
    for row in runs[1:]:
        row["valid_ndcg@10_minus_baseline"] = row["best_valid_ndcg@10"] - base["best_valid_ndcg@10"]
        row["test_ndcg@10_minus_baseline"] = row["test_ndcg@10"] - base["test_ndcg@10"]
        row["throughput_vs_baseline"] = row["positions_per_second"] / base["positions_per_second"]
    dataset = PreparedDataset.load(data)
    report = {
        "model": MODEL,
        "dataset": {"name": "ml-100k (protocol R)", "users": dataset.n_users, "items": dataset.n_items},
        "train_targets_per_epoch": targets,
        "epochs": args.epochs,
        "seed": args.seed,
        "global_batch_size": base["global_batch_size"],
        "threads_per_process": args.threads,
        "overrides": [*OVERRIDES, *args.set],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "runs": runs,
        "wall_seconds": time.time() - started,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2) + "\n")
    console = Console()
    console.print(render(report))
    for row in runs[1:]:
        console.print(
            f"{row['processes']} processes vs {base['processes']}: best valid NDCG@10 "
            f"{row['valid_ndcg@10_minus_baseline']:+.4f}, test NDCG@10 {row['test_ndcg@10_minus_baseline']:+.4f}, "
            f"throughput x{row['throughput_vs_baseline']:.2f}"
        )
    console.print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
