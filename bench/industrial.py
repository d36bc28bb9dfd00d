"""Amazon Industrial and Scientific (MiniOneRec's benchmark files): our models beside the published table.

Trains each variant with seeds 0..N-1 on the given examples, scores exactly the 4,533 test examples over
all 3,686 items (history not masked, MiniOneRec's protocol) and prints HR@5, NDCG@5, HR@10, NDCG@10 with
95% intervals (users resampled), training seconds and epochs, the published figures, paired tests, the
long-tail segments and the cold items. Writes bench/results/industrial.json. Not a test: run it by hand.

    python bench/industrial.py --variants pop,sasrec,gru4rec,lmrec-minilm,lmrec-smollm2,lmrec-notext
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lmrec import api
from lmrec.data.dataset import TRAIN, PreparedDataset
from lmrec.evaluation.evaluator import EvalResult, Evaluator
from lmrec.evaluation.stats import bootstrap_ci, paired_test, seed_averaged, seed_averaged_deltas
from lmrec.registry.run import RunDir
from quality import train_or_resume

ROOT = Path(__file__).resolve().parent
METRICS = ("hr@5", "ndcg@5", "hr@10", "ndcg@10")
# Each variant: (model, overrides). The lmrec variants differ only in what an item's text is read with.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "pop": ("pop", []),
    "sasrec": ("sasrec", []),
    "gru4rec": ("gru4rec", []),
    "lmrec-minilm": ("lmrec", ["model.encoder=null", "model.text_max_length=128"]),
    "lmrec-smollm2": (
        "lmrec",
        ["model.encoder=smollm2-135m", "model.text_max_length=128", "model.text_pooling=mean"],
    ),
    "lmrec-notext": ("lmrec", ["model.use_text=false"]),
    "itemknn": ("itemknn", []),
    "itemknn-minilm": ("itemknn", ["model.encoder=null", "model.text_max_length=128"]),
    "itemknn-smollm2": (
        "itemknn",
        [
            "model.encoder=smollm2-135m",
            "model.text_max_length=128",
            "model.text_pooling=mean",
            "model.text_whiten=true",
        ],
    ),
}
# lmrec blended with item-kNN votes (model.neighbourhood_weight): variant -> (its lmrec variant, the itemknn
# variant whose votes, tuned on validation, it adds). The blend weight is chosen on validation too.
BLENDS: dict[str, tuple[str, str]] = {
    "lmrec-minilm-knn": ("lmrec-minilm", "itemknn-minilm"),
    "lmrec-smollm2-knn": ("lmrec-smollm2", "itemknn-smollm2"),
    "lmrec-notext-knn": ("lmrec-notext", "itemknn"),
}
VARIANTS.update({name: VARIANTS[neural] for name, (neural, _) in BLENDS.items()})
ID_ONLY = ("pop", "sasrec", "gru4rec", "lmrec-notext", "itemknn", "lmrec-notext-knn")
# itemknn's weights are settings: chosen by coordinate ascent on validation NDCG@10 over this grid.
KNN_GRID: dict[str, list] = {
    "recent": [1, 2, 3, 4, 5, 7, 10],
    "decay": [0.2, 0.3, 0.4, 0.5, 0.7],
    "window": [1, 2, 3, 5],
    "cooccurrence_weight": [0, 0.25, 0.5, 1, 2],
    "popularity_weight": [0, 0.05, 0.1, 0.2, 0.4],
    "history_weight": [-3, -2, -1, -0.5, 0],
    "text_weight": [1, 2, 3, 4, 6, 8],
}
PUBLISHED = {  # ../shared/data/amazon-industrial/SOURCE.md: MiniOneRec's main-results table, same test examples
    "GRU4Rec": (0.0774, 0.0598, 0.0999, 0.0669),
    "Caser": (0.0717, 0.0555, 0.0942, 0.0628),
    "SASRec": (0.0909, 0.0748, 0.1088, 0.0806),
    "HSTU": (0.1037, 0.0918, 0.1163, 0.0958),
    "TIGER": (0.1010, 0.0807, 0.1321, 0.0908),
    "LC-Rec": (0.1057, 0.0862, 0.1332, 0.0952),
    "BIGRec": (0.1092, 0.0907, 0.1370, 0.0997),
    "D3": (0.1213, 0.0989, 0.1500, 0.1082),
    "S-DPO": (0.1238, 0.0991, 0.1524, 0.1082),
    "MiniOneRec": (0.1321, 0.1084, 0.1586, 0.1167),
}
# lmrec's neighbourhood_weight: chosen on the validation NDCG@10 of the trained lmrec-minilm seeds.
BLEND_GRID = [0.5, 1, 2, 3, 5, 7, 10, 15, 20, 30]
# Further paired comparisons (first, second): the encoders under equal settings, and what each part of a blend adds.
COMPARED = [
    ("lmrec-minilm", "lmrec-smollm2"),
    ("itemknn-minilm", "itemknn-smollm2"),
    ("lmrec-minilm-knn", "lmrec-smollm2-knn"),
    ("lmrec-notext-knn", "lmrec-minilm-knn"),
    ("lmrec-notext-knn", "lmrec-smollm2-knn"),
    ("itemknn-minilm", "lmrec-minilm-knn"),
    ("lmrec-minilm", "lmrec-minilm-knn"),
]
TAIL_COUNT = 5  # a long-tail target occurs fewer than this many times as a training target


def coordinate_ascent(score: Callable[[dict], float], keys: list[str], start: dict) -> tuple[dict, float]:
    """The settings over KNN_GRID's `keys` that `score` rates best, one key at a time from `start` (3 sweeps at
    most, stopping early when a sweep changes nothing), and their score."""
    best, value = start, score(start)
    for _ in range(3):
        improved = False
        for key in keys:
            for option in KNN_GRID[key]:
                trial = score({**best, key: option})
                if trial > value + 1e-6:
                    best, value, improved = {**best, key: option}, trial, True
        if not improved:
            break
    return best, value


def tune_knn(variant: str, data: Path, work: Path) -> list[str]:
    """The itemknn settings of `variant` with the best validation NDCG@10 (coordinate ascent, 3 sweeps at
    most), kept in WORK/tune-VARIANT.json so that a rerun reuses them."""
    saved = work / f"tune-{variant}.json"
    if saved.is_file():
        return json.loads(saved.read_text())["overrides"]
    import torch

    from lmrec.config import build_config
    from lmrec.models.base import build_model

    dataset = PreparedDataset.load(data)
    base = {k: v for k, v in build_config("itemknn", overrides=VARIANTS[variant][1]).model.items() if k != "name"}
    sequences = [torch.from_numpy(dataset.train_sequence(u)) for u in range(dataset.n_users)]
    evaluator = Evaluator(dataset, "valid")
    keys = [k for k in KNN_GRID if k != "text_weight" or variant != "itemknn"]
    text = None

    def score(params: dict) -> float:
        nonlocal text
        model = build_model("itemknn", dataset.n_items, {**base, **params})
        model.fit_statistics(sequences)
        if model.uses_item_text:
            text = text if text is not None else api.item_text_table(model.config, dataset)[0]
            model.set_item_text(text)
        return evaluator(model.eval()).metrics["ndcg@10"]

    best, value = coordinate_ascent(score, keys, {"text_weight": 3.0} if "text_weight" in keys else {})
    overrides = [f"model.{k}={v}" for k, v in best.items()]
    saved.write_text(json.dumps({"overrides": overrides, "valid_ndcg@10": value}, indent=2) + "\n")
    return overrides


def blend_validation(
    runs: list[Path], data: Path, votes: list[str], evaluator: Evaluator, weights: list[float]
) -> tuple[float, dict[float, list[float]]]:
    """Validation NDCG@10 of each trained lmrec run blended with `votes` at each of `weights` (the votes never
    enter the loss, so the run's Transformer is what a blend trains too), and the weight with the best median."""
    import torch

    from lmrec.config import parse_overrides
    from lmrec.models.base import build_model

    dataset = evaluator.dataset
    sequences = [torch.from_numpy(dataset.train_sequence(u)) for u in range(dataset.n_users)]
    values: dict[float, list[float]] = {weight: [] for weight in weights}
    for run in runs:
        neural = api.Recommender.load(run, data).model
        params = {**neural.config.model_dump(), **parse_overrides(votes)["model"], "neighbourhood_weight": 1.0}
        model = build_model("lmrec", dataset.n_items, params)
        model.load_state_dict(neural.state_dict(), strict=False)
        model.fit_statistics(sequences)
        if model.uses_item_text:
            model.set_item_text(neural.text_emb)
        for weight in weights:
            model.cfg.neighbourhood_weight = weight
            values[weight].append(evaluator(model.eval()).metrics["ndcg@10"])
    return max(weights, key=lambda weight: statistics.median(values[weight])), values


def tune_blend(variant: str, data: Path, work: Path, seeds: int, max_seconds: int) -> list[str]:
    """A blend's settings: its itemknn variant's votes (tuned on validation) and the neighbourhood_weight with
    the best median validation NDCG@10 over its lmrec variant's seeds, whose Transformers are what the blend
    trains too (the votes never enter the loss); kept in WORK/tune-VARIANT.json."""
    saved = work / f"tune-{variant}.json"
    if saved.is_file():
        return json.loads(saved.read_text())["overrides"]
    from lmrec.models.itemknn import VoteConfig

    neural_variant, knn = BLENDS[variant]
    knn_settings = [*VARIANTS[knn][1], *tune_knn(knn, data, work)]
    votes = [
        o.replace("model.", "model.neighbourhood.", 1)
        for o in knn_settings
        if o.split("=")[0].removeprefix("model.") in VoteConfig.model_fields
    ]
    neural = train_seeds(neural_variant, data, seeds, work, max_seconds, [])
    best, values = blend_validation(neural, data, votes, Evaluator(PreparedDataset.load(data), "valid"), BLEND_GRID)
    overrides = [*votes, f"model.neighbourhood_weight={best}"]
    saved.write_text(json.dumps({"overrides": overrides, "valid_ndcg@10": values}, indent=2) + "\n")
    return overrides


def variant_overrides(
    variant: str, data: Path, work: Path, seeds: int, max_seconds: int, extra: list[str]
) -> list[str]:
    """The settings of `variant`'s runs: its own, those tuned on validation, the budget and `extra`."""
    overrides = VARIANTS[variant][1]
    if VARIANTS[variant][0] == "itemknn":
        overrides = [*overrides, *tune_knn(variant, data, work)]
    if variant in BLENDS:
        overrides = [*overrides, *tune_blend(variant, data, work, seeds, max_seconds)]
    return [*overrides, f"train.max_seconds={max_seconds}", *extra]


def train_seeds(variant: str, data: Path, seeds: int, work: Path, max_seconds: int, extra: list[str]) -> list[Path]:
    """Train one run per seed (a finished run is reused, an interrupted one resumed)."""
    overrides = variant_overrides(variant, data, work, seeds, max_seconds, extra)
    return [
        train_or_resume(data, work / f"industrial-{variant}-s{seed}", VARIANTS[variant][0], overrides, seed)
        for seed in range(seeds)
    ]


def segments(dataset: PreparedDataset, targets: np.ndarray) -> dict[str, np.ndarray]:
    """Masks of the test examples in each segment: all, long tail (target trained < 5 times), cold (never seen).

    A training target is every training event but each user's first (the given training examples' targets);
    a cold item occurs nowhere in training, neither as a target nor in a history.
    """
    train = dataset.split == TRAIN
    seen = np.bincount(dataset.items[train], minlength=dataset.n_items + 1)
    first = dataset.items[dataset.offsets[:-1][dataset.train_lengths > 0]]
    as_target = seen - np.bincount(first, minlength=dataset.n_items + 1)
    return {"all": np.ones(len(targets), bool), "tail": as_target[targets] < TAIL_COUNT, "cold": seen[targets] == 0}


def interval(values: np.ndarray, users: np.ndarray) -> dict:
    """Mean and 95% cluster-bootstrap interval."""
    ci = bootstrap_ci(values, groups=users)
    return {"mean": ci.mean, "ci95": [ci.low, ci.high]}


def summarise(runs: list[Path], masks: dict[str, np.ndarray]) -> dict:
    """Median and seed-averaged interval of each metric on test, per segment, plus validation and timing."""
    metrics = [RunDir(r).metrics() for r in runs]
    results = [EvalResult.load(RunDir(r).ranks_file("test")) for r in runs]
    users = results[0].users
    out: dict = {
        "valid_ndcg@10": {
            "median": statistics.median(m["valid"]["ndcg@10"] for m in metrics),
            "per_seed": [m["valid"]["ndcg@10"] for m in metrics],
        },
        "test": {},
        "segments": {},
    }
    for name in METRICS:
        out["test"][name] = {
            "median": statistics.median(m["test"][name] for m in metrics),
            "per_seed": [m["test"][name] for m in metrics],
            **interval(seed_averaged(results, name), users),
        }
    per_example = seed_averaged(results, "ndcg@10")
    for segment, mask in masks.items():
        out["segments"][segment] = {"examples": int(mask.sum()), **interval(per_example[mask], users[mask])}
    for key in ("train_seconds", "epochs"):
        out[key] = {"median": statistics.median(m[key] for m in metrics), "per_seed": [m[key] for m in metrics]}
    return out


def paired(first: list[Path], second: list[Path], masks: dict[str, np.ndarray]) -> dict:
    """Seed-averaged per-example ΔNDCG@10 of `second` minus `first`, per segment, users resampled."""
    pairs = [
        (EvalResult.load(RunDir(a).ranks_file("test")), EvalResult.load(RunDir(b).ranks_file("test")))
        for a, b in zip(first, second, strict=True)
    ]
    deltas = seed_averaged_deltas(pairs, "ndcg@10")
    users = pairs[0][0].users
    out = {}
    for segment, mask in masks.items():
        test = paired_test(deltas[mask], groups=users[mask])
        out[segment] = {"delta": test.delta, "ci95": [test.low, test.high], "p": test.p_value}
    return out


def cold_ranking(runs: list[Path], data: Path, dataset: PreparedDataset, mask: np.ndarray) -> dict:
    """NDCG@10 of the cold test targets ranked among the cold items only, against a random order of them."""
    evaluator = Evaluator(dataset, "test")
    targets = evaluator.targets.item
    cold_items = np.unique(targets[mask])
    # A random order puts the target at each of the M places with chance 1/M.
    random_ndcg = float(sum(1 / np.log2(r + 2) for r in range(min(10, cold_items.size))) / cold_items.size)
    per_seed = []
    for run in runs:
        model = api.Recommender.load(run, data).model
        scores = evaluator.candidate_scores(model, np.tile(cold_items, (len(targets), 1)))[mask]
        own = scores[np.arange(mask.sum()), np.searchsorted(cold_items, targets[mask])]
        # Ties are broken by item id, as the evaluator does: an equal score never lifts the target.
        ahead = (scores > own[:, None]) | ((scores == own[:, None]) & (cold_items[None, :] < targets[mask][:, None]))
        ranks = ahead.sum(1)
        per_seed.append(np.where(ranks < 10, 1 / np.log2(ranks + 2), 0.0))
    values = np.mean(per_seed, axis=0)
    ci = bootstrap_ci(values, groups=evaluator.targets.user[mask])
    return {
        "cold_items": int(cold_items.size),
        "examples": int(mask.sum()),
        "ndcg@10": {"mean": ci.mean, "ci95": [ci.low, ci.high]},
        "random_ndcg@10": random_ndcg,
        "ratio_to_random": ci.mean / random_ndcg,
    }


def report_table(report: dict) -> str:
    """The printed table: our medians with intervals, then the published figures (same test examples)."""
    header = f"{'model':<20}{'valid N@10':>11}" + "".join(f"{m:>22}" for m in METRICS) + f"{'train s':>9}{'epochs':>7}"
    lines = [
        "Amazon Industrial and Scientific, 4,533 test examples, all 3,686 items, history not masked",
        "median of seeds [95% interval of the seed-averaged mean, users resampled]",
        header,
    ]
    for name, res in report["models"].items():
        cells = "".join(
            f"{res['test'][m]['median']:>8.4f} [{res['test'][m]['ci95'][0]:.3f},{res['test'][m]['ci95'][1]:.3f}]"
            for m in METRICS
        )
        mark = " *" if name == report["best_id_only"] else ""
        lines.append(
            f"{name + mark:<20}{res['valid_ndcg@10']['median']:>11.4f}{cells}"
            f"{res['train_seconds']['median']:>9.0f}{res['epochs']['median']:>7.0f}"
        )
    lines.append("published (MiniOneRec's table):")
    for name, values in PUBLISHED.items():
        lines.append(f"{name:<20}{'':>11}" + "".join(f"{v:>22.4f}" for v in values))
    lines.append("* best ID-only model by validation NDCG@10")
    return "\n".join(lines)


def report_comparisons(report: dict) -> str:
    """Paired ΔNDCG@10 lines, segments and the cold-item ranking."""
    lines = []
    for name, segs in report["paired"].items():
        for segment, test in segs.items():
            lo, hi = test["ci95"]
            lines.append(f"ΔNDCG@10 {name} [{segment}]: {test['delta']:+.4f} [{lo:+.4f}, {hi:+.4f}] p={test['p']:.3f}")
    for name, res in report["models"].items():
        cells = ", ".join(
            f"{seg} ({s['examples']}): {s['mean']:.4f} [{s['ci95'][0]:.4f}, {s['ci95'][1]:.4f}]"
            for seg, s in res["segments"].items()
        )
        lines.append(f"NDCG@10 by segment, {name}: {cells}")
    for name, cold in report["cold_ranking"].items():
        lo, hi = cold["ndcg@10"]["ci95"]
        lines.append(
            f"cold targets among the {cold['cold_items']} cold items, {name}: NDCG@10 {cold['ndcg@10']['mean']:.4f} "
            f"[{lo:.4f}, {hi:.4f}], random order {cold['random_ndcg@10']:.4f}, ratio {cold['ratio_to_random']:.1f}x"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-seconds", type=int, default=1800, help="training budget of each run")
    parser.add_argument("--work", type=Path, default=ROOT / "work")
    parser.add_argument("--set", action="append", default=[], help="extra config override for every run")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    data_dir = Path(os.environ.get("LMREC_DATA_DIR", ROOT.parent.parent / "shared" / "data"))
    started = time.time()
    data = args.work / "amazon-industrial"
    api.prepare(str(data_dir / "amazon-industrial"), data, split="given")
    dataset = PreparedDataset.load(data)
    runs = {v: train_seeds(v, data, args.seeds, args.work, args.max_seconds, args.set) for v in variants}
    first = EvalResult.load(RunDir(runs[variants[0]][0]).ranks_file("test"))
    masks = segments(dataset, first.items)
    models = {name: summarise(model_runs, masks) for name, model_runs in runs.items()}
    id_only = [v for v in variants if v in ID_ONLY]
    best_id = max(id_only, key=lambda v: models[v]["valid_ndcg@10"]["median"]) if id_only else None
    text = [v for v in variants if v not in ID_ONLY]
    best_text = max(text, key=lambda v: models[v]["valid_ndcg@10"]["median"]) if text else None
    comparisons = {}
    for name in text:
        for base in {best_id, "sasrec", "lmrec-notext"} & set(variants) - {None}:
            comparisons[f"{name} - {base}"] = paired(runs[base], runs[name], masks)
    for base, name in COMPARED:
        if {base, name} <= set(variants):
            comparisons[f"{name} - {base}"] = paired(runs[base], runs[name], masks)
    report = {
        "dataset": {"users": dataset.n_users, "items": dataset.n_items, "test_examples": len(first)},
        "protocol": first.protocol_info(),
        "seeds": list(range(args.seeds)),
        "max_seconds": args.max_seconds,
        "models": models,
        "best_id_only": best_id,
        "best_text": best_text,
        "paired": comparisons,
        "cold_ranking": {v: cold_ranking(runs[v], data, dataset, masks["cold"]) for v in variants if v != "pop"},
        "published": {name: dict(zip(METRICS, values, strict=True)) for name, values in PUBLISHED.items()},
        "wall_seconds": time.time() - started,
    }
    out = ROOT / "results" / "industrial.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(report_table(report))
    print(report_comparisons(report))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
