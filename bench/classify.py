"""Behaviour-classification benchmark: MovieLens-100K "rating >= 4", cross-encoder against mean baselines.

Protocol: ML-100K prepared with a temporal split at 80% of events (train = split 0, valid = split 1, test =
split 2, i.e. the last 20% of events); every event is an example, labelled 1 when its rating is >= 4; its
history is the user's events with strictly earlier timestamps, shown with their ratings. The main models
are scored on all 20,001 test examples; the 256-example run, informative only, on a seeded subsample of
5,000 of them, where every other model is scored again. 95% percentile bootstrap intervals, and paired
differences against the user-mean + item-mean baseline and against the history-mean baseline.

Models:
- mean baseline: (user mean + item mean) / 2 of the training labels, each shrunk towards the global mean
  with a prior weight chosen on the validation examples; users or items without training events get the
  global mean. Most test users have no training events on this split, so it falls back to item means.
- history-mean baseline: the same, but the user mean is taken over all of the user's labels strictly
  before the example (what the cross-encoder can read from its history), a stronger, time-honest baseline.
- bias LR: the classifier's stage 1 alone (L2 logistic regression on a global bias, item biases and three
  features of the user's strictly earlier events: past label rate, past residual against the items'
  training rates, and the text affinity of those residuals to the candidate through all-MiniLM-L6-v2
  embeddings; no user-id biases, see `lmrec.training.classifier`).
- cross-encoder: all-MiniLM-L6-v2 + LoRA on a 4,000-example subsample (biases on all training examples).
- cross-encoder, 256 examples: biases and LoRA trained on the same 256 examples, no validation set, for a
  look beside TALLRec's 0.7198 AUC with 256 examples (LLaMA-7B; a different test set: informative only).

Settings are chosen on the validation events, never on the test examples. Disclosure: two earlier versions
were scored on the 5,000-example subsample before the main run moved to the whole test set: one without
the past-rate bias feature (cross-encoder AUC 0.720, level with the history-mean baseline's 0.721) and
a second (0.726); the past-rate feature was added after the first and checked on validation only. Then
(the current version) the past-residual and text-affinity features were added and user biases turned off.
Their settings were chosen on validation AUC (window 50 and power 2 among 20/50/200 and 1/2/4/8/16; no
user biases: 0.787 against 0.777 with them), but the prototyping script printed the test AUC beside the
validation AUC for each grid point (test 0.742–0.752), so the test set is not untouched for this choice.
Prints the tables and writes bench/results/classify.json. Not a test: run it by hand (about 25 minutes on
1 thread of a busy 2-core machine).

    LMREC_DATA_DIR=/work/shared/data python bench/classify.py
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

STARTED = time.perf_counter()
ROOT = Path(__file__).resolve().parent
AUC_BAR = 0.75
TALLREC_256_AUC = 0.7198
SHRINKAGE_GRID = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
REFERENCE = "mean baseline"
STRONG = "history-mean baseline"
MAIN = "cross-encoder"
BIAS = "bias LR (stage 1)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; the defaults are the benchmark's official settings."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/lmrec-bench-classify"), help="prepared data and runs")
    parser.add_argument("--train-examples", type=int, default=4000)
    parser.add_argument("--few-shot", type=int, default=256, help="examples of the small run; 0 skips it")
    parser.add_argument("--few-shot-epochs", type=int, default=4)
    parser.add_argument("--test-examples", type=int, default=0, help="seeded test subsample of the main run; 0: all")
    parser.add_argument("--few-shot-test-examples", type=int, default=5000, help="seeded test subsample, small run")
    parser.add_argument("--max-seconds", type=float, default=1200.0, help="time budget of each encoder stage")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default LMREC_THREADS or 1)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "classify.json")
    return parser.parse_args(argv)


def shrunk_means(keys: np.ndarray, labels: np.ndarray, size: int, prior: float, weight: float) -> np.ndarray:
    """Per-key label means shrunk towards `prior` with `weight` pseudo-examples (the prior where no examples)."""
    counts = np.bincount(keys, minlength=size)
    sums = np.bincount(keys, weights=labels, minlength=size)
    return np.where(counts > 0, (sums + weight * prior) / np.maximum(counts + weight, 1e-12), prior)


def mean_baselines(events, examples, train, weight: float) -> dict[str, np.ndarray]:
    """Both mean baselines' probabilities for `examples`, from training labels (and the strict past)."""
    data = events.dataset
    prior = float(train.label.mean())
    users = shrunk_means(train.user, train.label, data.n_users, prior, weight)
    items = shrunk_means(train.item, train.label, data.n_items + 1, prior, weight)
    labels = np.concatenate([[0.0], np.cumsum(examples_labels(events))])
    start = data.offsets[examples.user]
    count = examples.end - start
    past = labels[examples.end] - labels[start]
    history = (past + weight * prior) / np.maximum(count + weight, 1e-12)
    history = np.where(count > 0, history, prior)
    return {
        "mean baseline": (users[examples.user] + items[examples.item]) / 2,
        STRONG: (history + items[examples.item]) / 2,
    }


