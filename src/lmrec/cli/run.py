"""`lmrec train`, `evaluate`, `compare` and `recommend`: parsing only; the work is in `lmrec.api`.

torch and the API are imported inside the commands so that `lmrec --help` and `lmrec data` start fast.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lmrec.cli.output import print_tensorboard
from lmrec.config import CONFIG_DIR, EXCLUDE_SEEN_DEFAULT
from lmrec.errors import LmrecError
from lmrec.runtime import show_progress

console = Console()

MAIN_METRICS = ("hr", "ndcg", "mrr", "recall", "precision", "map")
# one shipped config per built-in model (beside it, <model>.search.yaml: its search space for `lmrec tune`)
SHIPPED_MODELS = sorted(path.stem for path in CONFIG_DIR.glob("*.yaml") if "." not in path.stem)


def _ks(text: str) -> list[int]:
    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise LmrecError(f"--k must be a comma-separated list of integers such as 5,10,20, not {text!r}.") from None
    if not ks or min(ks) < 1:
        raise LmrecError("--k needs at least one cut-off of 1 or more, such as 5,10,20.")
    return ks


def _main_metrics(result) -> list[str]:
    return [m for m in result.metrics if m.split("@")[0].removeprefix("sampled_") in MAIN_METRICS]


def train(
    data: Path = typer.Argument(..., help="A prepared dataset directory (lmrec data prepare)."),
    model: str = typer.Option(
        None, "--model", "-m", metavar="NAME", help=f"One of {', '.join(SHIPPED_MODELS)} (default: sasrec)."
    ),
    out: Path = typer.Option(..., "--out", "-o", metavar="RUN", help="Run directory to create."),
    config: Path = typer.Option(
        None,
        "--config",
        metavar="FILE",
        help=f"YAML config replacing the model's shipped one (in {CONFIG_DIR}).",
    ),
    set_: list[str] = typer.Option(
        [], "--set", metavar="KEY=VALUE", help="Override a config key, e.g. --set model.hidden=128; repeatable."
    ),
    seed: int = typer.Option(None, "--seed", help="Random seed (default from the config, 0)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run directory."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run from its last checkpoint, as it was configured."
    ),
    threads: int = typer.Option(None, "--threads", min=1, help="Torch threads (default LMREC_THREADS or 1)."),
    init: Path = typer.Option(
        None, "--init", metavar="CKPT", help="Start from a pre-trained checkpoint (lmrec pretrain)."
    ),
    inductive: bool = typer.Option(False, "--inductive", help="lmrec without ID embeddings (new catalogues)."),
    warm_start: Path = typer.Option(
        None,
        "--warm-start",
        metavar="RUN",
        help="Continue a run (or registry version folder) trained on an earlier preparation of this catalogue.",
    ),
    nproc: int = typer.Option(
        1,
        "--nproc",
        min=1,
        metavar="N",
        help="Train with N processes (DistributedDataParallel under torchrun, gloo on CPU, NCCL on GPUs); "
        "train.batch_size stays the global batch.",
    ),
) -> None:
    """Train a model, evaluate its best checkpoint on valid and test, and write RUN/metrics.json.

    The time budget (train.max_seconds) is checked between epochs: an epoch that would not fit is not started.
    Under torchrun (or --nproc N) rank 0 validates and writes the run; the other processes only train.
    """
    from lmrec import api
    from lmrec.training import distributed

    overrides = list(set_) + ([f"train.threads={threads}"] if threads else [])
    overrides += ["model.use_id=false"] if inductive else []
    if nproc > 1:
        from lmrec.training.runs import check_distributed

        check_distributed(out, model, config, overrides, seed, overwrite, resume, init)
        argv = ["train", str(data), "--out", str(out), *(["--model", model] if model else [])]
        argv += [*(["--config", str(config)] if config else []), *(["--seed", str(seed)] if seed is not None else [])]
        argv += [*(f"--set={item}" for item in overrides), *(["--init", str(init)] if init else [])]
        argv += [*(["--warm-start", str(warm_start)] if warm_start else [])]
        argv += [*(["--overwrite"] if overwrite else []), *(["--resume"] if resume else [])]
        quiet = logging.getLogger("lmrec").getEffectiveLevel() > logging.INFO
        raise typer.Exit(distributed.launch(nproc, [*(["--quiet"] if quiet else []), *argv]))
    metrics = api.train(
        data,
        out,
        model=model,
        config_file=config,
        overrides=overrides,
        seed=seed,
        overwrite=overwrite,
        resume=resume,
        progress=show_progress(),
        init=init,
        warm_start=warm_start,
    )
    if not distributed.main_process():  # a torchrun rank other than 0: rank 0 prints the results
        return
    table = Table(title=f"{metrics['model']} on {metrics['dataset']}")
    table.add_column("split")
    keys = [k for k in metrics["test"] if k.split("@")[0] in MAIN_METRICS and k.endswith("@10")]
    for key in keys:
        table.add_column(key, justify="right")
    for split in ("valid", "test"):
        table.add_row(split, *(f"{metrics[split][k]:.4f}" for k in keys))
    console.print(table)
    if metrics["best_epoch"] < 0 and metrics["epochs"] == 0:
        trained = f"no training epochs ({metrics['model']} is fitted from the training events' statistics)"
    else:
        trained = (
            f"{metrics['epochs']} epochs (best epoch {metrics['best_epoch'] + 1}), stopped by {metrics['stopped_by']}, "
            f"{metrics['train_seconds']:.1f} s training, {metrics['seconds_per_epoch']:.2f} s/epoch"
        )
    console.print(f"{trained}, peak RSS {metrics['peak_rss_mb']:.0f} MiB → {out}")
    print_tensorboard(console, out / "logs", out.parent)


def pretrain(
    data: list[Path] = typer.Argument(..., metavar="DATA", help="One or more prepared source datasets."),
    out: Path = typer.Option(..., "--out", "-o", metavar="DIR", help="Checkpoint directory to create."),
    set_: list[str] = typer.Option(
        [], "--set", metavar="KEY=VALUE", help="Override a config key, e.g. --set model.hidden=128; repeatable."
    ),
    seed: int = typer.Option(None, "--seed", help="Random seed (default from the config, 0)."),
    contrastive: float = typer.Option(0.1, "--contrastive-weight", help="Weight of the sequence–item loss."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing checkpoint directory."),
) -> None:
    """Pre-train lmrec on source datasets (text only, no IDs), for `lmrec train --model lmrec --init`."""
    from lmrec import api

    metrics = api.pretrain(
        data,
        out,
        overrides=list(set_),
        seed=seed,
        overwrite=overwrite,
        contrastive_weight=contrastive,
        progress=show_progress(),
    )
    scores = ", ".join(f"{k} {v:.4f}" for k, v in metrics["valid"].items())
    console.print(f"pre-trained on {', '.join(metrics['pretrained_on'])}: {metrics['epochs']} epochs, {scores} → {out}")
    print_tensorboard(console, out / "logs", out.parent)


def evaluate(
    run: Path = typer.Argument(..., help="A run directory."),
    split: str = typer.Option("test", "--split", help="test or valid."),
    k: str = typer.Option("5,10,20", "--k", help="Cut-offs, comma-separated."),
    mask_history: bool = typer.Option(None, "--mask-history/--no-mask-history", help="Default: the run's."),
    data: Path = typer.Option(None, "--data", help="The prepared dataset, if it moved."),
    sampled: int = typer.Option(
        None,
        "--sampled-negatives",
        min=1,
        help="Rank against N sampled negatives instead (metrics named sampled_*).",
    ),
    rerank: Path = typer.Option(None, "--rerank", help="A behaviour-classifier run that re-orders the top."),
    rerank_top: int = typer.Option(20, "--rerank-top", min=1, help="How many first-stage items to re-order."),
    rerank_weight: float = typer.Option(
        None, "--rerank-weight", help="Order by first-stage score + W x the classifier's log-odds (default: p alone)."
    ),
) -> None:
    """Full-ranking metrics of a run with 95% bootstrap intervals."""
    from lmrec import api
    from lmrec.evaluation.tables import metrics_table

    result = api.evaluate(
        run,
        split=split,
        ks=_ks(k),
        mask_history=mask_history,
        data=data,
        sampled_negatives=sampled,
        rerank=rerank,
        rerank_top=rerank_top,
        rerank_weight=rerank_weight,
        progress=show_progress(),
    )
    title = f"{run} — {split} ({len(result)} targets)"
    if rerank is not None:
        title += f", top {rerank_top} re-ranked by {rerank}"
        title += f" (first-stage score + {rerank_weight:g} x log-odds)" if rerank_weight is not None else ""
    console.print(metrics_table(result, title=title))


def compare(
    runs: list[Path] = typer.Argument(..., metavar="RUN", help="Two or more run directories trained on the same data."),
    split: str = typer.Option("test", "--split", help="test or valid."),
    k: str = typer.Option("10", "--k", help="Cut-offs, comma-separated."),
) -> None:
    """Runs side by side, each with a paired bootstrap test of per-user differences against the first."""
    from lmrec import api
    from lmrec.evaluation.tables import comparison_table

    if len(runs) < 2:
        raise LmrecError("compare needs at least two run directories.")
    results = [api.evaluate(run, split=split, ks=_ks(k), progress=show_progress()) for run in runs]
    metrics = _main_metrics(results[0])
    console.print(comparison_table(results, [str(r) for r in runs], metrics, title=f"{split} split"))


def recommend(
    run: Path = typer.Argument(..., help="A run directory."),
    user: str = typer.Option(None, "--user", help="Original user id."),
    all_users: bool = typer.Option(False, "--all-users", help="Recommend for every user (batch export)."),
    k: int = typer.Option(10, "--k", min=1, help="How many items to recommend."),
    explain: bool = typer.Option(False, "--explain", help="Show the past events that drove each item."),
    exclude_seen: bool = typer.Option(
        EXCLUDE_SEEN_DEFAULT, "--exclude-seen/--include-seen", help="Leave out items the user already has."
    ),
    out: Path = typer.Option(None, "--out", help="Parquet file for --all-users."),
    data: Path = typer.Option(None, "--data", help="The prepared dataset, if it moved."),
    rerank: Path = typer.Option(None, "--rerank", help="A behaviour-classifier run that re-orders the top."),
    rerank_top: int = typer.Option(20, "--rerank-top", min=1, help="How many first-stage items to re-order."),
    rerank_weight: float = typer.Option(
        None, "--rerank-weight", help="Order by first-stage score + W x the classifier's log-odds (default: p alone)."
    ),
) -> None:
    """Top-k items for a user (original ids, with titles), or for all users into a Parquet file."""
    from lmrec.inference.recommender import Recommender, load_reranker
    from lmrec.registry.run import RunDir

    recommender = Recommender.load(run, data=data)
    if all_users:
        if out is None:
            raise LmrecError("--all-users writes a file: give it with --out recs.parquet.")
        rows = recommender.export_all(out, k=k, exclude_seen=exclude_seen, progress=show_progress())
        console.print(f"wrote {rows:,} recommendations for {recommender.dataset.n_users:,} users to {out}")
        return
    if user is None:
        raise LmrecError("give a user with --user ID, or --all-users --out FILE.")
    if explain and recommender.model.explain_method == "none":
        raise LmrecError(f"model {recommender.model.name} cannot explain its recommendations; drop --explain.")
    reranker = load_reranker(rerank, recommender.dataset) if rerank else None
    recs = recommender.recommend(
        user,
        k=k,
        exclude_seen=exclude_seen,
        explain=explain,
        reranker=reranker,
        rerank_top=rerank_top,
        rerank_weight=rerank_weight,
    )
    table = Table(title=f"top {k} for user {user} ({RunDir(run).info()['model']})")
    columns = ("#", "item", "title", "score", *(("p(behaviour)",) if reranker else ()))
    for column in columns:
        table.add_column(column, justify="left" if column in ("item", "title") else "right")
    if explain:
        table.add_column(f"because of ({recommender.model.explain_method})")
    for rank, rec in enumerate(recs, 1):  # ids and titles are data, never rich markup
        cells = [str(rank), escape(rec.item_id), escape(rec.title), f"{rec.score:.3f}"]
        cells += [f"{rec.probability:.3f}"] if reranker else []
        if explain:
            cells.append(escape(", ".join(f"{e.title} ({e.weight:.2f})" for e in rec.because or [])))
        table.add_row(*cells)
    console.print(table)


def register(app: typer.Typer) -> None:
    """Attach these commands to the main app."""
    app.command()(train)
    app.command()(pretrain)
    app.command()(evaluate)
    app.command()(compare)
    app.command()(recommend)
