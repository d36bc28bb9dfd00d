"""The report's sections, each built from the loaded runs: the dataset, training curves, test metrics, the
paired comparison, metrics by segment, coverage and popularity bias, and a few users' recommendations."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmrec.evaluation.metrics import coverage_at_k, popularity_at_k
from lmrec.evaluation.report import plots
from lmrec.evaluation.report.page import Markup, figure, join, table, tag
from lmrec.evaluation.report.runs import ReportInput, ReportRun
from lmrec.evaluation.report.segments import TIERS, gini, history_buckets, tier_shares
from lmrec.evaluation.stats import DEFAULT_RESAMPLES, Interval, bootstrap_ci, compare
from lmrec.evaluation.tables import is_per_example

USER_TOP = 10  # recommendations shown per example user
RECENT = 10  # history events shown per example user
INTERVALS = f"95% percentile bootstrap intervals over users ({DEFAULT_RESAMPLES} resamples)"


def _number(value: object) -> str:
    """Counts with thousands separators, rates with four decimals, large means with one; None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.4f}"


def _percents(shares: np.ndarray) -> list[str]:
    """Shares as percentages with one decimal."""
    return [f"{share:.1%}" for share in shares]


def _note(text: str) -> Markup:
    """A paragraph of explanation in a muted colour."""
    return tag("p", text, class_="note")


def _run_interval(run: ReportRun, metric: str, mask: np.ndarray | None = None) -> Interval:
    """A run's bootstrap interval (resampling users) of `metric` over its test targets, those in `mask` if given."""
    values, users = run.result.per_example(metric), run.result.users
    return bootstrap_ci(values, groups=users) if mask is None else bootstrap_ci(values[mask], groups=users[mask])


# -- the dataset -----------------------------------------------------------------------------------------


def _tier_table(report: ReportInput) -> Markup:
    """Items, training events and test targets in each popularity tier."""
    counts, tiers = report.counts, report.tiers
    items, targets = tiers[1:], tiers[report.first.result.items]
    rows = []
    for index, name in enumerate(TIERS):
        share = counts[tiers == index].sum() / max(int(counts.sum()), 1)
        rows.append(
            (name, _number(int((items == index).sum())), f"{share:.1%}", _number(int((targets == index).sum())))
        )
    return table(["popularity tier", "items", "training events", "test targets"], rows)


def _bad_rows(manifest: dict) -> list[tuple[str, str, str]]:
    """The first dropped rows the manifest keeps: where, reason, content."""
    rows = []
    for example in manifest.get("examples") or []:
        content = example.get("text") or ", ".join(f"{k}={v}" for k, v in (example.get("values") or {}).items())
        where = f"{Path(example['file']).name}:{example.get('line')}" if "file" in example else str(example.get("line"))
        rows.append((where, str(example.get("reason", "")).replace("_", " "), content))
    return rows


def dataset_section(report: ReportInput) -> Markup:
    """Counts, every drop reason, sequence lengths and item popularity of the runs' prepared dataset."""
    dataset = report.dataset
    manifest = dataset.manifest
    split = manifest.get("split") if isinstance(manifest.get("split"), dict) else {}
    facts = [("name", dataset.name), ("prepared dataset", str(dataset.path)), ("rows read", manifest.get("rows_read"))]
    facts += [("users", dataset.n_users), ("items", dataset.n_items), ("interactions", len(dataset.items))]
    facts += [(f"split: {key.replace('_', ' ')}", value) for key, value in split.items()]
    dropped = manifest.get("dropped") or {}
    drops = table(["drop reason", "count"], [(reason.replace("_", " "), _number(n)) for reason, n in dropped.items()])
    bad = _bad_rows(manifest)
    lengths = dataset.lengths
    quantiles = np.quantile(lengths, [0, 0.25, 0.5, 0.75, 0.9, 1])
    parts = [
        table(["", "value"], [(name, _number(value)) for name, value in facts]),
        tag("h3", "Dropped rows"),
        drops if dropped else _note("No row was dropped."),
        *((table(["where", "reason", "content"], bad, "The first dropped rows.", None),) if bad else ()),
        tag("h3", "Sequence lengths"),
        table(["", "min", "25%", "median", "75%", "90%", "max"], [["events per user", *map(_number, quantiles)]]),
        figure(plots.sequence_lengths(lengths, "plot-sequence-lengths"), "plot-sequence-lengths", "Events per user."),
        tag("h3", "Item popularity"),
        _tier_table(report),
        _note(
            "Tiers split the training events in thirds: the head is the most popular items holding the first "
            "third, the torso the next, the tail the rest; cold items have no training event."
        ),
        figure(
            plots.item_popularity(report.counts, report.tiers, TIERS, "plot-item-popularity"),
            "plot-item-popularity",
            "Training events of each item by its popularity rank.",
        ),
    ]
    return join(parts)