def examples_labels(events) -> np.ndarray:
    """The "rating >= 4" label of every logged event."""
    return (events.values >= 4).astype(np.float64)


def choose_weight(events, train, valid) -> float:
    """The shrinkage weight with the lowest validation log-loss of the mean baseline."""
    from lmrec.evaluation.metrics import log_loss

    losses = {w: log_loss(valid.label, mean_baselines(events, valid, train, w)[REFERENCE]) for w in SHRINKAGE_GRID}
    return min(losses, key=losses.__getitem__)


def train(data: Path, out: Path, settings: dict, label: str) -> tuple[dict, dict[str, np.ndarray], float]:
    """Train one classifier run; (metrics, saved test predictions, wall seconds)."""
    from lmrec.inference.classifier import load_predictions
    from lmrec.models.classifier import make_config
    from lmrec.training.classifier import train_run

    started = time.perf_counter()
    config = make_config(**settings)
    print(f"training {label}: {json.dumps(settings)}", flush=True)
    metrics = train_run(data, out, config, overwrite=True, progress=False)
    return metrics, load_predictions(out), time.perf_counter() - started


def figures(intervals: dict) -> dict:
    """JSON form of intervals: {model: {metric: {value, low, high}}}."""
    return {
        name: {m: {"value": i.mean, "low": i.low, "high": i.high} for m, i in metrics.items()}
        for name, metrics in intervals.items()
    }


def score(labels: np.ndarray, probs: dict[str, np.ndarray], resamples: int, seed: int) -> dict:
    """Intervals of every model, and paired differences against both mean baselines."""
    from lmrec.evaluation.classification import classification_intervals

    intervals = classification_intervals(labels, probs, REFERENCE, resamples, seed=seed)
    others = {name: p for name, p in probs.items() if name not in (REFERENCE, STRONG)}
    against_strong = classification_intervals(labels, {STRONG: probs[STRONG], **others}, STRONG, resamples, seed=seed)
    return {**intervals, **{k: v for k, v in against_strong.items() if " - " in k}}


def print_table(intervals: dict, names: list[str], title: str) -> None:
    """A plain-text table: AUC, accuracy, F1, log-loss with intervals, and paired ΔAUC against both baselines."""
    metrics = ("auc", "accuracy", "f1", "logloss")
    print(f"\n{title} (95% bootstrap intervals)")
    header = "".join(f"{m:>24}" for m in metrics) + f"{'ΔAUC vs mean':>26}{'ΔAUC vs history-mean':>26}"
    print(f"{'model':28}{header}")
    for name in names:
        cells = "".join(f"{intervals[name][m]!s:>24}" for m in metrics)
        for reference in (REFERENCE, STRONG):
            delta = intervals.get(f"{name} - {reference}")
            auc = delta["auc"] if delta else None
            text = f"{auc.mean:+.4f} [{auc.low:+.3f}, {auc.high:+.3f}]" if auc else "—"
            cells += f"{text:>26}"
        print(f"{name:28}{cells}")


def positions(saved: dict[str, np.ndarray], subset: dict[str, np.ndarray]) -> np.ndarray:
    """Where each example of `subset` is in `saved` (both keyed by user, item and history end)."""
    index = {key: i for i, key in enumerate(zip(saved["user"], saved["item"], saved["end"], strict=True))}
    if len(index) != len(saved["user"]):
        raise SystemExit("test examples are not unique by (user, item, history end); this is a bug")
    return np.array([index[key] for key in zip(subset["user"], subset["item"], subset["end"], strict=True)])


def run_summary(settings: dict, metrics: dict, seconds: float) -> dict:
    """What a run did, for the JSON."""
    keys = ("train_seconds", "test_seconds", "training", "truncated", "examples", "parameters", "peak_rss_mb")
    return {"settings": settings, "wall_seconds": seconds, **{k: metrics[k] for k in keys}}


