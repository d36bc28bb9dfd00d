"""Text-encoding benchmark: the 1,682 MovieLens-100K item texts through the default encoder, cold and cached.

Each run is a fresh child process. Its timed span starts after the imports (torch; transformers and
its auto classes, which lmrec imports lazily; lmrec) and covers building the encoder (config, tokenizer,
weight hashing) and `encode_cached` (reading the cache file, loading the weights when anything must be
encoded, encoding, writing the cache), nothing else; Python start-up and imports are reported apart, as
is each child's whole wall time. Cold runs start from an empty cache folder, cached runs reuse the folder
of the last cold run. Both backends run: torch (`TextEncoder`, the default) and, when installed, ONNX
Runtime (`OnnxTextEncoder`), whose first run also exports the model and is reported on its own. Bars
(torch, 1 thread, median timed span): cold <= 15 s, cached < 1 s. Prints a table and writes
bench/results/encode.json. Not a test: run it by hand.

    python bench/encode.py                    # 3 cold + 3 cached runs per backend, at 1 and at 2 threads
    python bench/encode.py --threads 1 --runs 1 --backends torch
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

STARTED = time.perf_counter()  # child runs count their imports from here
ROOT = Path(__file__).resolve().parent
COLD_BAR_S = 15.0
CACHED_BAR_S = 1.0
TEMPLATE = "{movie_title} ({release_year}) | {class}"
BACKENDS = ("torch", "onnx")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; the defaults are the benchmark's official settings."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = Path(os.environ.get("LMREC_DATA_DIR") or ROOT.parent.parent / "shared" / "data")
    parser.add_argument("--data", type=Path, default=default_data, help="folder holding ml-100k/ml-100k.item")
    parser.add_argument("--work", type=Path, help="folder for the caches (default: a temporary folder)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each kind")
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts to try")
    parser.add_argument("--backends", default="torch,onnx", help="torch and/or onnx (onnx is skipped if absent)")
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "encode.json")
    parser.add_argument("--child", choices=["export", "cold", "cached"], help=argparse.SUPPRESS)
    parser.add_argument("--backend", choices=BACKENDS, default="torch", help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--onnx-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def item_texts(path: Path) -> list[str]:
    """The rendered text of every item of a RecBole atomic `.item` file, in file order."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [field.split(":")[0] for field in next(rows)]
        return [TEMPLATE.format_map(dict(zip(header, row, strict=True))) for row in rows]


def child(args: argparse.Namespace) -> None:
    """One timed run in this process; prints its measurements as JSON."""
    from lmrec.runtime import configure_threads

    configure_threads(int(args.threads))
    import transformers.models.auto.modeling_auto  # noqa: F401 (lmrec imports it lazily; count it as an import)
    from transformers import AutoConfig, AutoModel, AutoTokenizer  # noqa: F401

    from lmrec.text import TextEncoder, encode_cached

    if args.backend == "onnx":
        import onnxruntime  # noqa: F401

        from lmrec.text.onnx import OnnxTextEncoder

    texts = item_texts(args.data / "ml-100k" / "ml-100k.item")
    imported = time.perf_counter()
    encoder = TextEncoder() if args.backend == "torch" else OnnxTextEncoder(onnx_dir=args.onnx_dir)
    built = time.perf_counter()
    vectors = encode_cached(encoder, texts, args.cache)
    done = time.perf_counter()
    stats = encoder.last_stats
    result = {
        "kind": args.child,
        "backend": args.backend,
        "texts": len(texts),
        "imports_s": imported - STARTED,
        "encoder_s": built - imported,
        "encode_s": done - built,
        "timed_s": done - imported,
        "from_cache": stats.cached,
        "truncated": stats.truncated,
        "max_length": stats.max_length,
        "shape": list(vectors.shape),
        "vectors": vectors.tolist() if args.child == "cold" else None,
        "vectors_sha256": hashlib.sha256(vectors.tobytes()).hexdigest(),
    }
    print(json.dumps(result))


def run_child(args: argparse.Namespace, kind: str, backend: str, threads: int, work: Path) -> dict:
    """Run one child and return its measurements plus its whole wall time."""
    cache = work / f"{backend}-threads{threads}"
    if kind != "cached":
        shutil.rmtree(cache, ignore_errors=True)
    if kind == "export":
        shutil.rmtree(work / "onnx", ignore_errors=True)
    command = [sys.executable, __file__, "--child", kind, "--backend", backend, "--threads", str(threads)]
    command += ["--cache", str(cache), "--onnx-dir", str(work / "onnx"), "--data", str(args.data)]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "LMREC_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{kind} {backend} run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "threads": threads, "process_wall_s": wall}


