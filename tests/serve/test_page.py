"""The web page in a real headless browser (Debian's chromium through its chromium-driver and Selenium), on a
real `lmrec serve` over a tiny run whose most popular item has a title made of markup.

Without chromium and chromedriver on the PATH the browser tests skip with the reason, unless CI=true, where
they fail. `LMREC_SCREENSHOTS=DIR` also writes the screenshot of the main test to DIR/page.png (the README's).
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from serve_helpers import AUTH, KEY, TINY, ServerProcess

import lmrec
from browser_helpers import console_errors, open_browser, requested
from lmrec.cli import main
from lmrec.data.dataset import PreparedDataset
from lmrec.serve.page import STATIC

MARKUP_TITLE = "<script>alert(1)</script><img src=x onerror=alert(2)> Oakhurst lamp"
SCREENSHOTS_ENV = "LMREC_SCREENSHOTS"
WAIT = 30.0  # seconds for the page to show what a step expects (two busy cores)
URL = r"[a-z][a-z0-9+.-]*://|\b(?:data|blob|javascript):|[\"'`(=]\s*//|url\("  # any address off this origin
READ = "return [...document.querySelectorAll(arguments[0])].map((node) => node.textContent)"
RECOMMENDED = "return [...document.querySelectorAll('#recs button.item')].map((button) => button.dataset.item)"


@dataclass(frozen=True)
class PageRun:
    """A trained tiny run, the item whose title is markup, and a user whose history holds that item."""

    run: Path
    item: str
    user: str


@pytest.fixture(scope="module")
def page_run(tmp_path_factory: pytest.TempPathFactory) -> PageRun:
    """A synthetic log whose most frequent item gets MARKUP_TITLE, prepared and trained like `tiny_run`."""
    root = tmp_path_factory.mktemp("page")
    log, items = root / "log.csv", root / "log.items.csv"
    main(["data", "synth", "--users", "120", "--items", "60", "--events", "3000", "--out", str(log)])
    with log.open(newline="") as file:
        counts = Counter(row[1] for row in csv.reader(file) if len(row) == 5)
    item = next(i for i, _ in counts.most_common() if i != "item_id")
    with items.open(newline="") as file:
        rows = [[i, MARKUP_TITLE if i == item else title, *rest] for i, title, *rest in csv.reader(file)]
    with items.open("w", newline="") as file:
        csv.writer(file).writerows(rows)
    main(["data", "prepare", str(log), "--items", str(items), "--out", str(root / "d")])
    lmrec.train(root / "d", root / "sasrec", model="sasrec", overrides=TINY)
    dataset = PreparedDataset.load(root / "d")
    index = dataset.item_index[item]
    user = next(str(u) for n, u in enumerate(dataset.user_ids) if index in dataset.sequence(n))
    return PageRun(root / "sasrec", item, user)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Chromium for one test (see browser_helpers)."""
    yield from open_browser(tmp_path)


def serve(server: Callable[..., ServerProcess], run: Path, tmp_path: Path, *options: str) -> ServerProcess:
    """A real `lmrec serve` on the run with a fresh SQLite store."""
    return server(str(run), "--store", f"sqlite:///{tmp_path / 'events.sqlite'}", *options)


def read(service: ServerProcess, path: str, **params: str | int) -> dict:
    """A read of the service's API with the key, to compare the page with."""
    reply = httpx.get(f"{service.url}{path}", params=params, headers=AUTH, timeout=30)
    reply.raise_for_status()
    return reply.json()


def wait_for(browser: WebDriver, condition: Callable[[], object], what: str) -> None:
    """Wait until `condition()` is true, or fail saying what the page did not show."""
    WebDriverWait(browser, WAIT).until(lambda _: condition(), message=f"the page did not show {what}")


def texts(browser: WebDriver, selector: str) -> list[str]:
    """The text content of every element that matches `selector`, read in one script (no stale elements)."""
    return browser.execute_script(READ, selector)