def main(argv: list[str] | None = None) -> dict:
    """Prepare the data, train both runs, score every model on the same test examples, print and save."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from lmrec import api
    from lmrec.data.dataset import PreparedDataset
    from lmrec.data.labels import Examples, example_sets, load_events
    from lmrec.models.classifier import make_config
    from lmrec.runtime import configure_threads

    threads = configure_threads(args.threads)
    data = args.work / "ml-100k-temporal-0.8"
    api.prepare("ml-100k", data, split="temporal", cutoff=0.8)
    events = load_events(PreparedDataset.load(data))
    base = {"label": "rating>=4", "seed": args.seed, "max_seconds": args.max_seconds}
    main_settings = {**base, "max_train_examples": args.train_examples, "max_test_examples": args.test_examples or None}
    metrics, saved, seconds = train(data, args.work / "run-main", main_settings, "the cross-encoder")
    runs = {MAIN: run_summary(main_settings, metrics, seconds)}
    sets = example_sets(events, make_config(**main_settings))
    weight = choose_weight(events, sets.train, sets.valid)
    test = Examples(saved["user"], saved["item"], saved["end"], saved["label"], saved["label"] * 0)
    probs = {**mean_baselines(events, test, sets.train, weight), BIAS: saved["baseline"], MAIN: saved["prob"]}
    names = [REFERENCE, STRONG, BIAS, MAIN]
    tables = {"main": {"examples": len(test), "models": score(test.label, probs, args.resamples, args.seed)}}
    print_table(tables["main"]["models"], names, f"ML-100K rating>=4, temporal 80%, {len(test):,} test examples")
    if args.few_shot:
        few_settings = {
            **base,
            "max_train_examples": args.few_shot,
            # a subsample of the main run's test examples: all of them, or the same seeded subsample
            "max_test_examples": (args.few_shot_test_examples or None)
            if not args.test_examples
            else args.test_examples,
            "bias_examples": "subsample",
            "max_valid_examples": 0,
            "epochs": args.few_shot_epochs,
        }
        name = f"cross-encoder, {args.few_shot} examples"
        few, few_saved, few_seconds = train(data, args.work / "run-few-shot", few_settings, name)
        runs[name] = run_summary(few_settings, few, few_seconds)
        rows = positions(saved, few_saved)
        subset = {**{k: p[rows] for k, p in probs.items()}, name: few_saved["prob"]}
        n = len(rows)
        tables["few_shot"] = {"examples": n, "models": score(few_saved["label"], subset, args.resamples, args.seed)}
        print_table(
            tables["few_shot"]["models"], [*names, name], f"the same models on a seeded {n:,}-example subsample"
        )
    auc = tables["main"]["models"][MAIN]["auc"].mean
    verdict = auc >= AUC_BAR and all(auc > tables["main"]["models"][b]["auc"].mean for b in names[:3])
    print(
        f"\nbar: cross-encoder AUC >= {AUC_BAR} and above the baselines: {'met' if verdict else 'NOT met'} "
        f"(AUC {auc:.4f}); TALLRec, 256 examples, other test set: {TALLREC_256_AUC}"
    )
    results = {
        "benchmark": "classify",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": threads},
        "protocol": {
            "dataset": "ml-100k",
            "split": "temporal, cutoff at 80% of events (valid = last 10% before it)",
            "label": "rating >= 4",
            "history": "strictly earlier events of the user, most recent first, with ratings and liked/disliked",
            "test_examples_total": len(sets.test),
            "test_positive_rate": float(test.label.mean()),
            "test_examples_from_users_without_training_events": float(
                np.mean(~np.isin(test.user, np.unique(sets.train.user)))
            ),
            "mean_baseline_shrinkage": weight,
            "bootstrap_resamples": args.resamples,
        },
        "bar": {"auc": AUC_BAR, "met": bool(verdict)},
        "tables": {key: {**t, "models": figures(t["models"])} for key, t in tables.items()},
        "runs": runs,
        "reference": {"tallrec_256_examples_auc": TALLREC_256_AUC, "note": "LLaMA-7B + LoRA, other test set"},
        "wall_seconds": time.perf_counter() - STARTED,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    print(f"total {results['wall_seconds'] / 60:.1f} min → {args.results}")
    return results


if __name__ == "__main__":
    main()
