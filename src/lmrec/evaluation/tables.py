"""Rich tables of evaluation results: one run with confidence intervals, or runs side by side.

Per-example metrics (HR, NDCG, MRR, Recall, Precision, MAP) get bootstrap intervals; catalogue-level
ones (coverage, popularity) are single numbers. Functions return the table; callers print it.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.table import Table

from lmrec.evaluation.evaluator import SAMPLED_PREFIX, EvalResult
from lmrec.evaluation.metrics import RANKING_METRICS
from lmrec.evaluation.stats import DEFAULT_RESAMPLES, bootstrap_ci, check_same_targets, compare


def is_per_example(metric: str) -> bool:
    """Whether `metric` (e.g. "ndcg@10", "sampled_hr@10") has one value per target."""
    name = metric.removeprefix(SAMPLED_PREFIX)
    return name.partition("@")[0] in RANKING_METRICS


def _number(value: float) -> str:
    """Four decimals for rates, one for counts such as mean popularity."""
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.4f}"


def _cell(result: EvalResult, metric: str, n_resamples: int, level: float, seed: int) -> str:
    """The cell of one metric: "mean [low, high]" when per-example, the plain value otherwise."""
    if is_per_example(metric):
        return str(bootstrap_ci(result.per_example(metric), n_resamples, level, seed, groups=result.users))
    return _number(result.metrics[metric])


def _caption(result: EvalResult, n_resamples: int, level: float) -> str:
    """How the numbers were made: protocol, number of targets and the interval method."""
    users = len(set(result.users.tolist()))
    over = f" over {users} users" if users < len(result) else ""
    return (
        f"{result.protocol}; {len(result)} targets; {level:.0%} percentile bootstrap intervals{over}, "
        f"{n_resamples} resamples"
    )


def metrics_table(
    result: EvalResult,
    metrics: Sequence[str] | None = None,
    *,
    title: str | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
) -> Table:
    """One run's metrics (default: all), one per row, with intervals such as "0.0712 [0.061, 0.082]"."""
    table = Table(title=title, caption=_caption(result, n_resamples, level))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for metric in metrics or list(result.metrics):
        table.add_row(metric, _cell(result, metric, n_resamples, level, seed))
    return table


def comparison_table(
    results: Sequence[EvalResult],
    names: Sequence[str],
    metrics: Sequence[str] | None = None,
    *,
    title: str | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
) -> Table:
    """Runs side by side in long form (a row per metric and run, so that it stays readable at 80 columns);
    every run after the first also shows its paired test against it.

    The delta reads "+0.0050 [+0.001, +0.009]" with its p-value beside it, bold when the interval excludes 0.
    All runs must have ranked the same targets under the same protocol (RunError otherwise).
    """
    if not results or len(results) != len(names):
        raise ValueError(f"need one name per result, got {len(results)} results and {len(names)} names")
    base = results[0]
    for other in results[1:]:
        check_same_targets(base, other)
    columns = list(metrics or [m for m in base.metrics if all(m in r.metrics for r in results)])
    table = Table(
        title=title,
        caption=_caption(base, n_resamples, level) + f"; Δ and p: paired, vs {names[0]}",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("metric / run", overflow="fold")
    table.add_column(f"value [{level:.0%} CI]", justify="right", no_wrap=True)
    table.add_column(f"Δ [{level:.0%} CI]", justify="right", no_wrap=True)
    table.add_column("p", justify="right", no_wrap=True)
    labels = short_names(names)
    for metric in columns:
        table.add_row(f"[bold]{metric}[/bold]", "", "", "")
        for index, (result, label) in enumerate(zip(results, labels, strict=True)):
            delta, p_value = _delta_cells(base, result, metric, n_resamples, level, seed) if index else ("", "")
            cell = _cell(result, metric, n_resamples, level, seed)
            table.add_row(f"  {label}", cell, delta, p_value, end_section=index == len(results) - 1)
    return table


def short_names(names: Sequence[str]) -> list[str]:
    """Run folders by their last path part when those are distinct (runs/sasrec → sasrec), else as given."""
    short = [name.rstrip("/").rsplit("/", 1)[-1] or name for name in names]
    return short if len(set(short)) == len(short) else list(names)


def _delta_cells(
    base: EvalResult, result: EvalResult, metric: str, n_resamples: int, level: float, seed: int
) -> tuple[str, str]:
    """The paired difference against the first run and its p-value (a plain difference for catalogue metrics)."""
    if not is_per_example(metric):
        return f"{result.metrics[metric] - base.metrics[metric]:+.4f}", ""
    test = compare(base, result, metric, n_resamples, level, seed)
    delta = f"{test.delta:+.4f} [{test.low:+.3f}, {test.high:+.3f}]"
    p_value = "<0.001" if test.p_value < 0.001 else f"{test.p_value:.3f}"
    return (f"[bold]{delta}[/bold]" if test.low > 0 or test.high < 0 else delta), p_value
