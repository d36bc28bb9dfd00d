"""Explanations on MovieLens-100K: are they faithful (a deletion test), and what do they cost per request.

For each model (--models; prepared and trained in --work with train.max_seconds=120 when missing) and --users
users (default all), the history is the window the service reads (the user's last max_len events) and the
items are the user's top 10 as served (seen items excluded). Each item is explained by `model.explain()`
(occlusion per item: the drop in that item's score when one event is removed). For every (user, item) pair the
drops are measured again by re-scoring the history with events removed, independently of `explain()`:

- top-1: removing the top-explained event against removing a uniformly random other event of the window
  (seeded). A pair counts when the explained removal lowers the item's score more; ties, and pairs whose
  explanation is empty (no event with a positive weight), count as not. The bar is 0.80. With occlusion this
  share is close to tautological: the top-explained event is by definition the single removal that lowers the
  score most, so only ties and empty explanations can fail it. It checks the implementation (re-scored drops
  against explain()'s weights), not whether single removals are the right question.
- top-3, not tautological: the 3 highest-weighted events removed together against 3 random other events;
  weights of single removals say nothing about how removals interact.
- deletion AUC over k = 1..5, not tautological: the mean drop of removing the k highest-weighted events
  together, against k random other events, k = 1..5.
Intervals: 95% bootstrap over users (a user's pairs are resampled together). A random removal barely moves a
score (its mean drop is about 0), so the two stricter variants pass by a wide margin as well; a stronger
baseline than chance (the most recent events, say) would make a harder test.

Latency: `Engine.recommend` (the service's call, titles included) in process, k = 10, explain off and on in
turn for each of --latency-users users, for each model and for the tiny model of the serve tests (their
synthetic data and settings); p50 and p99 against the service's bar (p50 ≤ 5 ms, p99 ≤ 25 ms; docs/serving.md).

    python bench/explain.py                              # all 943 users; writes bench/results/explain.json
    python bench/explain.py --users 100 --results bench/work/explain.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from lmrec import api
from lmrec.cli import main as cli
from lmrec.config import EXCLUDE_SEEN_DEFAULT
from lmrec.data.dataset import PreparedDataset
from lmrec.evaluation.stats import bootstrap_ci
from lmrec.inference.recommender import Recommender
from lmrec.models.base import SequentialRecommender
from lmrec.serve.engine import Engine

ROOT = Path(__file__).resolve().parent
TOP = 10  # recommended items per user
CURVE = 5  # removals of the deletion curve, k = 1..CURVE
SET = 3  # events removed together in the top-3 variant
BAR = 0.80
P50_BAR_MS, P99_BAR_MS = 5.0, 25.0
TINY = ["train.epochs=2", "model.max_len=20", "model.hidden=16"]  # the serve tests' tiny run (serve_helpers.py)


def ensure_runs(work: Path, models: list[str]) -> dict[str, Path]:
    """ML-100K prepared and each model trained (120 s budget) under `work`, reusing what is there."""
    data = work / "ml-100k"
    if not (data / "manifest.json").is_file():
        api.prepare("ml-100k", data, overwrite=True)
    for model in models:
        if not (work / model / "metrics.json").is_file():
            api.train(data, work / model, model=model, overrides=["train.max_seconds=120"], overwrite=True)
    return {model: work / model for model in models}


def ensure_tiny(work: Path) -> Path:
    """The serve tests' tiny SASRec: 120 synthetic users, 60 items, 3,000 events, 2 epochs, hidden 16."""
    root = work / "tiny"
    if not (root / "sasrec" / "metrics.json").is_file():
        log = str(root / "log.csv")
        cli(["data", "synth", "--users", "120", "--items", "60", "--events", "3000", "--out", log])
        cli(["data", "prepare", log, "--items", str(root / "log.items.csv"), "--out", str(root / "d"), "--overwrite"])
        api.train(root / "d", root / "sasrec", model="sasrec", overrides=TINY, overwrite=True)
    return root / "sasrec"


