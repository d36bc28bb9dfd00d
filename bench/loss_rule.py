"""Why `train.loss: auto` switches from the full softmax to sampled softmax at 100,000 items.

Times one optimisation step's objective (forward and backward) for a batch of trained positions — the shipped
SASRec's batch of 64 windows of 50, hidden 64 — with the full-softmax cross-entropy (chunked, exact) and with
sampled softmax with log-Q correction (`train.negatives`, default 256), at several catalogue sizes, beside the
step of the SASRec encoder itself (2 blocks, forward and backward, without the objective). Median of --repeats
steps after one warm-up, 1 thread. Prints a table and writes JSON.

    python bench/loss_rule.py                      # writes bench/results/loss_rule.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from lmrec.models.base import build_model
from lmrec.runtime import configure_threads
from lmrec.training.losses import AUTO_FULL_SOFTMAX_ITEMS, full_softmax_ce, sampled_softmax_logq

ROOT = Path(__file__).resolve().parent
BATCH, LENGTH, HIDDEN = 64, 50, 64


def median_seconds(step: Callable[[], None], repeats: int) -> float:
    """Median wall time of `step` over `repeats` calls after one warm-up call."""
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def objective_step(objective, n_items: int) -> Callable[[], None]:
    """One forward and backward pass of `objective` over BATCH x LENGTH positions and an n_items table."""
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(BATCH * LENGTH, HIDDEN, generator=generator, requires_grad=True)
    table = (torch.randn(n_items + 1, HIDDEN, generator=generator) * 0.05).requires_grad_()
    targets = torch.randint(1, n_items + 1, (BATCH * LENGTH,), generator=generator)

    def step() -> None:
        hidden.grad, table.grad = None, None
        objective(hidden, targets, table, None).backward()

    return step


def encoder_step() -> Callable[[], None]:
    """One forward and backward pass of the shipped SASRec encoder over a batch (no objective)."""
    model = build_model("sasrec", 1000, {"max_len": LENGTH, "hidden": HIDDEN, "layers": 2, "heads": 2})
    inputs = torch.randint(1, 1001, (BATCH, LENGTH), generator=torch.Generator().manual_seed(0))

    def step() -> None:
        model.zero_grad()
        model.hidden(inputs).square().mean().backward()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", default="1000,10000,100000,1000000", help="catalogue sizes")
    parser.add_argument("--negatives", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "loss_rule.json")
    args = parser.parse_args()
    configure_threads(1)
    positions = BATCH * LENGTH
    encoder = median_seconds(encoder_step(), args.repeats)
    rows = []
    for n_items in (int(n) for n in args.items.split(",")):
        popularity = torch.ones(n_items + 1)
        sampled = sampled_softmax_logq(popularity, args.negatives, torch.Generator().manual_seed(0))
        rows.append({
            "items": n_items,
            "full_ms": 1000 * median_seconds(objective_step(full_softmax_ce(), n_items), args.repeats),
            "sampled_ms": 1000 * median_seconds(objective_step(sampled, n_items), args.repeats),
        })  # fmt: skip
    table = Table(title=f"objective per step of {positions:,} positions (hidden {HIDDEN}), forward + backward")
    for column in ("items", "full softmax ms", "sampled ms", "full / encoder", "sampled / encoder", "auto picks"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            f"{row['items']:,}", f"{row['full_ms']:.1f}", f"{row['sampled_ms']:.1f}",
            f"{row['full_ms'] / (1000 * encoder):.2f}×", f"{row['sampled_ms'] / (1000 * encoder):.2f}×",
            "full" if row["items"] <= AUTO_FULL_SOFTMAX_ITEMS else "sampled",
        )  # fmt: skip
    console = Console()
    console.print(table)
    console.print(f"the SASRec encoder's own step: {1000 * encoder:.1f} ms")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({
        "positions_per_step": positions, "hidden": HIDDEN, "negatives": args.negatives, "repeats": args.repeats,
        "encoder_ms": 1000 * encoder, "rows": rows, "auto_full_softmax_items": AUTO_FULL_SOFTMAX_ITEMS,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg": os.getloadavg(),
                    "torch": torch.__version__, "threads": 1},
    }, indent=2) + "\n")  # fmt: skip
    console.print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
