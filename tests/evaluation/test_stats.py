"""Bootstrap intervals, paired tests and the tables built on them."""

from __future__ import annotations

import io
import os
import re

import numpy as np
import pytest
from rich.console import Console
from rich.table import Table

from lmrec.errors import RunError
from lmrec.evaluation.evaluator import EvalResult
from lmrec.evaluation.stats import (
    Interval,
    PairedTest,
    bootstrap_ci,
    bootstrap_means,
    check_same_targets,
    compare,
    paired_deltas,
    paired_test,
    pooled_deltas,
    seed_averaged,
)
from lmrec.evaluation.tables import comparison_table, metrics_table


def make_result(ranks: np.ndarray, *, items: np.ndarray | None = None, split: str = "test") -> EvalResult:
    """An EvalResult over targets 0..n-1 with the given ranks."""
    n = ranks.shape[0]
    return EvalResult(
        split=split,
        ks=(10,),
        users=np.arange(n),
        items=np.arange(1, n + 1) if items is None else items,
        positions=np.full(n, 5),
        ranks=ranks,
        topk=np.ones((n, 10), dtype=np.int64),
        metrics={"hr@10": float((ranks < 10).mean()), "coverage@10": 0.25},
        fingerprint="fp",
    )


def render(table: Table) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(table)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_interval_contains_mean_and_shrinks_with_more_data() -> None:
    rng = np.random.default_rng(0)
    small = bootstrap_ci(rng.binomial(1, 0.3, 100))
    large = bootstrap_ci(rng.binomial(1, 0.3, 10_000))
    for interval in (small, large):
        assert interval.low <= interval.mean <= interval.high
    assert large.high - large.low < (small.high - small.low) / 5
    assert large.low < 0.3 < large.high


def test_bootstrap_is_seeded_and_chunked() -> None:
    values = np.arange(10.0)
    np.testing.assert_array_equal(bootstrap_means(values, 50, seed=1), bootstrap_means(values, 50, seed=1))
    assert bootstrap_means(np.ones(3_000_000), 3).shape == (3,)
    with pytest.raises(ValueError):
        bootstrap_ci(np.array([]))


def test_interval_and_test_text() -> None:
    assert str(Interval(0.07123, 0.0614, 0.0821)) == "0.0712 [0.061, 0.082]"
    assert str(PairedTest(0.005, 0.001, 0.009, 0.0123, 10)) == "+0.0050 [+0.001, +0.009] p=0.012"


def test_paired_test_detects_a_clear_difference() -> None:
    rng = np.random.default_rng(1)
    deltas = 0.1 + rng.normal(0, 0.2, 500)
    test = paired_test(deltas)
    assert test.low > 0 and test.p_value < 0.01
    assert test.delta == pytest.approx(deltas.mean())
    assert test.n == 500


def test_paired_test_does_not_flag_a_null_difference() -> None:
    rng = np.random.default_rng(2)
    centred = rng.normal(0, 1, 500)
    centred -= centred.mean()
    exact_null = paired_test(centred)
    assert exact_null.p_value == 1.0 and exact_null.low < 0 < exact_null.high
    assert paired_test(rng.normal(0, 1, 500), seed=3).p_value > 0.05


def test_paired_deltas_on_results() -> None:
    rng = np.random.default_rng(4)
    base = make_result(rng.integers(0, 40, 300))
    better = make_result(np.maximum(base.ranks - 8, 0))
    deltas = paired_deltas(base, better, "hr@10")
    np.testing.assert_array_equal(deltas, (better.ranks < 10).astype(float) - (base.ranks < 10))
    assert compare(base, better, "hr@10").p_value < 0.01
    assert compare(base, base, "hr@10").p_value == 1.0


def test_different_targets_are_refused_clearly() -> None:
    ranks = np.arange(20)
    base = make_result(ranks)
    with pytest.raises(RunError, match="1 targets differ, first at example 3"):
        items = base.items.copy()
        items[3] = 99
        paired_deltas(base, make_result(ranks, items=items), "hr@10")
    with pytest.raises(RunError, match="20 vs 19 targets"):
        check_same_targets(base, make_result(ranks[:19]))
    with pytest.raises(RunError, match="split test vs valid"):
        check_same_targets(base, make_result(ranks, split="valid"))
    sampled = make_result(ranks)
    sampled.sampled_negatives = 100
    with pytest.raises(RunError, match="protocol"):
        check_same_targets(base, sampled)


def test_pooling_over_seeds_concatenates_deltas() -> None:
    rng = np.random.default_rng(5)
    pairs = []
    for _ in range(3):
        base = make_result(rng.integers(0, 30, 200))
        pairs.append((base, make_result(np.maximum(base.ranks - 5, 0))))
    pooled = pooled_deltas(pairs, "ndcg@10")
    assert pooled.shape == (600,)
    np.testing.assert_allclose(pooled[200:400], paired_deltas(*pairs[1], "ndcg@10"))
    assert paired_test(pooled).p_value < 0.01


def test_seed_averaging_resamples_targets_not_seed_target_pairs() -> None:
    first, second = make_result(np.array([0, 9, 30])), make_result(np.array([2, 9, 0]))
    averaged = seed_averaged([first, second], "hr@10")
    np.testing.assert_allclose(averaged, [1.0, 1.0, 0.5])
    with pytest.raises(RunError, match="targets"):
        seed_averaged([first, make_result(np.array([0, 1]))], "hr@10")
    with pytest.raises(ValueError, match="at least one"):
        seed_averaged([], "hr@10")


def test_metrics_table_shows_intervals() -> None:
    result = make_result(np.array([0, 2, 10, 4] * 25))
    table = metrics_table(result, title="run")
    text = render(table)
    assert "hr@10" in text and "0.7500 [" in text
    assert "0.2500" in text  # coverage: no interval
    assert "100 targets" in str(table.caption)


def test_comparison_table_tests_against_the_first_run() -> None:
    rng = np.random.default_rng(6)
    base = make_result(rng.integers(0, 40, 300))
    better = make_result(np.maximum(base.ranks - 8, 0))
    table = comparison_table([base, better], ["sasrec", "lmrec"], ["hr@10", "ndcg@10", "coverage@10"])
    assert table.row_count == 9  # a row per metric, then one per run
    text = render(table)
    assert re.search(r"\+0\.2100 \[\+0\.163, \+0\.257\] +<0\.001", text)
    assert "+0.0000" in text  # coverage has a plain delta


def test_comparison_table_fits_80_columns() -> None:
    from rich.console import Console

    rng = np.random.default_rng(6)
    base = make_result(rng.integers(0, 40, 300))
    other = make_result(np.maximum(base.ranks - 8, 0))
    metrics = ["hr@10", "ndcg@10", "mrr@10", "recall@10", "precision@10", "map@10"]
    console = Console(width=80, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(comparison_table([base, other, other], ["runs/sasrec", "runs/gru4rec", "runs/lmrec"], metrics))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in "\n".join(lines)
    assert any(line.strip() == "precision@10" for line in lines)
    assert sum(line.strip().startswith("gru4rec  ") for line in lines) == len(metrics)
    with pytest.raises(RunError):
        comparison_table([base, make_result(base.ranks[:10])], ["a", "b"])
