"""Cold-start benchmark: recommending items nobody had touched before the cutoff, on MovieLens-100K.

Split `cold-items` with the cutoff at 80% of events by time: targets are every event after the cutoff on
an item first seen after it, each with all earlier events of its user as history; candidates are all
items. The baseline is a random ranking of the cold items, computed exactly (popularity from training
cannot tell cold items apart). Two diagnostics bound what any ranking of all items can reach, since
adding candidates never lifts a target: NDCG@10 with only the cold items as candidates, in the model's
order, and the same with the newest releases first (where items have a `release_year`). Prints a table
and writes bench/results/cold_start.json.

    python bench/cold_start.py --models lmrec,sasrec,gru4rec
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from lmrec import api
from lmrec.data.dataset import PreparedDataset
from lmrec.evaluation.evaluator import EvalResult, Evaluator
from lmrec.evaluation.metrics import ndcg_at_k
from lmrec.evaluation.stats import bootstrap_ci
from lmrec.registry.run import RunDir

ROOT = Path(__file__).resolve().parent


def random_ranking_ndcg(n_cold: int, k: int = 10) -> float:
    """Expected NDCG@k when the target is placed uniformly at random among `n_cold` items."""
    return sum(1 / math.log2(r + 2) for r in range(min(k, n_cold))) / n_cold


def cold_items(dataset: PreparedDataset) -> np.ndarray:
    """[n_items + 1] mask of the cold items (row 0, padding, is False)."""
    return np.asarray([False, *dataset.item_table.column("cold").to_pylist()])


def among_cold_ndcg(
    run: Path, dataset: PreparedDataset, cold: np.ndarray, priors: list[np.ndarray]
) -> list[np.ndarray]:
    """Per-target NDCG@10 of the cold targets when only the cold items are candidates (the baseline's
    candidate set): how well the model orders the cold items, apart from how it places them among warm ones.
    One array per prior ([n_items + 1] numbers): items are ordered by the prior first and by the model
    within equal values (a constant prior leaves the model's order). The model scores each target once.
    History items are masked as in the main evaluation; ties go to the lower item id."""
    model = api.Recommender.load(run, data=dataset.path).model.eval()
    evaluator = Evaluator(dataset, "test", mask_history=True)
    targets = evaluator.targets
    ids = np.arange(dataset.n_items + 1)
    ranks: list[list[int]] = [[] for _ in priors]
    with torch.inference_mode():
        for row in np.flatnonzero(cold[targets.item]):
            one = slice(row, row + 1)
            history, length = evaluator.histories(one, model.max_len)
            scores = model.score_all(torch.from_numpy(history), torch.from_numpy(length))[0].numpy()
            rankable = cold.copy()
            rankable[evaluator.seen(one)[1]] = False
            item = targets.item[row]
            by_model = (scores > scores[item]) | ((scores == scores[item]) & (ids < item))
            for prior, out in zip(priors, ranks, strict=True):
                better = (prior > prior[item]) | ((prior == prior[item]) & by_model)
                out.append(int((better & rankable).sum()))
    return [ndcg_at_k(np.asarray(r), 10) for r in ranks]


def interval(mean: float, bounds: list[float]) -> str:
    """A table cell "mean [low, high]"."""
    return f"{mean:.4f} [{bounds[0]:.4f}, {bounds[1]:.4f}]"


def release_years(dataset: PreparedDataset) -> np.ndarray | None:
    """[n_items + 1] release years (0 where unknown), or None when the items have no `release_year`."""
    table = dataset.item_table
    if "release_year" not in table.column_names:
        return None
    years = table.column("release_year").to_pylist()
    return np.asarray([0, *(int(y) if str(y).isdigit() else 0 for y in years)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lmrec,sasrec,gru4rec")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=ROOT / "work")
    parser.add_argument("--set", action="append", default=[], help="extra config override for every model")
    args = parser.parse_args()
    started = time.time()
    data = args.work / "ml-100k-cold"
    dataset = api.prepare("ml-100k", data, split="cold-items", cutoff=0.8)
    cold = cold_items(dataset)
    n_cold = int(cold.sum())
    baseline = random_ranking_ndcg(n_cold)
    years = release_years(dataset)
    priors = [np.zeros(dataset.n_items + 1), *([years] if years is not None else [])]
    rows = {}
    for model in args.models.split(","):
        run = args.work / f"cold-{model}-s{args.seed}"
        if not (run / "metrics.json").is_file():
            api.train(data, run, model=model, seed=args.seed, overwrite=True, overrides=args.set)
        result = EvalResult.load(RunDir(run).ranks_file("test"))
        mask = cold[result.items]
        ci = bootstrap_ci(ndcg_at_k(result.ranks[mask], 10))
        among, *newest_first = [bootstrap_ci(ndcg) for ndcg in among_cold_ndcg(run, dataset, cold, priors)]
        newest = newest_first[0] if newest_first else None
        rows[model] = {
            "ndcg@10": ci.mean,
            "ci95": [ci.low, ci.high],
            "hr@10": float(np.mean(result.ranks[mask] < 10)),
            "targets": int(mask.sum()),
            "among_cold_ndcg@10": among.mean,
            "among_cold_ci95": [among.low, among.high],
            "among_cold_newest_first_ndcg@10": newest.mean if newest else None,
            "among_cold_newest_first_ci95": [newest.low, newest.high] if newest else None,
            "all_test_ndcg@10": RunDir(run).metrics()["test"]["ndcg@10"],
        }
    report = {
        "protocol": "ML-100K, split cold-items, cutoff 0.8 of events by time, full ranking, history masked",
        "overrides": args.set,
        "cold_items": n_cold,
        "baseline_random_cold_ndcg@10": baseline,
        "bar": "lmrec lower 95% bound > 3 x baseline",
        "models": rows,
        "passes": rows.get("lmrec", {}).get("ci95", [0])[0] > 3 * baseline,
        "wall_seconds": time.time() - started,
    }
    out = ROOT / "results" / "cold_start.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    table = Table(title=f"Cold items ({n_cold} items, {next(iter(rows.values()))['targets']} targets)")
    columns = ("model", "cold NDCG@10 [95% CI]", "cold HR@10", "among cold items only", "same, newest release first")
    for column in (*columns, "all-test NDCG@10"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, row in rows.items():
        newest = row["among_cold_newest_first_ci95"]
        table.add_row(
            name,
            interval(row["ndcg@10"], row["ci95"]),
            f"{row['hr@10']:.4f}",
            interval(row["among_cold_ndcg@10"], row["among_cold_ci95"]),
            interval(row["among_cold_newest_first_ndcg@10"], newest) if newest else "–",
            f"{row['all_test_ndcg@10']:.4f}",
        )
    table.add_row("random among cold items", f"{baseline:.4f}", "", f"{baseline:.4f}", "", "")
    table.caption = f"bar: lmrec lower bound > 3 x {baseline:.4f} = {3 * baseline:.4f} → {report['passes']}"
    Console().print(table)


if __name__ == "__main__":
    main()
