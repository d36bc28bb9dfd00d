"""Evaluation: ranking and classification metrics, the full-ranking evaluator, bootstrap tests, tables.

`lmrec.evaluate(run, ...)` calls `lmrec.api.evaluate`; `lmrec.evaluate.evaluate(model, dataset)` is the evaluator.
"""

from lmrec._callable import callable_package
from lmrec.evaluate.evaluator import DEFAULT_KS, SAMPLED_PREFIX, EvalResult, Evaluator, evaluate, ranking_keys
from lmrec.evaluate.metrics import (
    RANKING_METRICS,
    accuracy,
    average_ranks,
    classification_metrics,
    coverage_at_k,
    f1,
    hit_rate_at_k,
    log_loss,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    parse_metric,
    popularity_at_k,
    precision,
    precision_at_k,
    ranking_metric,
    ranking_metrics,
    recall,
    recall_at_k,
    roc_auc,
)
from lmrec.evaluate.stats import (
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
    seed_averaged_deltas,
)
from lmrec.evaluate.tables import comparison_table, is_per_example, metrics_table

__all__ = [
    "DEFAULT_KS",
    "RANKING_METRICS",
    "SAMPLED_PREFIX",
    "EvalResult",
    "Evaluator",
    "Interval",
    "PairedTest",
    "accuracy",
    "average_ranks",
    "bootstrap_ci",
    "bootstrap_means",
    "check_same_targets",
    "classification_metrics",
    "compare",
    "comparison_table",
    "coverage_at_k",
    "evaluate",
    "f1",
    "hit_rate_at_k",
    "is_per_example",
    "log_loss",
    "map_at_k",
    "metrics_table",
    "mrr_at_k",
    "ndcg_at_k",
    "paired_deltas",
    "paired_test",
    "parse_metric",
    "pooled_deltas",
    "popularity_at_k",
    "precision",
    "precision_at_k",
    "ranking_keys",
    "ranking_metric",
    "ranking_metrics",
    "recall",
    "recall_at_k",
    "roc_auc",
    "seed_averaged",
    "seed_averaged_deltas",
]

callable_package(__name__, "evaluate")
