"""Text-encoding benchmark: a catalogue's item texts through a text encoder, cold and cached.

The official runs: the 1,682 MovieLens-100K item texts through the default encoder (all-MiniLM-L6-v2, with
its bars), and the 3,686 Amazon Industrial and Scientific products (title, brand and description, the
description's list-looking string joined; `--dataset amazon-industrial`) through a decoder LLM
(`--encoder smollm2-135m`). A decoder is slow on 2 cores, so `--subset N` times the cold runs on a
seeded sample of N texts and adds `--full-runs` cold runs of the whole catalogue, whose cache the cached
runs then reuse.

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
    python bench/encode.py --dataset amazon-industrial --encoder smollm2-135m --max-length 128 --pooling last \
        --threads 1 --subset 368 --full-runs 1      # writes bench/results/encode-amazon-industrial-smollm2-135m.json
"""

from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import json
import os
import platform
import random
import re
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
TEMPLATES = {
    "ml-100k": "{movie_title} ({release_year}) | {class}",
    "amazon-industrial": "{title} | {brand} | {description}",
}
BACKENDS = ("torch", "onnx")
KINDS = ("export", "cold", "full", "cached")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; the defaults are the benchmark's official settings."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = Path(os.environ.get("LMREC_DATA_DIR") or ROOT.parent.parent / "shared" / "data")
    parser.add_argument("--data", type=Path, default=default_data, help="folder holding the dataset folders")
    parser.add_argument("--dataset", choices=sorted(TEMPLATES), default="ml-100k", help="whose item texts")
    parser.add_argument("--encoder", help="model setting (a folder, a GGUF file, smollm2-135m); default MiniLM-L6")
    parser.add_argument("--pooling", default="mean", help="mean, last or prompt")
    parser.add_argument("--max-length", type=int, default=64, help="token limit per text")
    parser.add_argument("--subset", type=int, default=0, help="cold runs on a seeded sample of this many texts")
    parser.add_argument("--full-runs", type=int, default=1, help="with --subset: cold runs of every text")
    parser.add_argument("--work", type=Path, help="folder for the caches (default: a temporary folder)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each kind")
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts to try")
    parser.add_argument("--backends", default="torch,onnx", help="torch and/or onnx (onnx is skipped if absent)")
    parser.add_argument("--results", type=Path, help="default: bench/results/encode[-DATASET-ENCODER].json")
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--backend", choices=BACKENDS, default="torch", help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--onnx-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sample", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.subset < 0 or args.full_runs < 1:
        parser.error("--runs and --full-runs must be at least 1, --subset at least 0")
    if args.results is None:
        official = args.dataset == "ml-100k" and args.encoder is None
        name = "encode" if official else f"encode-{args.dataset}-{Path(args.encoder or 'minilm-l6').name}"
        args.results = ROOT / "results" / f"{name}.json"
    return args


def movielens_texts(path: Path) -> list[str]:
    """The rendered text of every item of a RecBole atomic `.item` file, in file order."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [field.split(":")[0] for field in next(rows)]
        return [TEMPLATES["ml-100k"].format_map(dict(zip(header, row, strict=True))) for row in rows]


def joined_description(text: str) -> str:
    """A description stored as a Python-list-looking string ("['…', '…']"), its parts joined by spaces.

    A simple cleaning for timing only: strings that are not valid literals are split at "', '" instead.
    """
    if not text.startswith("["):
        return text
    try:
        parts = ast.literal_eval(text)
    except (SyntaxError, ValueError):
        parts = text.strip("[]").strip("'\"").split("', '")
    return re.sub(r"\s+", " ", " ".join(str(part) for part in parts)).strip()


def industrial_texts(path: Path) -> list[str]:
    """Title, brand and description of every product of MiniOneRec's `item.json`, in id order (empty parts left out)."""
    items = json.loads(path.read_text(encoding="utf-8"))
    texts = []
    for key in sorted(items, key=int):
        item = items[key]
        parts = [item.get("title") or "", item.get("brand") or "", joined_description(item.get("description") or "")]
        texts.append(" | ".join(part.strip() for part in parts if part.strip()))
    return texts