# -- training --------------------------------------------------------------------------------------------


def _curve_metric(report: ReportInput, runs: list[ReportRun]) -> str:
    """The validation metric to plot: NDCG at the headline cut-off, else the first per-example one recorded."""
    recorded = [key for run in runs for record in run.history for key in record if is_per_example(key)]
    return report.headline[1] if report.headline[1] in recorded else (recorded or ["loss"])[0]


def training_section(report: ReportInput) -> Markup:
    """Each run's training summary and its loss and validation curves."""
    rows = []
    for run in report.runs:
        best = int(run.metrics.get("best_epoch", -1))
        seconds = float(run.metrics.get("train_seconds", 0.0))
        epochs = _number(run.metrics.get("epochs", 0))
        stopped = run.metrics.get("stopped_by") or "—"
        best_epoch = _number(best + 1) if best >= 0 else "—"
        rows.append((run.label, run.metrics.get("model", ""), stopped, epochs, best_epoch, f"{seconds:.1f} s"))
    header = ["run", "model", "stopped by", "epochs", "best epoch", "training time"]
    parts: list[Markup] = [table(header, rows, numeric_from=3)]
    trained = [run for run in report.runs if run.history]
    if trained:
        metric = _curve_metric(report, trained)
        curves = [(run.label, run.history, int(run.metrics.get("best_epoch", -1))) for run in trained]
        svg = plots.training_curves(curves, metric, "plot-training-curves")
        parts.append(figure(svg, "plot-training-curves", f"Training loss and validation {metric} per epoch."))
    fitted = [run.label for run in report.runs if not run.history]
    if fitted:
        parts.append(_note(f"No training epochs (fitted from the training events' statistics): {', '.join(fitted)}."))
    return join(parts)


# -- test metrics and the paired comparison --------------------------------------------------------------


def _common_metrics(report: ReportInput) -> list[str]:
    """The test metrics every run has, in the first run's order."""
    return [m for m in report.first.result.metrics if all(m in run.result.metrics for run in report.runs)]


def metrics_section(report: ReportInput) -> Markup:
    """Every test metric of every run side by side, with intervals for the per-target ones."""
    rows = []
    for metric in _common_metrics(report):
        if is_per_example(metric):
            rows.append((metric, *(str(_run_interval(run, metric)) for run in report.runs)))
        else:
            rows.append((metric, *(_number(run.result.metrics[metric]) for run in report.runs)))
    result = report.first.result
    caption = f"{result.protocol}; {len(result):,} targets; {INTERVALS}."
    panels = {
        metric: [plots.Point(run.label, *_bounds(_run_interval(run, metric))) for run in report.runs]
        for metric in report.headline
    }
    svg = plots.intervals(panels, "plot-test-metrics")
    plot = figure(svg, "plot-test-metrics", f"Test {' and '.join(report.headline)} with 95% intervals.")
    return join([table(["metric", *(run.label for run in report.runs)], rows, caption), plot])


