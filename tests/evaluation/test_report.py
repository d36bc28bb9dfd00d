"""The HTML report on two tiny trained runs: every section and plot, the paired comparison, escaped data, and
nothing that a browser would fetch."""

from __future__ import annotations

import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from lmrec import api
from lmrec.errors import RunError
from lmrec.evaluation.report import render_report, write_report
from lmrec.evaluation.report.segments import gini, history_buckets, popularity_tiers, tier_shares

FAST = ["model.hidden=16", "model.max_len=8", "train.batch_size=16", "train.lr=0.01", "eval.ks=[5,10]"]
SECTIONS = (
    "Dataset",
    "Training curves",
    "Test metrics",
    "Paired comparison",
    "Metrics by segment",
    "Coverage and popularity bias",
    "Example users",
)
TITLE = '<script>alert({i})</script> Film {i} & "co"'  # item titles are data: they must arrive as text
BAD_ROW = 'u1,i3,<img src="http://tracker.test/pixel.png">'  # a dropped row shown in the report, escaped


def _prepare(root: Path) -> Path:
    """60 users walking a cycle of 20 items, titles full of markup, and two rows that cleaning drops."""
    rng = np.random.default_rng(0)
    rows = []
    for user in range(60):
        start = int(rng.integers(20))
        rows += [f"u{user},i{(start + t) % 20 + 1},{t}" for t in range(int(rng.integers(6, 20)))]
    (root / "log.csv").write_text("\n".join(["user_id,item_id,timestamp", *rows, BAD_ROW, "u99,,3"]) + "\n")
    titles = [f'i{i},"{TITLE.format(i=i).replace(chr(34), chr(34) * 2)}"' for i in range(1, 21)]
    (root / "items.csv").write_text("\n".join(["item_id,title", *titles]) + "\n")
    api.prepare(root / "log.csv", root / "data", items=root / "items.csv")
    return root / "data"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A SASRec and a GRU4Rec run, three epochs each, on the marked-up dataset."""
    root = tmp_path_factory.mktemp("report")
    data = _prepare(root)
    for model in ("sasrec", "gru4rec"):
        api.train(data, root / model, model=model, overrides=[*FAST, "train.epochs=3"])
    return [root / "sasrec", root / "gru4rec"]


@pytest.fixture(scope="module")
def page(runs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> str:
    """The report of both runs, written to a file and read back."""
    out = write_report(runs, tmp_path_factory.mktemp("out") / "report.html", users=3)
    return out.read_text()


class _Elements(HTMLParser):
    """Every start tag with its attributes, and the text of every <style> element."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.styles: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        if self.tags and self.tags[-1][0] == "style":
            self.styles.append(data)


def _elements(page: str) -> _Elements:
    parser = _Elements()
    parser.feed(page)
    return parser


def test_every_section_and_plot(page: str) -> None:
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page
    plots = re.findall(r'<figure class="plot" id="(plot-[a-z-]+)">\s*<svg', page)
    assert plots == [
        "plot-sequence-lengths",
        "plot-item-popularity",
        "plot-training-curves",
        "plot-test-metrics",
        "plot-paired",
        "plot-segment-history",
        "plot-segment-popularity",
        "plot-popularity-bias",
    ]
    assert page.count("<h3>user ") == 3 and '<div class="because">because of ' in page
    ids = [attrs["id"] for _, attrs in _elements(page).tags if "id" in attrs]
    assert len(ids) == len(set(ids)), "ids are unique across all the inlined SVGs"


def test_the_dataset_shows_every_drop_reason(page: str) -> None:
    for reason in ("unparsable timestamp", "missing item", "users without events"):
        assert f"<td>{reason}</td>" in page
    assert "events per user" in page and "popularity tier" in page


def test_paired_comparison_against_the_first_run(page: str) -> None:
    assert "gru4rec − sasrec" in page and "p: gru4rec − sasrec" in page
    comparison = page[page.index('<section id="comparison">') : page.index('<section id="segments">')]
    assert re.search(r"<td>ndcg@10</td><td class=\"num\">(<span class=\"significant\">)?[+-]0\.\d{4} \[", comparison)
    assert "Paired bootstrap" in comparison


def test_titles_and_raw_rows_are_escaped(page: str) -> None:
    assert "<script" not in page
    assert "&lt;script&gt;alert(" in page and "&amp; &quot;co&quot;" in page
    assert "&lt;img src=&quot;http://tracker.test/pixel.png&quot;&gt;" in page  # the dropped row, as text


