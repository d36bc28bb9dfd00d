"""Re-ranking benchmark: a behaviour classifier re-orders SASRec's top 20 on protocol L (MovieLens-100K).

The first stage is `bench/quality.py`'s protocol-L SASRec runs (seeds 0..N-1, trained here if missing).
The second stage is a cross-encoder trained with `lmrec classify train` on the same prepared dataset with
label "sampled": each training event is a positive, with negatives the user never interacted with drawn
by training popularity (harder than uniform ones, closer to what a first stage proposes). At test time
each target's first-stage top 20 is re-ordered by the classifier's probability (history: the user's
events before the target). Reports NDCG@10 and HR@10 before and after, and the paired bootstrap interval
of per-user ΔNDCG@10 (each user's delta averaged over the seeds). Prints a table and writes
bench/results/rerank.json. Not a test: run it by hand.

    LMREC_DATA_DIR=/work/shared/data python bench/rerank.py --work bench/work
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from lmrec import api, classify
from lmrec.evaluate.stats import paired_test, pooled_deltas
from lmrec.registry.run import RunDir

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from quality import prepared, train_seeds  # noqa: E402  (bench/ is a folder of scripts, not a package)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "work", help="bench/quality.py's work folder")
    parser.add_argument("--seeds", type=int, default=3, help="first-stage SASRec seeds")
    parser.add_argument("--top", type=int, default=20, help="first-stage items re-ordered per target")
    parser.add_argument("--train-examples", type=int, default=4000)
    parser.add_argument("--negatives", type=int, default=3)
    parser.add_argument("--negative-sampling", default="popularity", choices=("uniform", "popularity"))
    parser.add_argument("--max-seconds", type=float, default=1200.0, help="time budget of the encoder stage")
    return parser.parse_args()


def classifier_run(data: Path, work: Path, args: argparse.Namespace) -> Path:
    """Train the re-ranker once (reused when its run has finished)."""
    run = work / f"L-rerank-classifier-{args.negative_sampling}-{args.negatives}"
    if not (run / "metrics.json").is_file():
        config = classify.make_config(
            label="sampled",
            negatives=args.negatives,
            negative_sampling=args.negative_sampling,
            max_train_examples=args.train_examples,
            max_test_examples=2000,
            max_seconds=args.max_seconds,
        )
        classify.train_run(data, run, config, overwrite=True)
    return run


def main() -> None:
    args = parse_args()
    started = time.time()
    data_dir = Path(os.environ.get("LMREC_DATA_DIR", ROOT.parent.parent / "shared" / "data"))
    data = prepared("L", data_dir, args.work)
    runs = train_seeds("sasrec", data, "L", args.seeds, args.work, [])
    reranker = classifier_run(data, args.work, args)
    pairs, seconds = [], []
    for run in runs:
        base = api.evaluate(run)
        tick = time.perf_counter()
        reranked = api.evaluate(run, rerank=reranker, rerank_top=args.top)
        seconds.append(time.perf_counter() - tick)
        pairs.append((base, reranked))
    deltas = pooled_deltas(pairs, "ndcg@10").reshape(len(pairs), -1).mean(axis=0)
    test = paired_test(deltas)
    summary = {
        stage: {
            metric: statistics.median(float(p[i].per_example(metric).mean()) for p in pairs)
            for metric in ("ndcg@10", "hr@10")
        }
        for i, stage in enumerate(("sasrec", "sasrec + re-ranker"))
    }
    classifier_metrics = RunDir(reranker).metrics()
    report = {
        "protocol": "L (ML-100K 5-core, leave-one-out, ties by item id, max length 200, history masked)",
        "first_stage": [str(r) for r in runs],
        "reranker": {
            "run": str(reranker),
            "label": "sampled",
            "negatives": args.negatives,
            "negative_sampling": args.negative_sampling,
            "train_examples": args.train_examples,
            "test_auc": classifier_metrics["test"]["auc"],
        },
        "top": args.top,
        "median_over_seeds": summary,
        "delta_ndcg@10": test.delta,
        "delta_ndcg@10_ci95": [test.low, test.high],
        "rerank_seconds_median": statistics.median(seconds),
        "targets": len(deltas),
        "wall_seconds": time.time() - started,
    }
    out = ROOT / "results" / "rerank.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    table = Table(title=f"Protocol L: re-ranking SASRec's top {args.top} ({len(runs)} seeds, median)")
    for column in ("stage", "NDCG@10", "HR@10"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage, values in summary.items():
        table.add_row(stage, f"{values['ndcg@10']:.4f}", f"{values['hr@10']:.4f}")
    table.caption = f"paired ΔNDCG@10 {test.delta:+.4f} [{test.low:+.4f}, {test.high:+.4f}] over {len(deltas)} users"
    Console().print(table)
    print(f"wrote {out}; {np.round(seconds, 1).tolist()} s of re-ranking per seed")


if __name__ == "__main__":
    main()
