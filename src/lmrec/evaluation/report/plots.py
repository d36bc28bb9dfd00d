"""The report's plots: matplotlib figures rendered to inline SVG that needs no script, font or network.

Figures are built with `matplotlib.figure.Figure` (no pyplot: no global state, no GUI backend). Text stays
text (`svg.fonttype: none`, drawn in the browser's sans-serif), mathtext is off (a `$` in a run name is a
dollar sign), and every id inside a plot is prefixed with the plot's own id, so that several SVGs in one
page never share an id and the same runs give byte-identical plots.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure

STYLE = {
    "svg.fonttype": "none",
    "svg.hashsalt": "lmrec",  # the ids of clip paths from their content, not at random (ids get the plot's prefix)
    "text.parse_math": False,
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
}
NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}
WIDTH = 7.5  # inches, 720 CSS pixels: within the page's column
TIER_COLOURS = ("#4c72b0", "#55a868", "#c44e52", "#8c8c8c")


@dataclass(frozen=True)
class Point:
    """A value with its interval, as one dot of an interval plot."""

    label: str
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class Series:
    """One group's bars of a grouped bar chart, with optional interval whiskers."""

    label: str
    values: Sequence[float]
    lows: Sequence[float] | None = None
    highs: Sequence[float] | None = None


def _svg(figure: Figure, plot_id: str) -> str:
    """The figure as an `<svg>` element for inlining: no XML prolog or DTD, namespaces implied by HTML, ids
    prefixed with `plot_id`."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata=NO_METADATA, bbox_inches="tight")
    text = buffer.getvalue()
    text = re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", text[text.index("<svg") :])
    text = re.sub(r'\bid="', f'id="{plot_id}-', text)
    return re.sub(r'(href="#|url\(#)', rf"\g<1>{plot_id}-", text)


def _figure(ncols: int = 1, height: float = 2.8) -> tuple[Figure, list[Axes]]:
    """A figure of `ncols` side-by-side panels across the page's width."""
    figure = Figure(figsize=(WIDTH, height), layout="constrained")
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    return figure, list(axes)


def _plain_labels(axis: Axis) -> None:
    """Label a log-scaled axis at 1, 2, 5, 10, 20 … with plain numbers rather than mathtext powers of ten."""
    axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def sequence_lengths(lengths: np.ndarray, plot_id: str) -> str:
    """Histogram of events per user on logarithmic bins."""
    with mpl.rc_context(STYLE):
        figure, (axes,) = _figure()
        low, high = max(int(lengths.min()), 1), max(int(lengths.max()), 2)
        bins = np.unique(np.geomspace(low, high + 1, 30).round())
        axes.hist(lengths, bins=bins, color=TIER_COLOURS[0])
        axes.set_xscale("log")
        _plain_labels(axes.xaxis)
        axes.set(xlabel="events per user (log scale)", ylabel="users")
        return _svg(figure, plot_id)


def item_popularity(counts: np.ndarray, tiers: np.ndarray, names: Sequence[str], plot_id: str) -> str:
    """Training events of each item against its popularity rank (log–log), coloured by popularity tier."""
    with mpl.rc_context(STYLE):
        figure, (axes,) = _figure()
        order = np.argsort(-counts[1:], kind="stable") + 1
        ranks = np.arange(1, order.size + 1)
        for tier, name in enumerate(names):
            shown = tiers[order] == tier
            if shown.any() and counts[order][shown].max() > 0:
                axes.plot(ranks[shown], counts[order][shown], ".", ms=3, color=TIER_COLOURS[tier], label=name)
        axes.set_xscale("log")
        axes.set_yscale("log")
        _plain_labels(axes.xaxis)
        _plain_labels(axes.yaxis)
        axes.set(xlabel="item popularity rank (log scale)", ylabel="training events (log scale)")
        axes.legend()
        return _svg(figure, plot_id)


def training_curves(curves: Sequence[tuple[str, list[dict], int]], metric: str, plot_id: str) -> str:
    """Training loss and the validation `metric` per epoch of each (label, history, best epoch) run."""
    with mpl.rc_context(STYLE):
        figure, (loss, valid) = _figure(ncols=2)
        for label, history, best in curves:
            epochs = [record["epoch"] + 1 for record in history]
            (line,) = loss.plot(epochs, [record["loss"] for record in history], marker=".", label=label)
            scored = [record for record in history if metric in record]
            colour = line.get_color()
            valid.plot([r["epoch"] + 1 for r in scored], [r[metric] for r in scored], marker=".", color=colour)
            at_best = [r[metric] for r in scored if r["epoch"] == best]
            if at_best:
                valid.plot([best + 1], at_best, "*", ms=10, color=colour)
        for panel in (loss, valid):
            panel.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        loss.set(xlabel="epoch", ylabel="training loss", title="loss")
        valid.set(xlabel="epoch", ylabel=f"validation {metric}", title=f"validation {metric} (★ best epoch)")
        loss.legend()
        return _svg(figure, plot_id)


def intervals(panels: dict[str, Sequence[Point]], plot_id: str, zero_line: bool = False) -> str:
    """One panel per metric: each run's value as a dot with its interval as a whisker."""
    with mpl.rc_context(STYLE):
        figure, axes = _figure(ncols=len(panels), height=0.6 + 0.4 * max(len(p) for p in panels.values()))
        for panel, (metric, points) in zip(axes, panels.items(), strict=True):
            rows = np.arange(len(points))[::-1]
            values = np.array([p.value for p in points])
            whiskers = np.array([[p.value - p.low for p in points], [p.high - p.value for p in points]])
            panel.errorbar(values, rows, xerr=whiskers, fmt="o", capsize=3)
            panel.set_yticks(rows, [p.label for p in points])
            panel.set(title=metric, ylim=(-0.6, len(points) - 0.4))
            if zero_line:
                panel.axvline(0, color="black", lw=0.8)
        return _svg(figure, plot_id)


def grouped_bars(
    categories: Sequence[str], series: Sequence[Series], ylabel: str, plot_id: str, percent: bool = False
) -> str:
    """Bars per category, one colour per series, with interval whiskers where a series has them; `percent`
    labels the values (shares of 1) as percentages."""
    with mpl.rc_context(STYLE):
        figure, (axes,) = _figure()
        width = 0.8 / len(series)
        for index, group in enumerate(series):
            x = np.arange(len(categories)) + (index - (len(series) - 1) / 2) * width
            values = np.asarray(group.values, dtype=np.float64)
            errors = None
            if group.lows is not None and group.highs is not None:
                errors = np.clip([values - np.asarray(group.lows), np.asarray(group.highs) - values], 0, None)
            axes.bar(x, values, width, yerr=errors, capsize=2, label=group.label)
        axes.set_xticks(np.arange(len(categories)), list(categories))
        axes.set(ylabel=ylabel)
        if percent:
            axes.yaxis.set_major_formatter(ticker.PercentFormatter(1.0))
        axes.legend()
        return _svg(figure, plot_id)
