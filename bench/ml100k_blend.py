"""lmrec with item-kNN votes (model.neighbourhood_weight) on MovieLens-100K, protocol R, beside plain lmrec.

Every choice is made on validation: itemknn's vote settings (MiniLM text, coordinate ascent over
industrial.py's grid), then the blend weight over the plain lmrec runs of `--choose-seeds` (the votes never
enter the loss, so those Transformers are what the blend trains too); then each seed is trained with that
weight and both models are compared on test, paired per user. Writes bench/results/ml100k_blend.json. Not a
test: run it by hand.

    python bench/ml100k_blend.py --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from industrial import KNN_GRID, blend_validation, coordinate_ascent
from lmrec import api
from lmrec.data.dataset import PreparedDataset
from lmrec.evaluation.evaluator import EvalResult, Evaluator
from lmrec.evaluation.stats import paired_test, seed_averaged_deltas
from lmrec.models.base import build_model
from lmrec.registry.run import RunDir
from quality import PROTOCOLS, prepared, train_or_resume

ROOT = Path(__file__).resolve().parent
WEIGHTS = [0.1, 0.2, 0.3, 0.5, 0.7, 1, 2, 3, 5]  # MovieLens' log-probabilities are flatter than Amazon's


def tune_votes(dataset: PreparedDataset, valid: Evaluator, sequences: list[torch.Tensor], saved: Path) -> list[str]:
    """itemknn's settings with MiniLM text (lmrec's own vectors) by coordinate ascent on validation NDCG@10,
    as `model.neighbourhood.*` overrides; kept in `saved`."""
    if saved.is_file():
        return json.loads(saved.read_text())["overrides"]
    text = None

    def score(params: dict) -> float:
        nonlocal text
        model = build_model("itemknn", dataset.n_items, {"max_len": 50, **params})
        model.fit_statistics(sequences)
        text = text if text is not None else api.item_text_table(model.config, dataset)[0]
        model.set_item_text(text)
        return valid(model.eval()).metrics["ndcg@10"]

    best, value = coordinate_ascent(score, list(KNN_GRID), {"text_weight": 3.0})
    overrides = [f"model.neighbourhood.{k}={v}" for k, v in best.items()]
    saved.write_text(json.dumps({"overrides": overrides, "valid_ndcg@10": value}, indent=2) + "\n")
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--choose-seeds", type=int, default=2, help="plain lmrec seeds the blend weight is chosen on")
    parser.add_argument("--work", type=Path, default=ROOT / "work")
    args = parser.parse_args()
    data_dir = Path(os.environ.get("LMREC_DATA_DIR", ROOT.parent.parent / "shared" / "data"))
    data = prepared("R", data_dir, args.work)
    dataset = PreparedDataset.load(data)
    sequences = [torch.from_numpy(dataset.train_sequence(u)) for u in range(dataset.n_users)]
    valid = Evaluator(dataset, "valid", mask_history=False)  # protocol R: history not masked
    base = PROTOCOLS["R"]["overrides"]
    plain = [train_or_resume(data, args.work / f"R-lmrec-s{s}", "lmrec", base, s) for s in range(args.seeds)]
    votes = tune_votes(dataset, valid, sequences, args.work / "ml-tune-knn.json")
    weight, values = blend_validation(plain[: args.choose_seeds], data, votes, valid, WEIGHTS)
    chosen = {"weight": weight, "valid_ndcg@10": {str(w): v for w, v in values.items()}}
    blend_settings = [*base, *votes, f"model.neighbourhood_weight={weight}"]
    blend = [
        train_or_resume(data, args.work / f"R-lmrec-knn-s{s}", "lmrec", blend_settings, s) for s in range(args.seeds)
    ]
    report: dict = {"protocol": "R", "votes": votes, "blend": chosen, "models": {}}
    for name, runs in (("lmrec", plain), ("lmrec with kNN votes", blend)):
        metrics = [RunDir(r).metrics() for r in runs]
        report["models"][name] = {
            key: [m[split]["ndcg@10"] for m in metrics]
            for key, split in (("valid_ndcg@10", "valid"), ("test_ndcg@10", "test"))
        } | {"train_seconds": [m["train_seconds"] for m in metrics], "epochs": [m["epochs"] for m in metrics]}
        print(name, {k: [round(x, 4) for x in v] for k, v in report["models"][name].items()})
    pairs = [(EvalResult.load(RunDir(a).ranks_file("test")), EvalResult.load(RunDir(b).ranks_file("test")))
             for a, b in zip(plain, blend, strict=True)]  # fmt: skip
    test = paired_test(seed_averaged_deltas(pairs, "ndcg@10"))
    report["paired_test_ndcg@10"] = {"delta": test.delta, "ci95": [test.low, test.high], "p": test.p_value}
    print(
        f"blend weight {chosen['weight']}; test ΔNDCG@10 blend − lmrec {test.delta:+.4f} "
        f"[{test.low:+.4f}, {test.high:+.4f}]"
    )
    out = ROOT / "results" / "ml100k_blend.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
