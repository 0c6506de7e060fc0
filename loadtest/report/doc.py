"""A tiny document model rendered twice: report.md and a self-contained report.html.

Inline markup inside text: **bold** and `code` only (rendered in both outputs).
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    level: int  # 1..4
    text: str
    anchor: str = ""


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Alert:
    text: str  # shown loud: a red box in HTML, a bold quote in Markdown


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    text: bool = False  # a key/value table of words: left-aligned in HTML
    note: str = ""  # a line under the table (e.g. the ↓/↑ legend)


@dataclass(frozen=True)
class Image:
    path: Path  # the PNG (or SVG) on disk (embedded in HTML, linked relatively in Markdown)
    rel: str  # path relative to the report, e.g. plots/s1-capacity.png
    alt: str


Block = Heading | Para | Alert | Bullets | Table | Image


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Alert):
            out.append("> **⚠ " + b.text + "**")
        elif isinstance(b, Bullets):
            out.append("\n".join("- " + item for item in b.items))
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in b.headers) + " |"]
            lines.append("|" + "|".join(" --- " for _ in b.headers) + "|")
            for row in b.rows:
                lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
            out.append("\n".join(lines))
            if b.note:
                out.append(f"_{b.note}_")
        elif isinstance(b, Image):
            out.append(f"![{b.alt}]({b.rel})")
    return "\n\n".join(out) + "\n"


_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")


def _inline(text: str) -> str:
    escaped = html.escape(text, quote=False)
    escaped = _CODE.sub(r"<code>\1</code>", escaped)
    return _BOLD.sub(r"<strong>\1</strong>", escaped)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1180px;margin:2em auto;
padding:0 1em;color:#1b1b1b;line-height:1.45}
h1,h2,h3{line-height:1.2} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right;vertical-align:top;
white-space:nowrap} td:first-child{white-space:normal;min-width:11em}
.scroll{overflow-x:auto}
th{background:#f2f2f2} td:first-child,th:first-child{text-align:left}
table.text td{text-align:left}
td.invalid{background:#fde2e2;color:#8a0000;font-weight:600}
.warning{background:#b00020;color:#fff;font-weight:700;padding:.8em 1em;margin:1em 0;
border-radius:4px;font-size:1.1em}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
code{background:#f4f4f4;padding:0 .2em}
p.note{font-size:.8em;color:#555;margin-top:-.5em}
"""


def to_html(blocks: list[Block], title: str) -> str:
    """One HTML file with everything inline: CSS in <style>, plots as data: URIs."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            ident = f' id="{html.escape(b.anchor)}"' if b.anchor else ""
            out.append(f"<h{b.level}{ident}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Alert):
            out.append(f'<div class="warning">⚠ {_inline(b.text)}</div>')
        elif isinstance(b, Bullets):
            items = "".join(f"<li>{_inline(i)}</li>" for i in b.items)
            out.append(f"<ul>{items}</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.headers)
            body = []
            for row in b.rows:
                cells = []
                for c in row:
                    cls = ' class="invalid"' if "INVALID" in c else ""
                    cells.append(f"<td{cls}>{_inline(c)}</td>")
                body.append("<tr>" + "".join(cells) + "</tr>")
            cls = ' class="text"' if b.text else ""
            out.append(
                f'<div class="scroll"><table{cls}><thead><tr>{head}</tr></thead>'
                f"<tbody>{''.join(body)}</tbody></table></div>"
            )
            if b.note:
                out.append(f'<p class="note">{_inline(b.note)}</p>')
        elif isinstance(b, Image):
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            mime = "image/svg+xml" if b.path.suffix == ".svg" else "image/png"
            out.append(
                f'<img alt="{html.escape(b.alt)}" src="data:{mime};base64,{data}">'
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"
