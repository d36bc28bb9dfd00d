"""ONNX Runtime export of SASRec on MovieLens-100K: same recommendations as torch, int8 recall, and latency.

Reuses the SASRec run of bench/explain.py (--run, default bench/work/explain/sasrec; trained there with
train.max_seconds=120 when missing) and exports it to --work/float and --work/int8 (`lmrec.export`, again each
time so the figures are of this code). For every user, the history is the whole known sequence as the service
reads it and the list is `Engine.recommend` with k = 10 and seen items excluded (the service's call, on the
service's Engine, holding the torch model or the ONNX model in its place):

- agreement: the share of users whose float ONNX top 10 equals torch's, item for item and in order (bar 0.99);
- int8 recall@10: the mean share of the float top 10 that the int8 export also lists (bar 0.95);
- latency: one user's `Engine.recommend` in process on 1 thread, the three backends in turn for each user (so
  drifts of a shared machine fall on all three alike), --passes passes over every user after a warm-up pass;
  p50 and p99 in ms and torch's p50 / p99 over each ONNX backend's; and the encoder alone (`model.hidden` of the
  window: the torch model's forward pass, or one ONNX Runtime session run).

    python bench/onnx_serving.py                                    # writes bench/results/onnx.json
    python bench/onnx_serving.py --passes 1 --results bench/work/onnx.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from rich.console import Console
from rich.table import Table

from lmrec import api
from lmrec.inference.onnx import ENCODER, with_backend
from lmrec.inference.recommender import Recommender
from lmrec.runtime import configure_threads
from lmrec.serve.engine import Engine

ROOT = Path(__file__).resolve().parent
TOP = 10
AGREEMENT_BAR, RECALL_BAR = 0.99, 0.95
BACKENDS = ("torch", "onnx float", "onnx int8")


def ensure_run(run: Path) -> Path:
    """The explain benchmark's ML-100K SASRec run, trained (120 s budget) only when missing."""
    if not (run / "metrics.json").is_file():
        data = run.parent / "ml-100k"
        if not (data / "manifest.json").is_file():
            api.prepare("ml-100k", data, overwrite=True)
        api.train(data, run, model="sasrec", overrides=["train.max_seconds=120"], overwrite=True)
    return run


def top_lists(engine: Engine, histories: list[np.ndarray]) -> list[list[int]]:
    return [[r.item for r in engine.recommend(history, TOP, exclude_seen=True)] for history in histories]