def _bounds(interval: Interval) -> tuple[float, float, float]:
    """An interval's mean, low and high."""
    return interval.mean, interval.low, interval.high


def comparison_section(report: ReportInput) -> Markup:
    """Every later run against the first: paired per-target differences with intervals and p-values."""
    base, others = report.first, report.runs[1:]
    if not others:
        return _note("One run only: give a second run to compare with it.")
    header = ["metric", *(f"{cell}{other.label} − {base.label}" for other in others for cell in ("", "p: "))]
    rows, panels = [], {}
    for metric in [m for m in _common_metrics(report) if is_per_example(m)]:
        tests = [compare(base.result, other.result, metric) for other in others]
        cells: list[object] = [metric]
        for test in tests:
            delta = f"{test.delta:+.4f} [{test.low:+.3f}, {test.high:+.3f}]"
            cells.append(tag("span", delta, class_="significant") if test.low > 0 or test.high < 0 else delta)
            cells.append("<0.001" if test.p_value < 0.001 else f"{test.p_value:.3f}")
        rows.append(cells)
        if metric in report.headline:
            panels[metric] = [plots.Point(o.label, t.delta, t.low, t.high) for o, t in zip(others, tests, strict=True)]
    caption = (
        f"Paired bootstrap of per-target differences over users; bold: the 95% interval excludes 0; vs {base.label}."
    )
    svg = plots.intervals(panels, "plot-paired", zero_line=True)
    plot = figure(svg, "plot-paired", f"Difference to {base.label} with 95% intervals (0: no difference).")
    return join([table(header, rows, caption), plot])


# -- segments --------------------------------------------------------------------------------------------


def _segment_part(report: ReportInput, title: str, segments: list[tuple[str, np.ndarray]], plot_id: str) -> Markup:
    """A table of the headline metrics per segment and run, and a bar plot of the NDCG."""
    header = ["segment", "targets", *(f"{run.label} {metric}" for run in report.runs for metric in report.headline)]
    rows = []
    for name, mask in segments:
        cells = [
            str(_run_interval(run, m, mask)) if mask.any() else "—" for run in report.runs for m in report.headline
        ]
        rows.append((name, _number(int(mask.sum())), *cells))
    shown = [(name, mask) for name, mask in segments if mask.any()]
    metric = report.headline[1]
    series = []
    for run in report.runs:
        bounds = np.array([_bounds(_run_interval(run, metric, mask)) for _, mask in shown]).T
        series.append(plots.Series(run.label, bounds[0], bounds[1], bounds[2]))
    svg = plots.grouped_bars([name for name, _ in shown], series, f"test {metric}", plot_id)
    return join([tag("h3", title), table(header, rows, INTERVALS + "."), figure(svg, plot_id, f"{metric} by {title}.")])


def segments_section(report: ReportInput) -> Markup:
    """Headline metrics by the target's history length and by its popularity tier (cold targets included)."""
    result = report.first.result
    buckets, labels = history_buckets(result.positions)
    by_length = [(f"{label} events", buckets == index) for index, label in enumerate(labels)]
    tiers = report.tiers[result.items]
    by_popularity = [(name, tiers == index) for index, name in enumerate(TIERS)]
    return join(
        [
            _note("History length: events before the target, in buckets of about equal size."),
            _segment_part(report, "history length", by_length, "plot-segment-history"),
            _segment_part(report, "target popularity", by_popularity, "plot-segment-popularity"),
        ]
    )


# -- coverage and popularity bias ------------------------------------------------------------------------


