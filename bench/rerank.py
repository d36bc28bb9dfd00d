"""Re-ranking benchmark: a behaviour classifier re-orders SASRec's top 20 on protocol L (MovieLens-100K).

The first stage is `bench/quality.py`'s protocol-L SASRec runs (seeds 0..N-1, trained here if missing).
The second stage is a cross-encoder trained with `lmrec classify train` on the same prepared dataset with
label "sampled": each training event is a positive, with negatives the user never interacted with drawn
by training popularity (harder than uniform ones, closer to what a first stage proposes). Each target's
first-stage top 20 is re-ordered (history: the user's events before the target) in two ways: by the
classifier's probability alone, and by first-stage logit + w x the classifier's log-odds, with w chosen
on validation NDCG@10 (median over seeds) from `--weights`. Reports test NDCG@10 and HR@10 before and
after, and the paired bootstrap interval of per-user ΔNDCG@10 (each user's delta averaged over the
seeds). The classifier's probabilities are cached per seed and split in the work folder. Prints a table
and writes bench/results/rerank.json. Not a test: run it by hand.

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

from lmrec import api
from lmrec.evaluation.evaluator import EvalResult, Evaluator
from lmrec.evaluation.rerank import rerank_result
from lmrec.evaluation.stats import paired_test, seed_averaged_deltas
from lmrec.inference.classifier import rerank_order, rerank_probabilities
from lmrec.models.classifier import make_config
from lmrec.registry.run import RunDir
from lmrec.runtime import configure_threads
from lmrec.training.classifier import train_run

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
    parser.add_argument("--weights", default="0,0.1,0.3,1,3", help="log-odds weights tried on validation")
    return parser.parse_args()


def classifier_run(data: Path, work: Path, args: argparse.Namespace) -> Path:
    """Train the re-ranker once (reused when its run has finished)."""
    run = work / f"L-rerank-classifier-{args.negative_sampling}-{args.negatives}"
    if not (run / "metrics.json").is_file():
        config = make_config(
            label="sampled",
            negatives=args.negatives,
            negative_sampling=args.negative_sampling,
            max_train_examples=args.train_examples,
            max_test_examples=2000,
            max_seconds=args.max_seconds,
        )
        train_run(data, run, config, overwrite=True)
    return run


def candidate_scores(run: Path, reranker: Path, split: str, top: int, cache: Path) -> dict[str, np.ndarray]:
    """First-stage result, top-`top` candidates, their first-stage logits and the classifier's probabilities
    (the probabilities, the costly part, are cached)."""
    recommender = api.Recommender.load(run)
    evaluator = Evaluator(recommender.dataset, split, [10, top], mask_history=recommender.config.eval.mask_history)
    result = evaluator(recommender.model)
    candidates = result.topk[:, :top]
    path = cache / f"{run.name}-{split}-top{top}.npz"
    if path.is_file():
        probs = np.load(path, allow_pickle=False)["probs"]
    else:
        classifier = api.load_reranker(reranker, recommender.dataset)
        histories, rows = api.classifier_histories(classifier, recommender.dataset, result.users, result.positions)
        probs = rerank_probabilities(classifier, result.users, histories, candidates, rows)
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, probs=probs)
    first = evaluator.candidate_scores(recommender.model, candidates)
    return {"result": result, "candidates": candidates, "probs": probs, "first": first}


def reranked(scores: dict, weight: float | None) -> EvalResult:
    """The first stage's result with its top re-ordered (weight None: by the classifier's probability)."""
    order = rerank_order(scores["candidates"], scores["probs"], scores["first"], weight)
    return rerank_result(scores["result"], np.take_along_axis(scores["candidates"], order, 1))


def main() -> None:
    args = parse_args()
    started = time.time()
    configure_threads(None)
    data_dir = Path(os.environ.get("LMREC_DATA_DIR", ROOT.parent.parent / "shared" / "data"))
    data = prepared("L", data_dir, args.work)
    runs = train_seeds("sasrec", data, "L", args.seeds, args.work, [])
    reranker = classifier_run(data, args.work, args)
    cache = args.work / f"{reranker.name}-probabilities"
    weights = [float(w) for w in args.weights.split(",")]
    valid = [candidate_scores(run, reranker, "valid", args.top, cache) for run in runs]
    valid_ndcg = {
        w: statistics.median(float(reranked(v, w).per_example("ndcg@10").mean()) for v in valid) for w in weights
    }
    chosen = max(weights, key=lambda w: valid_ndcg[w])
    test = [candidate_scores(run, reranker, "test", args.top, cache) for run in runs]
    stages = {
        "sasrec": [t["result"] for t in test],
        "sasrec + re-ranker (probability)": [reranked(t, None) for t in test],
        f"sasrec + re-ranker (logit + {chosen:g} x log-odds)": [reranked(t, chosen) for t in test],
    }
    summary, deltas = {}, {}
    for stage, results in stages.items():
        summary[stage] = {
            metric: statistics.median(float(r.per_example(metric).mean()) for r in results)
            for metric in ("ndcg@10", "hr@10")
        }
        if stage != "sasrec":
            paired = paired_test(seed_averaged_deltas(list(zip(stages["sasrec"], results, strict=True)), "ndcg@10"))
            deltas[stage] = {"delta_ndcg@10": paired.delta, "ci95": [paired.low, paired.high]}
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
        "valid_ndcg@10_by_weight": {f"{w:g}": v for w, v in valid_ndcg.items()},
        "chosen_weight": chosen,
        "median_over_seeds": summary,
        "paired_vs_first_stage": deltas,
        "targets": len(test[0]["result"]),
        "wall_seconds": time.time() - started,
    }
    out = ROOT / "results" / "rerank.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    table = Table(title=f"Protocol L: re-ranking SASRec's top {args.top} ({len(runs)} seeds, median)")
    for column in ("stage", "NDCG@10", "HR@10", "paired ΔNDCG@10"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage, values in summary.items():
        delta = deltas.get(stage)
        cell = f"{delta['delta_ndcg@10']:+.4f} [{delta['ci95'][0]:+.4f}, {delta['ci95'][1]:+.4f}]" if delta else ""
        table.add_row(stage, f"{values['ndcg@10']:.4f}", f"{values['hr@10']:.4f}", cell)
    table.caption = "validation NDCG@10 by weight: " + ", ".join(f"{w:g}: {v:.4f}" for w, v in valid_ndcg.items())
    Console().print(table)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