def text(browser: WebDriver, element_id: str) -> str:
    """The rendered text of one element."""
    return browser.find_element(By.ID, element_id).text


def submit(browser: WebDriver, element_id: str, value: str) -> None:
    """Type `value` into an input and submit its form with Enter."""
    field = browser.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(value + "\n")


def pick_user(browser: WebDriver, user: str) -> None:
    """Type the user's id into the search (a search per keystroke) and click them once the list holds only them
    (the answer to the whole id, after which no earlier search renders)."""
    browser.find_element(By.ID, "user-search").send_keys(user)
    wait_for(browser, lambda: texts(browser, "#users button") == [user], f"user {user} alone in the list")
    browser.find_element(By.XPATH, f"//ul[@id='users']//button[text()='{user}']").click()


def history_rows(browser: WebDriver) -> int:
    """How many events the history table shows."""
    return len(browser.find_elements(By.CSS_SELECTOR, "#history tbody tr"))


def no_markup_ran(browser: WebDriver) -> None:
    """No alert is open, and the page holds no element but its own script (no injected script or image)."""
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.accept()
    assert browser.execute_script("return [document.scripts.length, document.images.length]") == [1, 0]


def screenshot(browser: WebDriver, tmp_path: Path) -> Path:
    """Save page.png as a test artefact, and to $LMREC_SCREENSHOTS when set."""
    path = tmp_path / "page.png"
    assert browser.save_screenshot(str(path))
    folder = os.environ.get(SCREENSHOTS_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(folder) / "page.png")
    return path


def test_the_page_uses_no_other_origin_and_renders_data_as_text_only() -> None:
    svg_namespace = 'xmlns="http://www.w3.org/2000/svg"'  # the favicon's XML namespace: a name, not a request
    sources = {path.name: path.read_text().replace(svg_namespace, "") for path in STATIC.iterdir()}
    assert set(sources) == {"index.html", "app.js", "style.css", "favicon.svg"}
    assert not [name for name, source in sources.items() if re.search(URL, source)]
    script = sources["app.js"]
    assert script.count("fetch(") == 1 and "fetch(url," in script  # one call, inside api(), given its paths
    paths = re.findall(r'api\("[A-Z]+", [`"](.{4})', script)
    assert len(paths) == 7 and set(paths) == {"/v1/"}
    forbidden = r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|localStorage|sessionStorage|cookie"
    assert not re.findall(forbidden, script)


