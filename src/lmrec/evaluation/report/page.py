"""The report's HTML: small builders that escape every piece of data, and the page around the sections.

Data (run names, paths, item titles, drop reasons, raw rows) is always passed as plain values and escaped
with `html.escape`; only fragments these builders made (`Markup`) and the plots' SVG go in as they are. The
page has its style inline and links only to its own sections, so it opens offline and fetches nothing.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 0 24px 48px; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
h3 { margin-top: 1.4em; } nav a { margin-right: 1em; } .meta, figcaption, .note { color: #666; }
table { border-collapse: collapse; margin: 0.6em 0 0.4em; }
th, td { border-bottom: 1px solid #eee; padding: 3px 10px 3px 0; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
.significant { font-weight: 600; } .because { color: #666; font-size: 0.9em; } code { font-size: 0.92em; }
"""


class Markup(str):
    """HTML made by these builders (already escaped), inserted as it is."""


def esc(value: object) -> Markup:
    """`value` as HTML: Markup unchanged, anything else as escaped text."""
    return value if isinstance(value, Markup) else Markup(html.escape(str(value)))


def tag(name: str, *content: object, **attributes: str) -> Markup:
    """An element with escaped attributes (a trailing `_` is dropped: `class_`) and escaped content."""
    attrs = "".join(f' {key.rstrip("_")}="{html.escape(value)}"' for key, value in attributes.items())
    return Markup(f"<{name}{attrs}>{''.join(esc(part) for part in content)}</{name}>")


def join(parts: Iterable[object], separator: str = "") -> Markup:
    """Fragments and values, escaped, one after another."""
    return Markup(html.escape(separator).join(esc(part) for part in parts))


def table(
    header: Sequence[object], rows: Iterable[Sequence[object]], caption: str = "", numeric_from: int | None = 1
) -> Markup:
    """A table with a header row and a caption below it, every cell escaped unless it is Markup; the columns
    from `numeric_from` on hold numbers and are right-aligned (None: no column does)."""

    def cells(name: str, values: Sequence[object]) -> Markup:
        numeric = [numeric_from is not None and index >= numeric_from for index in range(len(values))]
        return join(tag(name, v, class_="num") if n else tag(name, v) for v, n in zip(values, numeric, strict=True))

    head = tag("thead", tag("tr", cells("th", header)))
    body = tag("tbody", join(tag("tr", cells("td", row)) for row in rows))
    return join([tag("table", head, body), *((tag("p", caption, class_="note"),) if caption else ())])


def figure(svg: str, plot_id: str, caption: str) -> Markup:
    """A plot: its SVG (made by `plots`, which escapes its own text) with an escaped caption."""
    return tag("figure", Markup(svg), tag("figcaption", caption), class_="plot", id=plot_id)


def section(section_id: str, title: str, *parts: object) -> Markup:
    """A titled section of the page."""
    return tag("section", tag("h2", title), *parts, id=section_id)


def page(title: str, meta: Sequence[object], sections: Sequence[tuple[str, str, Markup]]) -> str:
    """The whole document: title, a line of facts, a contents line, then the (id, title, html) sections."""
    contents = tag("nav", *(tag("a", name, href=f"#{section_id}") for section_id, name, _ in sections))
    parts = (section(section_id, name, fragment) for section_id, name, fragment in sections)
    facts = tag("p", join(meta, " · "), class_="meta")
    body = tag("body", tag("h1", title), facts, contents, *parts)
    head = tag("head", Markup('<meta charset="utf-8">'), tag("title", title), tag("style", Markup(CSS)))
    return f'<!DOCTYPE html>\n<html lang="en">{head}{body}</html>\n'
