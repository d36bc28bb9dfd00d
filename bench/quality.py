"""Quality benchmark on MovieLens-100K under protocol R (RecBole's) or L (LlamaRec's).

Trains each model with seeds 0..N-1 using the shipped configs, prints a table of medians with bootstrap
intervals, and writes bench/results/quality-<protocol>.json. Reference figures (RecBole measured on this
machine, published ones) are kept apart under "reference". Not a test: run it by hand.

    python bench/quality.py --protocol R --models pop,gru4rec,sasrec,bert4rec --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lmrec import api
from lmrec.data.dataset import PreparedDataset
from lmrec.evaluation.evaluator import EvalResult
from lmrec.evaluation.stats import bootstrap_ci, paired_test, seed_averaged, seed_averaged_deltas
from lmrec.registry.run import RunDir

ROOT = Path(__file__).resolve().parent
PROTOCOLS = {
    "R": {
        "prepare": lambda data: {"split": "loo", "targets": str(data / "ml-100k" / "recbole-loo-split.tsv")},
        "overrides": ["model.max_len=50", "eval.mask_history=false"],
        "reference": {
            "source": "RecBole 1.2.1 on this machine, ../shared/anchors.md (protocol R)",
            "test": {
                "recbole_sasrec": {
                    "ndcg@10": 0.0670,
                    "hr@10": 0.1442,
                    "mrr@10": 0.0438,
                    "train_seconds": 6844,
                },
                "recbole_gru4rec": {
                    "ndcg@10": 0.0694,
                    "hr@10": 0.1410,
                    "mrr@10": 0.0481,
                    "train_seconds": 3106,
                },
                "recbole_bert4rec": {
                    "ndcg@10": 0.0510,
                    "hr@10": 0.1039,
                    "mrr@10": 0.0352,
                    "train_seconds": 1107,
                },
                "recbole_pop_masked": {"ndcg@10": 0.0444, "hr@10": 0.0859, "mrr@10": 0.0319},
            },
        },
    },
    "L": {
        "prepare": lambda data: {
            "split": "loo",
            "min_user_interactions": 5,
            "min_item_interactions": 5,
            "tie_break": "item",
        },
        "overrides": ["model.max_len=200", "eval.mask_history=true"],
        "reference": {
            "source": "LlamaRec repository, media/performance.png (protocol L, published)",
            "test": {
                "published_sasrec": {"ndcg@10": 0.0522, "hr@10": 0.0993},
                "published_lrurec": {"ndcg@10": 0.0705, "hr@10": 0.1426},
                "published_llamarec": {"ndcg@10": 0.0759, "hr@10": 0.1524},
            },
        },
    },
}
METRICS = ("ndcg@10", "hr@10", "mrr@10")


def prepared(protocol: str, data_dir: Path, work: Path) -> Path:
    """Prepare ML-100K for the protocol once (reused when the options are unchanged)."""
    out = work / f"ml-100k-{protocol}"
    api.prepare("ml-100k", out, **PROTOCOLS[protocol]["prepare"](data_dir))
    return out


def train_or_resume(data: Path, run: Path, model: str, overrides: list[str], seed: int) -> Path:
    """Train `run` unless it finished already; an interrupted run is resumed."""
    if not (run / "metrics.json").is_file():
        resume = RunDir(run).last_file.is_file()
        api.train(
            data, run, model=model, overrides=overrides, seed=seed, overwrite=not resume, resume=resume, progress=False
        )
    return run


def train_seeds(model: str, data: Path, protocol: str, seeds: int, work: Path, extra: list[str]) -> list[Path]:
    """Train one model per seed; a finished run is reused and an interrupted one resumed."""
    overrides = PROTOCOLS[protocol]["overrides"] + extra
    return [
        train_or_resume(data, work / f"{protocol}-{model}-s{seed}", model, overrides, seed) for seed in range(seeds)
    ]


def summarise(runs: list[Path]) -> dict:
    """Median and 95% bootstrap interval (users resampled with their seed-averaged value) of each metric,
    plus timing medians."""
    metrics = [RunDir(r).metrics() for r in runs]
    out: dict = {"valid": {}, "test": {}}
    for split in ("valid", "test"):
        results = [EvalResult.load(RunDir(r).ranks_file(split)) for r in runs]
        for name in METRICS:
            ci = bootstrap_ci(seed_averaged(results, name))
            out[split][name] = {
                "median": statistics.median(m[split][name] for m in metrics),
                "ci95": [ci.low, ci.high],
                "per_seed": [m[split][name] for m in metrics],
            }
    for key in ("train_seconds", "seconds_per_epoch", "epochs"):
        out[key] = {"median": statistics.median(m[key] for m in metrics)}
    out["peak_rss_mb"] = {"median": statistics.median(m["peak_rss_mb"] for m in metrics)}
    return out


def paired(runs: dict[str, list[Path]], best: str) -> dict:
    """Seed-pooled paired bootstrap of per-user ΔNDCG@10 of every model against the best one."""
    out = {}
    for name, model_runs in runs.items():
        if name == best:
            continue
        pairs = [
            (EvalResult.load(RunDir(a).ranks_file("test")), EvalResult.load(RunDir(b).ranks_file("test")))
            for a, b in zip(model_runs, runs[best], strict=True)
        ]
        test = paired_test(seed_averaged_deltas(pairs, "ndcg@10"))
        out[f"{best}_vs_{name}"] = {"delta_ndcg@10": test.delta, "delta_ndcg@10_ci95": [test.low, test.high]}
    return out


def render(report: dict) -> Table:
    """The printed table: our models' medians with intervals, then the references."""
    table = Table(title=f"MovieLens-100K, protocol {report['protocol']} (full ranking, median of seeds)")
    for column in ("model", "valid ndcg@10", *(f"test {m}" for m in METRICS), "s/epoch", "train s", "epochs"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, res in report["models"].items():
        test = res["test"]
        table.add_row(
            name + (" *" if name == report["best_by_valid"] else ""),
            f"{res['valid']['ndcg@10']['median']:.4f}",
            *(f"{test[m]['median']:.4f} [{test[m]['ci95'][0]:.3f}, {test[m]['ci95'][1]:.3f}]" for m in METRICS),
            f"{res['seconds_per_epoch']['median']:.2f}",
            f"{res['train_seconds']['median']:.0f}",
            f"{res['epochs']['median']:.0f}",
        )
    for name, ref in report["reference"]["test"].items():
        table.add_row(
            f"[dim]{name}[/dim]",
            "",
            *(f"[dim]{ref[m]:.4f}[/dim]" if m in ref else "" for m in METRICS),
            "",
            f"[dim]{ref.get('train_seconds', '')}[/dim]",
            "",
        )
    table.caption = "* best by validation NDCG@10; intervals: 95% bootstrap over users, seed-averaged per user"
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), required=True)
    parser.add_argument("--models", default="pop,gru4rec,sasrec,bert4rec,multvae,lmrec")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=ROOT / "work")
    parser.add_argument("--set", action="append", default=[], help="extra config override for every model")
    args = parser.parse_args()
    data_dir = Path(os.environ.get("LMREC_DATA_DIR", ROOT.parent.parent / "shared" / "data"))
    started = time.time()
    data = prepared(args.protocol, data_dir, args.work)
    dataset = PreparedDataset.load(data)
    runs = {m: train_seeds(m, data, args.protocol, args.seeds, args.work, args.set) for m in args.models.split(",")}
    models = {name: summarise(model_runs) for name, model_runs in runs.items()}
    best = max(models, key=lambda m: models[m]["valid"]["ndcg@10"]["median"])
    report = {
        "protocol": args.protocol,
        "dataset": {"users": dataset.n_users, "items": dataset.n_items, "interactions": len(dataset.items)},
        "seeds": list(range(args.seeds)),
        "models": models,
        "best_by_valid": best,
        "paired": paired(runs, best),
        "reference": PROTOCOLS[args.protocol]["reference"],
        "wall_seconds": time.time() - started,
    }
    out = ROOT / "results" / f"quality-{args.protocol}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    console = Console()
    console.print(render(report))
    for key, value in report["paired"].items():
        lo, hi = value["delta_ndcg@10_ci95"]
        console.print(f"paired ΔNDCG@10 {key}: {value['delta_ndcg@10']:+.4f} [{lo:+.4f}, {hi:+.4f}]")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