def latencies(
    engines: dict[str, Engine], histories: list[np.ndarray], passes: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Seconds of each `Engine.recommend` call, and of the encoder alone (`model.hidden` of the window), per
    backend, backends interleaved user by user."""
    times: dict[str, list[float]] = {name: [] for name in engines}
    encoder: dict[str, list[float]] = {name: [] for name in engines}
    for round_ in range(passes + 1):  # the first pass warms up and is not kept
        for history in histories:
            for name, engine in engines.items():
                start = time.perf_counter()
                engine.recommend(history, TOP, exclude_seen=True)
                middle = time.perf_counter()
                with torch.inference_mode():
                    engine.model.hidden(torch.as_tensor(history[-engine.model.max_len :])[None])
                if round_:
                    times[name].append(middle - start)
                    encoder[name].append(time.perf_counter() - middle)
    return {n: np.asarray(v) for n, v in times.items()}, {n: np.asarray(v) for n, v in encoder.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "work" / "explain" / "sasrec")
    parser.add_argument("--work", type=Path, default=ROOT / "work" / "onnx")
    parser.add_argument("--passes", type=int, default=3, help="timed passes over every user")
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "onnx.json", help="JSON to write")
    args = parser.parse_args()
    configure_threads(1)
    console = Console(width=120)
    run = ensure_run(args.run)
    manifests = {
        precision: api.export(run, args.work / precision, int8=precision == "int8", overwrite=True)
        for precision in ("float", "int8")
    }
    recommender = Recommender.load(run)
    engines = {
        "torch": Engine(recommender, "torch"),
        "onnx float": Engine(with_backend(recommender, "onnx", args.work / "float"), "onnx float"),
        "onnx int8": Engine(with_backend(recommender, "onnx", args.work / "int8"), "onnx int8"),
    }
    dataset = recommender.dataset
    histories = [dataset.sequence(user) for user in range(dataset.n_users)]
    lists = {name: top_lists(engine, histories) for name, engine in engines.items()}
    same = float(np.mean([a == b for a, b in zip(lists["onnx float"], lists["torch"], strict=True)]))
    overlap = [len(set(a) & set(b)) / TOP for a, b in zip(lists["onnx int8"], lists["onnx float"], strict=True)]
    recall = float(np.mean(overlap))
    int8_same = float(np.mean([a == b for a, b in zip(lists["onnx int8"], lists["onnx float"], strict=True)]))
    times, encoder = latencies(engines, histories, args.passes)
    latency = {
        name: {"p50_ms": float(np.percentile(t, 50) * 1e3), "p99_ms": float(np.percentile(t, 99) * 1e3),
               "mean_ms": float(t.mean() * 1e3), "calls": len(t),
               "encoder_p50_ms": float(np.percentile(encoder[name], 50) * 1e3),
               "encoder_p99_ms": float(np.percentile(encoder[name], 99) * 1e3)}
        for name, t in times.items()
    }  # fmt: skip
    for name in BACKENDS[1:]:
        latency[name]["torch_p50_over_this"] = latency["torch"]["p50_ms"] / latency[name]["p50_ms"]
        latency[name]["torch_p99_over_this"] = latency["torch"]["p99_ms"] / latency[name]["p99_ms"]

    quality = Table(title=f"ONNX export of SASRec, ML-100K, {dataset.n_users} users, top {TOP} (seen excluded)")
    for column in ("figure", "value", "bar", "pass"):
        quality.add_column(column, justify="left" if column == "figure" else "right")
    quality.add_row("float top-10 identical to torch", f"{same:.4f}", f"≥ {AGREEMENT_BAR}", str(same >= AGREEMENT_BAR))
    quality.add_row("int8 recall@10 of the float top 10", f"{recall:.4f}", f"≥ {RECALL_BAR}", str(recall >= RECALL_BAR))
    quality.add_row("int8 top-10 identical to float", f"{int8_same:.4f}", "", "")
    console.print(quality)
    speed = Table(title=f"Engine.recommend latency, 1 thread, {args.passes} passes x {len(histories)} users")
    columns = ("backend", "p50 ms", "p99 ms", "mean ms", "torch p50 / this", "torch p99 / this", "encoder p50 ms",
               "encoder p99 ms", "encoder.onnx")  # fmt: skip
    for column in columns:
        speed.add_column(column, justify="left" if column == "backend" else "right")
    sizes = {
        "float": (args.work / "float" / ENCODER).stat().st_size,
        "int8": (args.work / "int8" / ENCODER).stat().st_size,
    }
    for name in BACKENDS:
        row = latency[name]
        ratios = (
            [f"{row[k]:.2f}x" for k in ("torch_p50_over_this", "torch_p99_over_this")] if name != "torch" else ["", ""]
        )
        size = f"{sizes[name.split()[-1]] / 1e3:.0f} kB" if name != "torch" else ""
        cells = [f"{row[k]:.3f}" for k in ("p50_ms", "p99_ms", "mean_ms")]
        speed.add_row(name, *cells, *ratios, f"{row['encoder_p50_ms']:.3f}", f"{row['encoder_p99_ms']:.3f}", size)
    console.print(speed)

    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({
        "run": str(run),
        "dataset": str(dataset.path),
        "users": dataset.n_users,
        "k": TOP,
        "exclude_seen": True,
        "float_top10_identical_to_torch": same,
        "float_bar": AGREEMENT_BAR,
        "int8_recall_at_10_vs_float": recall,
        "int8_bar": RECALL_BAR,
        "int8_top10_identical_to_float": int8_same,
        "latency": latency,
        "passes": args.passes,
        "encoder_bytes": sizes,
        "export_checks": {precision: manifest["check"] for precision, manifest in manifests.items()},
        "opset": manifests["float"]["opset"],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg": os.getloadavg()},
    }, indent=2) + "\n")  # fmt: skip
    console.print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