def catalogue_texts(data: Path, dataset: str) -> list[str]:
    """The item texts of one benchmark catalogue."""
    if dataset == "ml-100k":
        return movielens_texts(data / "ml-100k" / "ml-100k.item")
    return industrial_texts(data / "amazon-industrial" / "Industrial_and_Scientific.item.json")


def timed_texts(args: argparse.Namespace) -> list[str]:
    """The texts one child encodes: a seeded sample of `--sample` texts (the same each time), else all of them."""
    texts = catalogue_texts(args.data, args.dataset)
    return random.Random(0).sample(texts, min(args.sample, len(texts))) if args.sample else texts


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

    texts = timed_texts(args)
    imported = time.perf_counter()
    settings = {"max_length": args.max_length, "pooling": args.pooling}
    if args.backend == "torch":
        encoder = TextEncoder(args.encoder, **settings)
    else:
        encoder = OnnxTextEncoder(args.encoder, onnx_dir=args.onnx_dir, **settings)
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
        "vectors": vectors.tolist() if args.child in ("export", "cold") else None,
        "vectors_sha256": hashlib.sha256(vectors.tobytes()).hexdigest(),
    }
    print(json.dumps(result))


def run_child(args: argparse.Namespace, kind: str, backend: str, threads: int, work: Path, sample: int) -> dict:
    """Run one child on `sample` texts (0: all) and return its measurements plus its whole wall time."""
    cache = work / f"{backend}-threads{threads}"
    if kind != "cached":
        shutil.rmtree(cache, ignore_errors=True)
    if kind == "export":
        shutil.rmtree(work / "onnx", ignore_errors=True)
    command = [sys.executable, __file__, "--child", kind, "--backend", backend, "--threads", str(threads)]
    command += ["--cache", str(cache), "--onnx-dir", str(work / "onnx"), "--data", str(args.data)]
    command += ["--dataset", args.dataset, "--pooling", args.pooling, "--max-length", str(args.max_length)]
    command += ["--sample", str(sample), *(["--encoder", args.encoder] if args.encoder else [])]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "LMREC_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{kind} {backend} run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = {**json.loads(done.stdout.strip().splitlines()[-1]), "threads": threads, "process_wall_s": wall}
    print(f"{kind} {backend} at {threads} thread(s), {result['texts']} texts: {result['timed_s']:.2f} s", flush=True)
    return result


def summarise(runs: list[dict]) -> dict:
    """Medians of one (kind, backend, threads) group."""
    keys = ("imports_s", "encoder_s", "encode_s", "timed_s", "process_wall_s")
    medians = {key: statistics.median(run[key] for run in runs) for key in keys}
    return medians | {"runs": len(runs), "texts": runs[0]["texts"]}


def report(groups: dict[str, dict]) -> None:
    """Print the medians as a table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Encoding item texts (medians; seconds)")
    columns = ("run", "backend", "threads", "texts", "timed", "encoder", "encode_cached", "imports", "process wall")
    for column in columns:
        table.add_column(column, justify="right")
    for name, group in groups.items():
        keys = ("timed_s", "encoder_s", "encode_s", "imports_s", "process_wall_s")
        table.add_row(*name.split("@"), str(group["texts"]), *(f"{group[key]:.2f}" for key in keys))
    Console(width=120).print(table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    with tempfile.TemporaryDirectory(prefix="lmrec-encode-") as scratch:
        return measure(args, args.work or Path(scratch))


def beats(cold: dict, to_beat: dict[str, dict], threads: int) -> bool:
    """Whether a cold median is below every earlier backend's cold median at the same thread count."""
    rivals = [group for name, group in to_beat.items() if name.startswith("cold@") and name.endswith(f"@{threads}")]
    return all(cold["timed_s"] < rival["timed_s"] for rival in rivals)


