"""`lmrec classify train / evaluate / predict`: parsing and tables only; the work is in `lmrec.training.classifier`,
`lmrec.evaluation.classification` and `lmrec.inference.classifier`.

torch and the classifier are imported inside the commands so that `lmrec --help` starts fast.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from lmrec.cli.output import print_tensorboard

console = Console()

app = typer.Typer(no_args_is_help=True, help="Predict a behaviour (like, click, purchase) with a cross-encoder.")

METRICS = ("accuracy", "precision", "recall", "f1", "auc", "logloss")


@app.command()
def train(
    data: Path = typer.Argument(..., help="A prepared dataset with a temporal split (lmrec data prepare)."),
    label: str = typer.Option(..., "--label", help="'rating>=4' (>=, >, <=, <, ==), 'type=purchase' or 'sampled'."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to create."),
    mode: str = typer.Option("lora", "--mode", help="lora (adapters) or full (every weight)."),
    encoder: Path = typer.Option(None, "--encoder", help="Local Hugging Face encoder folder (default MiniLM-L6)."),
    max_train_examples: int = typer.Option(4000, "--max-train-examples", help="Seeded training subsample."),
    max_test_examples: int = typer.Option(None, "--max-test-examples", help="Seeded test subsample (default all)."),
    max_valid_examples: int = typer.Option(1000, "--max-valid-examples", help="Validation subsample; 0: none."),
    epochs: int = typer.Option(1, "--epochs", min=1, help="Passes over the training examples."),
    max_seconds: float = typer.Option(
        None,
        "--max-seconds",
        help="Time budget of the cross-encoder's training steps; scoring the test examples comes after it "
        "(bound that with --max-test-examples).",
    ),
    max_length: int = typer.Option(128, "--max-length", help="Token budget of one history + candidate pair."),
    history: int = typer.Option(10, "--history", help="Most recent earlier events shown per example."),
    negatives: int = typer.Option(1, "--negatives", min=1, help="Sampled negatives per event (label 'sampled')."),
    negative_sampling: str = typer.Option(
        "uniform", "--negative-sampling", help="uniform, or popularity (in proportion to training events)."
    ),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Examples per training step."),
    lr: float = typer.Option(None, "--lr", help="Encoder learning rate (default 1e-3 lora, 5e-5 full)."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="Random seed of sampling and training."),
    threads: int = typer.Option(None, "--threads", help="Torch threads (default LMREC_THREADS or 1)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run directory."),
) -> None:
    """Train a behaviour classifier and write RUN/metrics.json (test metrics and the bias baseline's)."""
    from lmrec.models.classifier import make_config
    from lmrec.runtime import configure_threads, show_progress
    from lmrec.training.classifier import train_run

    configure_threads(threads)
    config = make_config(
        label=label,
        mode=mode,
        encoder=str(encoder) if encoder else None,
        max_train_examples=max_train_examples,
        max_test_examples=max_test_examples,
        max_valid_examples=max_valid_examples,
        epochs=epochs,
        max_seconds=max_seconds,
        max_length=max_length,
        history=history,
        negatives=negatives,
        negative_sampling=negative_sampling,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
    )
    metrics = train_run(data, out, config, overwrite=overwrite, progress=show_progress())
    examples = metrics["examples"]
    table = Table(title=f"{label} on {metrics['dataset']} ({mode})")
    table.add_column("model")
    for name in METRICS:
        table.add_column(name, justify="right")
    table.add_row("cross-encoder", *(f"{metrics['test'][m]:.4f}" for m in METRICS))
    table.add_row("bias baseline", *(f"{metrics['baseline'][m]:.4f}" for m in METRICS))
    console.print(table)
    sample = " (a seeded subsample)" if examples["test_subsampled"] else ""
    truncated = metrics["truncated"]
    stage = metrics["training"]["encoder"]
    console.print(
        f"{examples['test_used']:,} of {examples['test']:,} test examples{sample}; cross-encoder trained on "
        f"{examples['train_used']:,} of {examples['train']:,} training examples, biases on {examples['bias_train']:,}; "
        f"{stage['steps']} steps (best {stage['best_step']}, stopped by {stage['stopped_by']}) "
        f"in {metrics['train_seconds']:.0f} s, test scored in {metrics['test_seconds']:.0f} s; "
        f"truncated at {truncated['max_length']} tokens: {truncated['train']:,} "
        f"training and {truncated['test']:,} test examples → {out}"
    )
    print_tensorboard(console, out / "logs", out.parent)


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="A classifier run directory."),
    resamples: int = typer.Option(1000, "--resamples", min=1, help="Bootstrap resamples."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="Bootstrap seed."),
) -> None:
    """Test metrics of the run and of its bias baseline, with 95% bootstrap intervals and the paired difference."""
    from lmrec.evaluation.classification import evaluate_run
    from lmrec.inference.classifier import load_predictions

    intervals = evaluate_run(run, n_resamples=resamples, seed=seed)
    n = len(load_predictions(run)["label"])
    table = Table(title=f"{run} — test ({n:,} examples)")
    table.add_column("metric")
    for name in intervals:
        table.add_column("Δ (paired)" if " - " in name else name, justify="right")
    for metric in METRICS:
        table.add_row(metric, *(_cell(intervals[name][metric], " - " in name) for name in intervals))
    table.caption = (
        f"95% percentile bootstrap intervals, {resamples} resamples of the test examples; "
        "Δ = cross-encoder minus bias baseline on the same resamples"
    )
    console.print(table)


def _cell(interval, signed: bool) -> str:
    """The interval as "mean [low, high]", with signs for differences."""
    if signed:
        return f"{interval.mean:+.4f} [{interval.low:+.3f}, {interval.high:+.3f}]"
    return str(interval)


@app.command()
def predict(
    run: Path = typer.Argument(..., help="A classifier run directory."),
    user: str = typer.Option(..., "--user", help="Original user id."),
    items: list[str] = typer.Option(..., "--item", metavar="ITEM", help="Original item id; repeat for several."),
    data: Path = typer.Option(None, "--data", help="The prepared dataset, if it moved."),
    threads: int = typer.Option(None, "--threads", help="Torch threads (default LMREC_THREADS or 1)."),
) -> None:
    """Probability of the behaviour for a user and items, from the user's full known history."""
    from lmrec.inference.classifier import load_run, predict_user
    from lmrec.runtime import configure_threads

    configure_threads(threads)
    clf = load_run(run, data)
    predictions = predict_user(clf, user, items)
    table = Table(title=f"P({clf.spec.text}) for user {user}")
    for column in ("item", "title", "probability", "seen"):
        table.add_column(column, justify="right" if column == "probability" else "left")
    for p in predictions:
        table.add_row(p.item_id, p.title, f"{p.probability:.4f}", "yes" if p.seen else "")
    console.print(table)