def test_nothing_is_fetched_from_the_network(page: str) -> None:
    elements = _elements(page)
    assert not {"script", "link", "img", "iframe", "object", "embed", "image"} & {tag for tag, _ in elements.tags}
    for tag, attrs in elements.tags:
        for name, value in attrs.items():
            if name in ("src", "href", "xlink:href", "srcset", "action", "poster", "data"):
                assert value and value.startswith("#"), f"<{tag} {name}={value!r}> points outside the page"
            assert not re.search(r"url\(\s*['\"]?(?!#)", value or ""), f"<{tag} {name}={value!r}> loads a resource"
    assert not any(re.search(r"url\(|@import", style) for style in elements.styles)
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", page)


def test_one_run_has_no_comparison_and_the_same_runs_give_the_same_page(runs: list[Path]) -> None:
    page = render_report(runs[:1], users=1)
    assert "One run only" in page and 'id="plot-paired"' not in page
    assert page.count('<figure class="plot"') == 7
    written = re.compile(r"written [0-9-]+ [0-9:]+ UTC")
    assert written.sub("", render_report(runs[:1], users=1)) == written.sub("", page)


def test_a_model_without_epochs_or_explanations(cyclic_dataset: Path, tmp_path: Path) -> None:
    api.train(cyclic_dataset, tmp_path / "pop", model="pop")
    page = render_report([tmp_path / "pop"], users=2)
    assert "No training epochs" in page and 'id="plot-training-curves"' not in page
    assert page.count("<h3>user ") == 2 and 'class="because"' not in page


def test_runs_on_other_targets_are_refused(runs: list[Path], cyclic_dataset: Path, tmp_path: Path) -> None:
    api.train(cyclic_dataset, tmp_path / "other", model="pop")
    with pytest.raises(RunError, match="not on the same targets"):
        render_report([runs[0], tmp_path / "other"])


def test_a_folder_that_is_not_a_run_is_one_sentence(tmp_path: Path, runs: list[Path]) -> None:
    with pytest.raises(RunError, match=r"is not an lmrec run directory \(no run.json\)"):
        write_report([tmp_path], tmp_path / "report.html")
    with pytest.raises(RunError, match="is a folder"):
        write_report(runs[:1], tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(RunError, match="cannot write the report to"):
        write_report(runs[:1], tmp_path / "file" / "report.html")


def test_popularity_tiers_split_the_training_events_in_thirds() -> None:
    counts = np.array([0, 30, 20, 10, 10, 10, 10, 0])  # item 0 is padding, item 7 is cold
    assert popularity_tiers(counts).tolist() == [3, 0, 1, 1, 2, 2, 2, 3]
    assert tier_shares(np.array([1, 1, 2, 7, 0]), popularity_tiers(counts)).tolist() == [0.5, 0.25, 0, 0.25]


def test_history_buckets_are_about_equally_full_and_labelled() -> None:
    buckets, labels = history_buckets(np.array([1, 1, 2, 3, 5, 8, 13, 21, 34, 55]), n=2)
    assert labels == ["1–5", "8–55"] and buckets.tolist() == [0] * 5 + [1] * 5
    assert history_buckets(np.array([4, 4, 4]))[1] == ["4"]


def test_gini_of_recommendation_counts() -> None:
    assert gini(np.array([[1, 2], [3, 4]]), 4) == pytest.approx(0.0)
    assert gini(np.array([[1], [1], [1]]), 4) == pytest.approx(0.75)


def test_the_report_renders_in_a_real_browser_offline(runs: list[Path], tmp_path: Path) -> None:
    """Every plot has a drawn SVG, nothing logs an error, nothing is requested but the file itself, and no
    title ran as script; with $LMREC_SCREENSHOTS the screenshot is the README's."""
    from browser_helpers import console_errors, open_browser, requested

    out = write_report(runs, tmp_path / "report.html", users=3)
    for browser in open_browser(tmp_path):
        browser.get(out.as_uri())
        sizes = browser.execute_script(
            "return [...document.querySelectorAll('figure.plot')].map((figure) => {"
            " const svg = figure.querySelector('svg'); if (!svg) return 0;"
            " const box = svg.getBoundingClientRect(); return box.width * box.height; })"
        )
        assert len(sizes) == 8 and all(size > 0 for size in sizes), sizes
        assert browser.execute_script("return document.scripts.length") == 0
        assert console_errors(browser) == []
        assert {url for _, url in requested(browser)} == {out.as_uri()}
        browser.execute_script("document.getElementById('plot-training-curves').scrollIntoView(); scrollBy(0, -90)")
        assert browser.save_screenshot(str(tmp_path / "report.png"))
        folder = os.environ.get("LMREC_SCREENSHOTS")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tmp_path / "report.png", Path(folder) / "report.png")