def measure_backend(
    args: argparse.Namespace, backend: str, work: Path, to_beat: dict[str, dict]
) -> tuple[list[dict], dict[str, dict]]:
    """Cold and cached runs of one backend at each thread count (after a one-off export for onnx).

    With `--subset`, the whole catalogue is encoded only by a backend whose cold median on the sample beats
    every group in `to_beat` at the same thread count (the backends measured before it): there is no point
    in spending twenty minutes on a backend that is not faster.
    """
    runs: list[dict] = []
    groups: dict[str, dict] = {}
    if backend == "onnx":
        export = run_child(args, "export", backend, 1, work, args.subset)
        runs.append(export)
        groups["export+cold@onnx@1"] = summarise([export])
    for threads in (int(t) for t in args.threads.split(",")):
        cold = [run_child(args, "cold", backend, threads, work, args.subset) for _ in range(args.runs)]
        whole = bool(args.subset) and beats(summarise(cold), to_beat, threads)
        full = [run_child(args, "full", backend, threads, work, 0) for _ in range(args.full_runs)] if whole else []
        read = 0 if whole else args.subset  # cached runs read what the last cold runs wrote
        cached = [run_child(args, "cached", backend, threads, work, read) for _ in range(args.runs)]
        for group in (cold, full + cached) if full else (cold + cached,):
            if {run["vectors_sha256"] for run in group} != {group[0]["vectors_sha256"]}:
                raise SystemExit(f"{backend} vectors differ between runs at {threads} threads")
        if any(run["from_cache"] != run["texts"] for run in cached):
            raise SystemExit(f"a cached {backend} run encoded texts again")
        runs += cold + full + cached
        groups[f"cold@{backend}@{threads}"] = summarise(cold)
        if full:
            groups[f"full@{backend}@{threads}"] = summarise(full)
        groups[f"cached@{backend}@{threads}"] = summarise(cached)
    return runs, groups


def max_abs_diff(runs: list[dict]) -> float | None:
    """Largest difference between the torch and onnx vectors of the first cold run of each."""
    import numpy as np

    firsts = {}
    for run in runs:
        if run["kind"] in ("export", "cold"):
            firsts.setdefault(run["backend"], np.asarray(run["vectors"], dtype=np.float32))
    return float(np.abs(firsts["torch"] - firsts["onnx"]).max()) if len(firsts) == 2 else None


def official_bars(args: argparse.Namespace, groups: dict[str, dict]) -> dict[str, dict]:
    """The bars of the official MovieLens-100K run with the default encoder (none for other runs)."""
    if args.dataset != "ml-100k" or args.encoder is not None:
        return {}
    bars = {
        "cold_s_torch_1_thread": {"bar": COLD_BAR_S, "median": groups.get("cold@torch@1", {}).get("timed_s")},
        "cached_s_torch_1_thread": {"bar": CACHED_BAR_S, "median": groups.get("cached@torch@1", {}).get("timed_s")},
    }
    for bar in bars.values():
        bar["passed"] = bar["median"] is not None and bar["median"] <= bar["bar"]
    return bars


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
        backend_runs, backend_groups = measure_backend(args, backend, work, groups)
        runs += backend_runs
        groups |= backend_groups
    report(groups)
    diff = max_abs_diff(runs)
    for run in runs:
        run.pop("vectors")
    bars = official_bars(args, groups)
    catalogue = [run for run in runs if run["kind"] in ("full", "cached")] or runs
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "dataset": args.dataset,
        "encoder": args.encoder or "all-MiniLM-L6-v2",
        "pooling": args.pooling,
        "texts": catalogue[0]["texts"],
        "subset": args.subset or None,
        "template": TEMPLATES[args.dataset],
        "max_length": runs[0]["max_length"],
        "truncated": catalogue[0]["truncated"],
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