def summarise(runs: list[dict]) -> dict:
    """Medians of one (kind, backend, threads) group."""
    keys = ("imports_s", "encoder_s", "encode_s", "timed_s", "process_wall_s")
    return {key: statistics.median(run[key] for run in runs) for key in keys} | {"runs": len(runs)}


def report(groups: dict[str, dict]) -> None:
    """Print the medians as a table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Encoding the 1,682 MovieLens-100K item texts (medians; seconds)")
    for column in ("run", "backend", "threads", "timed", "encoder", "encode_cached", "imports", "process wall"):
        table.add_column(column, justify="right")
    for name, group in groups.items():
        keys = ("timed_s", "encoder_s", "encode_s", "imports_s", "process_wall_s")
        table.add_row(*name.split("@"), *(f"{group[key]:.2f}" for key in keys))
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    with tempfile.TemporaryDirectory(prefix="lmrec-encode-") as scratch:
        return measure(args, args.work or Path(scratch))


def measure_backend(args: argparse.Namespace, backend: str, work: Path) -> tuple[list[dict], dict[str, dict]]:
    """Cold and cached runs of one backend at each thread count (after a one-off export for onnx)."""
    runs: list[dict] = []
    groups: dict[str, dict] = {}
    if backend == "onnx":
        export = run_child(args, "export", backend, 1, work)
        runs.append(export)
        groups["export+cold@onnx@1"] = summarise([export])
    for threads in (int(t) for t in args.threads.split(",")):
        cold = [run_child(args, "cold", backend, threads, work) for _ in range(args.runs)]
        cached = [run_child(args, "cached", backend, threads, work) for _ in range(args.runs)]
        if {run["vectors_sha256"] for run in cold + cached} != {cold[0]["vectors_sha256"]}:
            raise SystemExit(f"{backend} vectors differ between runs at {threads} threads")
        if any(run["from_cache"] != run["texts"] for run in cached):
            raise SystemExit(f"a cached {backend} run encoded texts again")
        runs += cold + cached
        groups[f"cold@{backend}@{threads}"] = summarise(cold)
        groups[f"cached@{backend}@{threads}"] = summarise(cached)
    return runs, groups


def max_abs_diff(runs: list[dict]) -> float | None:
    """Largest difference between the torch and onnx vectors of the first cold run of each."""
    import numpy as np

    firsts = {}
    for run in runs:
        if run["kind"] == "cold":
            firsts.setdefault(run["backend"], np.asarray(run["vectors"], dtype=np.float32))
    return float(np.abs(firsts["torch"] - firsts["onnx"]).max()) if len(firsts) == 2 else None


def measure(args: argparse.Namespace, work: Path) -> int:
    """All runs, the table, the JSON and the verdict (exit status 1 if a bar is missed)."""
    from lmrec.atomic import atomic_write_json
    from lmrec.text.onnx import onnx_available

    runs: list[dict] = []
    groups: dict[str, dict] = {}
    for backend in args.backends.split(","):
        if backend == "onnx" and not onnx_available():
            print("onnxruntime or onnxscript is not installed: skipping the onnx backend")
            continue
        backend_runs, backend_groups = measure_backend(args, backend, work)
        runs += backend_runs
        groups |= backend_groups
    report(groups)
    diff = max_abs_diff(runs)
    for run in runs:
        run.pop("vectors")
    bars = {
        "cold_s_torch_1_thread": {"bar": COLD_BAR_S, "median": groups.get("cold@torch@1", {}).get("timed_s")},
        "cached_s_torch_1_thread": {"bar": CACHED_BAR_S, "median": groups.get("cached@torch@1", {}).get("timed_s")},
    }
    for bar in bars.values():
        bar["passed"] = bar["median"] is not None and bar["median"] <= bar["bar"]
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "texts": runs[0]["texts"],
        "template": TEMPLATE,
        "max_length": runs[0]["max_length"],
        "truncated": runs[0]["truncated"],
        "timed_span": "TextEncoder() + encode_cached() in the child, after its imports (imports_s) and before exit",
        "onnx_vs_torch_max_abs_diff": diff,
        "medians": groups,
        "bars": bars,
        "runs": runs,
    }
    atomic_write_json(args.results, result)
    print(f"wrote {args.results}; onnx vs torch max abs diff: {diff}")
    for name, bar in bars.items():
        print(f"{name}: median {bar['median']} s, bar {bar['bar']} s: {'passed' if bar['passed'] else 'FAILED'}")
    return 0 if all(bar["passed"] for bar in bars.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
