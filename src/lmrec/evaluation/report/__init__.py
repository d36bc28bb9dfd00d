"""The HTML report of one or more runs (`lmrec report`): one self-contained file that opens offline.

It shows the dataset (counts, every drop reason, sequence lengths, item popularity), training curves, test
metrics with intervals side by side, the paired comparison against the first run, metrics by segment
(history length, target popularity, cold targets), coverage and popularity bias, and a few users' recent
history with each run's top 10 and explanations.

Plots are matplotlib figures rendered to inline SVG. Vega-Altair would need its Vega, Vega-Lite and
Vega-Embed scripts inlined in every report (about 1 MB of JavaScript, which Altair inlines only through the
vl-convert package and its bundled JavaScript runtime) and would draw nothing with scripts disabled.
matplotlib's SVG is static markup: it draws in any browser, printer or mail client, with no script, font or
URL to fetch, its text is escaped by matplotlib and stays searchable, and a test can count the plots by
their `<figure class="plot">`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from tqdm.auto import tqdm

from lmrec.atomic import atomic_write_text
from lmrec.errors import RunError
from lmrec.evaluation.report import sections
from lmrec.evaluation.report.page import page
from lmrec.evaluation.report.runs import ReportInput
from lmrec.version import __version__

__all__ = ["DEFAULT_USERS", "render_report", "write_report"]

DEFAULT_USERS = 5
_SECTIONS = (
    ("dataset", "Dataset", sections.dataset_section),
    ("training", "Training curves", sections.training_section),
    ("metrics", "Test metrics", sections.metrics_section),
    ("comparison", "Paired comparison", sections.comparison_section),
    ("segments", "Metrics by segment", sections.segments_section),
    ("popularity", "Coverage and popularity bias", sections.popularity_section),
)


def render_report(runs: Sequence[str | Path], users: int = DEFAULT_USERS, progress: bool = False) -> str:
    """The report of `runs` (trained on one prepared dataset, compared with the first) as one HTML string;
    `progress` shows a bar of the steps on stderr."""
    report = ReportInput(runs)  # checked before the bar starts, so that a refusal is the only line shown
    builders = [*_SECTIONS, ("users", "Example users", partial(sections.users_section, n=users))]
    parts = []
    with tqdm(total=len(builders), desc="report", unit="step", disable=not progress, leave=False) as steps:
        for section_id, title, build in builders:
            steps.set_postfix_str(title.lower())
            parts.append((section_id, title, build(report)))
            steps.update()
    labels = ", ".join(run.label for run in report.runs)
    meta = [
        f"runs: {', '.join(str(run.path) for run in report.runs)}",
        f"dataset: {report.dataset.name}",
        f"lmrec {__version__}",
        f"written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
    ]
    return page(f"lmrec report: {labels}", meta, parts)


def write_report(
    runs: Sequence[str | Path], out: str | Path | None = None, users: int = DEFAULT_USERS, progress: bool = False
) -> Path:
    """Write the report of `runs` to `out` (default: report.html in the first run) atomically; returns the path."""
    if out is not None and Path(out).is_dir():
        raise RunError(f"{out} is a folder; give the file to write, such as {Path(out) / 'report.html'}.")
    text = render_report(runs, users, progress)
    path = Path(out) if out is not None else Path(runs[0]) / "report.html"
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise RunError(f"cannot write the report to {path}: {exc.strerror or exc}.") from None
    return path
