"""Rendering: a list of blocks -> Markdown and a self-contained HTML page (Jinja2 templates, autoescape on; PNG images
inlined as base64).

A block is a tuple: ("h2", text), ("h3", text), ("p", text), ("table", df, index), ("img", caption, path),
("gallery", [(caption, path)]), ("details", summary, df), ("link", text, file name in the report dir). Text is
escaped (Markdown `code` spans become <code>); tables are pandas' HTML with its cells escaped. A section renders
through ``templates/sections/<name>.html.j2`` when it has one, else the generic ``templates/section.html.j2``.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from neuromf.report.core import _fmt, md_table

EXCLUDED = ("failed", "diverged", "running", "unknown")  # run states marked in the tables


def html_text(text: str) -> Markup:
    """Report prose -> HTML: escaped, with the Markdown `code` spans the texts use as <code> elements."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


def html_table(df: pd.DataFrame, index: bool = False) -> Markup:
    """pandas' HTML table (every cell escaped by pandas), with excluded runs' states marked."""
    t = df.to_html(index=index, na_rep="", float_format=_fmt, escape=True)
    for status in EXCLUDED:
        t = t.replace(f"<td>{status}</td>", f'<td class="excl">{status}</td>')
    return Markup(t)


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


_ENV = Environment(
    loader=PackageLoader("neuromf.report", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters.update(text=html_text, table=html_table, data_uri=data_uri)


def template_of(section: str) -> str:
    """The section's own template when it has one, else the generic one."""
    name = f"sections/{section}.html.j2"
    return name if name in _ENV.list_templates() else "section.html.j2"


def markdown(block: tuple) -> str:
    kind = block[0]
    if kind == "h2":
        return f"\n## {block[1]}\n"
    if kind == "h3":
        return f"\n### {block[1]}\n"
    if kind == "p":
        return block[1] + "\n"
    if kind == "table":
        return md_table(block[1], index=block[2])
    if kind == "img":
        return f"![{block[1]}]({Path(block[2]).name})\n"
    if kind == "gallery":
        return "".join(f"![{c}]({Path(p).name})\n*{c}*\n\n" for c, p in block[1])
    if kind == "details":
        return f"<details><summary>{block[1]}</summary>\n\n{md_table(block[2], index=True)}\n</details>\n"
    if kind == "link":
        return f"[{block[1]}]({block[2]})\n"
    raise ValueError(f"unknown report block {kind!r}")


def render(title: str, blocks: list[tuple], sections: list[tuple[str, list[tuple]]] | None = None) -> tuple[str, str]:
    """Markdown and self-contained HTML of ``blocks`` (one generic section), or of ``sections``
    ([(name, blocks)], each through its template)."""
    sections = sections if sections is not None else [("main", blocks)]
    md = [f"# {title}\n"] + [markdown(b) for _, bl in sections for b in bl]
    page = _ENV.get_template("report.html.j2").render(
        title=title,
        sections=[{"name": name, "blocks": bl, "template": template_of(name)} for name, bl in sections],
    )
    return "\n".join(md), page