def test_a_user_their_history_recommendations_a_click_and_similar_items(
    page_run: PageRun, browser: WebDriver, server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    service = serve(server, page_run.run, tmp_path)
    history = read(service, f"/v1/users/{page_run.user}/history")["events"]
    expected = read(service, f"/v1/users/{page_run.user}/recommendations", k=10, explain="true")

    browser.get(f"{service.url}/")
    wait_for(browser, lambda: text(browser, "key-state") == "enter the API key to start", "the key prompt")
    submit(browser, "key", "not-the-key-0123456789")
    wait_for(browser, lambda: text(browser, "key-state") == "that key is not valid", "a refused key")
    submit(browser, "key", KEY)
    wait_for(browser, lambda: text(browser, "key-state").startswith("key accepted"), "an accepted key")
    assert browser.find_element(By.ID, "key").get_attribute("value") == ""  # the field does not keep it
    pick_user(browser, page_run.user)
    wait_for(browser, lambda: history_rows(browser) == len(history), f"the {len(history)} events of the history")
    wait_for(browser, lambda: len(texts(browser, "#recs li")) == 10, "ten recommendations")

    shown = texts(browser, "#history button.item")
    assert shown == [e["title"] for e in reversed(history)] and MARKUP_TITLE in shown  # newest first, as text
    assert browser.execute_script(RECOMMENDED) == [i["item_id"] for i in expected["items"]]
    assert texts(browser, "#recs button.item") == [i["title"] for i in expected["items"]]
    title = {e["item_id"]: e["title"] for e in history}
    because = [dict.fromkeys(b.get("title") or title[b["item_id"]] for b in i["because"])
               for i in expected["items"] if i["because"]]  # fmt: skip
    lines = [f"because you interacted with {', '.join(past)}" for past in because]
    assert lines and texts(browser, "#recs .because") == lines
    no_markup_ran(browser)

    before = browser.execute_script(RECOMMENDED)
    clicked = before[0]
    browser.find_element(By.CSS_SELECTOR, "#recs button.item").click()
    wait_for(browser, lambda: history_rows(browser) == len(history) + 1, "the history grown by the click")
    wait_for(browser, lambda: clicked not in browser.execute_script(RECOMMENDED), "new recommendations")
    after = browser.execute_script(RECOMMENDED)
    assert len(after) == 10 and after != before  # the viewed item is seen now, so it is not recommended again
    newest = texts(browser, "#history tbody tr:first-child td")
    assert newest[2:] == ["view", "stored"] and newest[1].startswith(expected["items"][0]["title"])
    stored = read(service, f"/v1/users/{page_run.user}/history")["events"][-1]
    assert (stored["item_id"], stored["type"], stored["source"]) == (clicked, "view", "stored")

    markup_row = next(row for row in browser.find_elements(By.CSS_SELECTOR, "#history tbody tr")
                      if MARKUP_TITLE in row.text)  # fmt: skip
    markup_row.find_element(By.CSS_SELECTOR, "button.link").click()
    wait_for(browser, lambda: len(texts(browser, "#similar li")) == 10, "ten similar items")
    assert text(browser, "similar-title") == f"Similar to {MARKUP_TITLE}"
    similar = read(service, f"/v1/items/{page_run.item}/similar", k=10)["items"]
    assert texts(browser, "#similar button.item") == [i["title"] for i in similar]
    no_markup_ran(browser)
    browser.execute_script("document.querySelector('.scroll').scrollTop = 0")  # the newest events in view
    assert screenshot(browser, tmp_path).stat().st_size > 10_000

    assert console_errors(browser) == []
    sent = requested(browser)
    assert all(url.startswith(f"{service.url}/") for _, url in sent), sent
    assert ("POST", f"{service.url}/v1/events") in sent


def test_public_reads_need_no_key_and_a_typed_session_grows_by_clicks(
    page_run: PageRun, browser: WebDriver, server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    service = serve(server, page_run.run, tmp_path, "--public-reads")
    browser.get(f"{service.url}/")
    wait_for(browser, lambda: text(browser, "key-state") == "reads are public; clicks need the key", "public reads")
    pick_user(browser, page_run.user)
    wait_for(browser, lambda: len(texts(browser, "#recs li")) == 10, "ten recommendations without a key")
    rows = history_rows(browser)
    assert rows > 0 and MARKUP_TITLE in texts(browser, "#history button.item")
    browser.find_element(By.CSS_SELECTOR, "#recs button.item").click()
    wait_for(browser, lambda: "needs the API key" in text(browser, "status"), "that a click needs the key")
    assert history_rows(browser) == rows

    submit(browser, "session-items", f"{page_run.item}, not-an-item")
    wait_for(browser, lambda: text(browser, "history-title") == "Session", "the session")
    wait_for(browser, lambda: "1 unknown skipped" in text(browser, "recs-note"), "the session's recommendations")
    assert texts(browser, "#history button.item") == ["not-an-item", MARKUP_TITLE]
    first = browser.execute_script(RECOMMENDED)[0]
    browser.find_element(By.CSS_SELECTOR, "#recs button.item").click()
    wait_for(browser, lambda: history_rows(browser) == 3, "the session grown by the click")
    assert first not in browser.execute_script(RECOMMENDED)
    no_markup_ran(browser)
    assert browser.save_screenshot(str(tmp_path / "page-public.png"))

    assert console_errors(browser) == []
    sent = requested(browser)
    assert all(url.startswith(f"{service.url}/") for _, url in sent), sent
    assert not [url for method, url in sent if method == "POST" and url.endswith("/v1/events")]