def removed(window: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """The window without the events at `slots`, right-aligned to the same width (padding in front)."""
    rest = np.delete(window, slots)
    return np.concatenate([np.zeros(len(window) - len(rest), dtype=window.dtype), rest])


def user_pairs(
    model: SequentialRecommender, window: np.ndarray, seen: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For each recommended item of one user: explain()'s largest weight `[K]`, and the drops of its score,
    re-scored, when its k highest-weighted events or k random other events are removed `[K, CURVE, 2]`."""
    history = torch.as_tensor(window)[None]
    lengths = torch.tensor([len(window)])
    with torch.inference_mode():
        scores = model.score_all(history, lengths)[0]
        scores[torch.as_tensor(seen)] = float("-inf")
        items = torch.topk(scores, TOP).indices
        weights = model.explain(history, lengths, items[None])[0].numpy()
        rows = []
        for weight in weights:
            order = np.argsort(-weight, kind="stable")
            for k in range(1, CURVE + 1):
                rows += [removed(window, order[:k]), removed(window, rng.choice(order[k:], size=k, replace=False))]
        batch = torch.as_tensor(np.stack(rows))
        after = model.score(batch, (batch > 0).sum(1), items.repeat_interleave(2 * CURVE)[:, None])[:, 0]
        full = model.score(history, lengths, items[None])[0]
    drops = np.repeat(full.numpy(), 2 * CURVE) - after.numpy()
    return weights.max(1), drops.reshape(TOP, CURVE, 2)


def faithfulness(run: Path, users: int | None, seed: int) -> dict:
    """The deletion test of one run over `users` users (all if None), drawn with `seed`."""
    recommender = Recommender.load(run)
    model, dataset = recommender.model, recommender.dataset
    rng = np.random.default_rng(seed)
    picks = np.arange(dataset.n_users)
    if users is not None:
        picks = np.sort(rng.choice(dataset.n_users, size=min(users, dataset.n_users), replace=False))
    tops, drops, groups, short = [], [], [], 0
    started = time.perf_counter()
    for user in picks:
        sequence = dataset.sequence(int(user))
        window = sequence[-model.max_len :]
        if len(window) < 2 * CURVE:  # too few events for k random others
            short += 1
            continue
        top, drop = user_pairs(model, window, sequence if EXCLUDE_SEEN_DEFAULT else sequence[:0], rng)
        tops.append(top)
        drops.append(drop)
        groups.append(np.full(TOP, user))
    top, drop, group = np.concatenate(tops), np.concatenate(drops), np.concatenate(groups)
    variants = {
        "top1": (drop[:, 0, 0], drop[:, 0, 1], top > 0),
        f"top{SET}": (drop[:, SET - 1, 0], drop[:, SET - 1, 1], np.ones_like(top, dtype=bool)),
        f"auc_k1_{CURVE}": (drop[:, :, 0].mean(1), drop[:, :, 1].mean(1), np.ones_like(top, dtype=bool)),
    }
    out: dict = {"model": model.name, "explain_method": model.explain_method, "users": len(picks) - short,
                 "users_too_short": short, "pairs": len(top), "pairs_without_explanation": int((top <= 0).sum()),
                 "max_abs_weight_vs_rescored_drop": float(np.abs(top - drop[:, 0, 0]).max()),
                 "seconds": time.perf_counter() - started}  # fmt: skip
    for name, (explained, random, counted) in variants.items():
        interval = bootstrap_ci(((explained > random) & counted).astype(np.float64), groups=group)
        out[name] = {
            "share": interval.mean,
            "ci95": [interval.low, interval.high],
            "mean_drop_explained": float(explained.mean()),
            "mean_drop_random": float(random.mean()),
        }
    out["meets_bar"] = out["top1"]["share"] >= BAR
    return out


def latency(run: Path, users: int, seed: int) -> dict:
    """p50/p99 (ms) of `Engine.recommend` in process with explain off and on, in turn for each user."""
    engine = Engine(Recommender.load(run), "bench")
    dataset = engine.dataset
    picks = np.random.default_rng(seed).choice(dataset.n_users, size=min(users, dataset.n_users), replace=False)
    histories = [dataset.sequence(int(user)) for user in picks]
    for history in histories[:20]:  # warm-up
        engine.recommend(history, TOP, EXCLUDE_SEEN_DEFAULT, explain=True)
    times: dict[bool, list[float]] = {False: [], True: []}
    for history in histories:
        for explain in (False, True):
            start = time.perf_counter()
            engine.recommend(history, TOP, EXCLUDE_SEEN_DEFAULT, explain=explain)
            times[explain].append((time.perf_counter() - start) * 1000)
    out: dict = {"requests": len(histories), "mean_window": float(np.mean([min(len(h), engine.model.max_len)
                                                                            for h in histories]))}  # fmt: skip
    for explain, label in ((False, "explain_off"), (True, "explain_on")):
        values = np.asarray(times[explain])
        out[label] = {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99)),
                      "mean_ms": float(values.mean())}  # fmt: skip
    on = out["explain_on"]
    out["meets_bar"] = on["p50_ms"] <= P50_BAR_MS and on["p99_ms"] <= P99_BAR_MS
    return out


def faithfulness_table(results: dict[str, dict]) -> Table:
    """Share of pairs where the explained removal lowers the score more, with the mean drops."""
    table = Table(title=f"deletion test on MovieLens-100K, top {TOP} per user (bar: top-1 share ≥ {BAR:.2f})")
    for column in ("model", "pairs", "variant", "share [95% CI]", "mean drop explained", "mean drop random"):
        table.add_column(column, justify="left" if column in ("model", "variant") else "right")
    for name, result in results.items():
        for variant in ("top1", f"top{SET}", f"auc_k1_{CURVE}"):
            value = result[variant]
            low, high = value["ci95"]
            table.add_row(name, f"{result['pairs']:,}", variant, f"{value['share']:.3f} [{low:.3f}, {high:.3f}]",
                          f"{value['mean_drop_explained']:.4f}", f"{value['mean_drop_random']:.4f}")  # fmt: skip
    return table


def latency_table(results: dict[str, dict]) -> Table:
    """Engine.recommend latency with explain off and on."""
    table = Table(title=f"Engine.recommend in process, k={TOP} (bar: p50 ≤ {P50_BAR_MS:g} ms, p99 ≤ {P99_BAR_MS:g} ms)")
    for column in ("model", "requests", "mean window", "off p50", "off p99", "on p50", "on p99", "meets bar"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, result in results.items():
        off, on = result["explain_off"], result["explain_on"]
        table.add_row(name, str(result["requests"]), f"{result['mean_window']:.1f}", f"{off['p50_ms']:.2f}",
                      f"{off['p99_ms']:.2f}", f"{on['p50_ms']:.2f}", f"{on['p99_ms']:.2f}",
                      "yes" if result["meets_bar"] else "no")  # fmt: skip
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "work" / "explain")
    parser.add_argument("--models", default="sasrec,gru4rec")
    parser.add_argument("--users", type=int, default=None, help="users of the deletion test (default: all)")
    parser.add_argument("--latency-users", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "explain.json", help="JSON to write")
    args = parser.parse_args()
    console = Console()
    runs = ensure_runs(args.work, args.models.split(","))
    faithful = {name: faithfulness(run, args.users, args.seed) for name, run in runs.items()}
    console.print(faithfulness_table(faithful))
    timed = {"tiny (serve tests)": latency(ensure_tiny(args.work), args.latency_users, args.seed)}
    timed |= {name: latency(run, args.latency_users, args.seed) for name, run in runs.items()}
    console.print(latency_table(timed))
    dataset = PreparedDataset.load(args.work / "ml-100k")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({
        "dataset": {"name": "ml-100k", "users": dataset.n_users, "items": dataset.n_items},
        "settings": {"top": TOP, "set": SET, "curve": CURVE, "seed": args.seed, "bar": BAR,
                     "exclude_seen": EXCLUDE_SEEN_DEFAULT, "train": "train.max_seconds=120"},
        "faithfulness": faithful,
        "latency": timed,
        "latency_bar": {"p50_ms": P50_BAR_MS, "p99_ms": P99_BAR_MS},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "loadavg": os.getloadavg()},
    }, indent=2) + "\n")  # fmt: skip
    console.print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
