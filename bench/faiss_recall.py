"""FAISS retrieval benchmark: recall@10 against exact inner-product scoring, and per-query latency, at 1M items.

The MovieLens-100K SASRec run's output item vectors (1,682 items; trained briefly when missing) are
extended to `--items` by small random perturbations (each new item is a real item plus Gaussian noise of
`--noise` times the typical per-dimension spread of the table). Queries are real user states: the model's
last hidden state after each user's history. Exact top-10 comes from a full matrix product; the index is
the service's (lmrec.serve.retrieval.InnerProductIndex, IVF-Flat), searched one query at a time on one
thread as the service does. Prints a table per probe count and writes bench/results/faiss_recall.json.

    python bench/faiss_recall.py --items 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from lmrec import api
from lmrec.serve.retrieval import InnerProductIndex, default_lists
from serve_load import ensure_run

ROOT = Path(__file__).resolve().parent
RECALL_BAR = 0.95
P99_BAR_MS = 50.0


def catalogue(table: np.ndarray, n_items: int, noise: float, seed: int) -> np.ndarray:
    """`[n_items + 1, d]` vectors: row 0 padding, then the real items, then perturbed copies of them."""
    real = table[1:]
    rng = np.random.default_rng(seed)
    scale = noise * float(real.std(axis=0).mean())
    source = rng.integers(0, len(real), n_items - len(real))
    copies = real[source] + rng.normal(0.0, scale, (len(source), real.shape[1])).astype(np.float32)
    return np.concatenate([np.zeros((1, real.shape[1]), np.float32), real, copies]).astype(np.float32)


def user_states(recommender: api.Recommender, limit: int) -> np.ndarray:
    """The model's last hidden state after each user's whole history (at most `limit` users)."""
    dataset, model = recommender.dataset, recommender.model
    rows = []
    with torch.inference_mode():
        for user in range(min(limit, dataset.n_users)):
            window = torch.as_tensor(dataset.sequence(user)[-model.max_len :], dtype=torch.long)[None]
            rows.append(model.hidden(window)[0, -1].numpy())
    return np.stack(rows).astype(np.float32)


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k item ids by inner product (chunks of queries, so memory stays bounded)."""
    table = torch.from_numpy(vectors[1:])
    out = []
    for lo in range(0, len(queries), 64):
        scores = torch.from_numpy(queries[lo : lo + 64]) @ table.T
        out.append(torch.topk(scores, k).indices.numpy() + 1)
    return np.concatenate(out)


def measure(index: InnerProductIndex, queries: np.ndarray, truth: np.ndarray, k: int) -> dict:
    """Recall@k against `truth` and per-query latency, one query per search call."""
    found, times = [], []
    for query in queries:
        started = time.perf_counter()
        _, ids = index.search(query[None], k)
        times.append(time.perf_counter() - started)
        found.append(ids[0])
    recall = np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth, strict=True)])
    ms = np.asarray(times) * 1000
    return {
        "probes": index.probes,
        "recall": float(recall),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "work")
    parser.add_argument("--run", type=Path, default=None, help="a trained next-item run (default: train one)")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--probes", default="8,16,32,64")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(int(os.environ.get("LMREC_THREADS", "1") or 1))
    console = Console()
    recommender = api.Recommender.load(args.run or ensure_run(args.work))
    with torch.inference_mode():
        table = recommender.model.output_embeddings().numpy()
    vectors = catalogue(table, args.items, args.noise, args.seed)
    queries = user_states(recommender, args.queries)
    started = time.perf_counter()
    truth = exact_top(vectors, queries, args.k)
    exact_seconds = time.perf_counter() - started
    started = time.perf_counter()
    index = InnerProductIndex(vectors, seed=args.seed)
    build_seconds = time.perf_counter() - started
    rows = []
    for probes in (int(p) for p in args.probes.split(",")):
        index.probes = probes
        rows.append(measure(index, queries, truth, args.k))
    lists = default_lists(args.items)
    out = Table(title=f"IVF-Flat ({lists} lists) over {args.items:,} items, {len(queries)} real user states, "
                      f"recall@{args.k} vs exact")  # fmt: skip
    for column in ("probes", f"recall@{args.k}", "p50 ms", "p99 ms", "max ms", "meets bar"):
        out.add_column(column, justify="right")
    for r in rows:
        ok = r["recall"] >= RECALL_BAR and r["p99_ms"] <= P99_BAR_MS
        out.add_row(str(r["probes"]), f"{r['recall']:.4f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
                    f"{r['max_ms']:.2f}", "yes" if ok else "no")  # fmt: skip
    console.print(out)
    console.print(f"index built in {build_seconds:.1f} s; exact top-{args.k} of all queries in {exact_seconds:.1f} s "
                  f"({exact_seconds / len(queries) * 1000:.1f} ms per query); bar: recall ≥ {RECALL_BAR}, "
                  f"p99 ≤ {P99_BAR_MS:g} ms")  # fmt: skip
    result = {"items": args.items, "noise": args.noise, "queries": len(queries), "lists": lists, "k": args.k,
              "build_seconds": build_seconds, "exact_ms_per_query": exact_seconds / len(queries) * 1000,
              "rows": rows, "loadavg": os.getloadavg()}  # fmt: skip
    path = ROOT / "results" / "faiss_recall.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