def popularity_section(report: ReportInput) -> Markup:
    """How much of the catalogue the top-K lists reach and how they lean to popular items."""
    k, n_items, counts, tiers = report.k, report.dataset.n_items, report.counts, report.tiers
    targets = report.first.result.items
    header = [f"top {k} of", "coverage", "mean training events", "Gini", *(f"{name} share" for name in TIERS)]
    catalogue = tier_shares(np.arange(1, n_items + 1), tiers)
    wanted = tier_shares(targets, tiers)
    rows = [
        ("catalogue items", "—", _number(float(counts[1:].mean())), "—", *_percents(catalogue)),
        ("test targets", "—", _number(float(counts[targets].mean())), "—", *_percents(wanted)),
    ]
    series = [plots.Series("catalogue items", catalogue), plots.Series("test targets", wanted)]
    for run in report.runs:
        topk = run.result.topk[:, :k]
        shares = tier_shares(topk.ravel(), tiers)
        coverage, popularity = f"{coverage_at_k(topk, n_items, k):.1%}", _number(popularity_at_k(topk, counts, k))
        rows.append((run.label, coverage, popularity, f"{gini(topk, n_items):.3f}", *_percents(shares)))
        series.append(plots.Series(run.label, shares))
    caption = (
        f"Each run's top {k} for every test target: coverage is the share of the catalogue recommended at least "
        "once; Gini 0 means every item recommended equally often, 1 one item always."
    )
    svg = plots.grouped_bars(TIERS, series, "share", "plot-popularity-bias", percent=True)
    plot = figure(svg, "plot-popularity-bias", f"Share of each popularity tier among items, targets and top {k} lists.")
    return join([table(header, rows, caption), plot])


# -- example users ---------------------------------------------------------------------------------------


def example_users(report: ReportInput, n: int) -> list[int]:
    """`n` test users (dataset indices) spread from the shortest to the longest history."""
    result = report.first.result
    users, first = np.unique(result.users, return_index=True)
    ordered = users[np.argsort(result.positions[first], kind="stable")]
    picks = np.unique(np.linspace(0, len(ordered) - 1, min(n, len(ordered))).round().astype(np.int64))
    return [int(user) for user in ordered[picks]] if n > 0 else []


def _item(title: str, item_id: str) -> Markup:
    """An item as its title followed by its original id."""
    return join([title, " ", tag("code", item_id)])


def _recommendation_cells(run: ReportRun, user_id: str) -> list[Markup]:
    """A run's top items for a user: title, id and the history events that drove each."""
    recommender = run.recommender
    explain = recommender.model.explain_method != "none"
    cells = []
    for rec in recommender.recommend(user_id, k=USER_TOP, explain=explain):
        because = ", ".join(f"{event.title} ({event.weight:.2g})" for event in rec.because or [])
        why = tag("div", f"because of {because}", class_="because") if because else Markup("")
        cells.append(join([_item(rec.title, rec.item_id), why]))
    return cells


def _user_part(report: ReportInput, user: int) -> Markup:
    """One user's recent history and each run's top items with explanations."""
    dataset = report.dataset
    user_id = str(dataset.user_ids[user])
    sequence = dataset.sequence(user)
    recent = [_item(dataset.item_title(int(i)), dataset.item_ids[int(i)]) for i in sequence[::-1][:RECENT]]
    columns = [_recommendation_cells(run, user_id) for run in report.runs]
    rows = [
        [str(rank + 1), *(cells[rank] if rank < len(cells) else "" for cells in columns)]
        for rank in range(max(map(len, columns), default=0))
    ]
    return join(
        [
            tag("h3", f"user {user_id}"),
            tag("p", f"{len(sequence):,} events; the most recent first:"),
            tag("ol", *(tag("li", item) for item in recent)),
            table(["#", *(f"{run.label} top {USER_TOP}" for run in report.runs)], rows, numeric_from=None),
        ]
    )


def users_section(report: ReportInput, n: int) -> Markup:
    """A handful of users, from short to long histories, with what each run recommends them next and why."""
    methods = ", ".join(sorted({run.recommender.model.explain_method for run in report.runs}))
    intro = _note(
        f"Recommendations after each user's whole history (seen items left out); 'because of' lists the history "
        f"events that weigh most for the item, by the model's explanation method ({methods})."
    )
    return join([intro, *(_user_part(report, user) for user in example_users(report, n))])
