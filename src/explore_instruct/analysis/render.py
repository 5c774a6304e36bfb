"""Render the report's sections to Markdown and to one self-contained HTML page.

The report is built once as a list of sections made of blocks (tables, figures, text, raw HTML), so
`report.md` and `report.html` always say the same thing.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from html import escape

from explore_instruct.analysis.treeview import TREE_CSS


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Figure:
    filename: str  # written next to the report
    png: bytes
    alt: str


@dataclass
class Text:
    text: str


@dataclass
class RawHtml:
    """HTML shown in report.html only; `markdown` is what report.md says in its place."""

    html: str
    markdown: str = ""


Block = Table | Figure | Text | RawHtml


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


def _numeric_columns(t: Table) -> list[bool]:
    """Columns whose every cell reads as a number (right-aligned); "–" marks a missing value."""
    return [i > 0 and all(row[i][:1].isdigit() or row[i] == "–" for row in t.rows) for i in range(len(t.headers))]


def _md_cell(text: str) -> str:
    # Cells hold model-written text (task names, instructions): a `<` would open raw HTML in any
    # renderer that allows it (a card on the Hub, results.md in an editor), so it is written as `&lt;`.
    return text.replace("<", "&lt;").replace("|", "\\|").replace("\n", " ")


def to_markdown(title: str, sections: list[Section]) -> str:
    lines = [f"# {title}", ""]
    for sec in sections:
        lines += [f"## {sec.title}", ""]
        for b in sec.blocks:
            if isinstance(b, Table):
                if b.caption:
                    lines += [b.caption, ""]
                lines.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
                lines.append("|" + "|".join("---:" if num else "---" for num in _numeric_columns(b)) + "|")
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
                lines.append("")
            elif isinstance(b, Figure):
                lines += [f"![{b.alt}]({b.filename})", ""]
            elif isinstance(b, Text):
                lines += [b.text, ""]
            elif b.markdown:
                lines += [b.markdown, ""]
    return "\n".join(lines).rstrip() + "\n"


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 72em;
       margin: 1.5em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 4px; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
figure { margin: 0.8em 0; }
figcaption { color: #555; font-size: 0.9em; }
"""


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in t.headers)
    numeric = _numeric_columns(t)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if numeric[i] else ''}>{escape(c)}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in t.rows
    )
    cap = f"<caption>{escape(t.caption)}</caption>" if t.caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(title: str, sections: list[Section]) -> str:
    """One page with figures embedded as data: URIs, so it opens offline and travels as one file."""
    out = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_CSS}{TREE_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
    ]
    for sec in sections:
        out.append(f"<section><h2>{escape(sec.title)}</h2>")
        for b in sec.blocks:
            if isinstance(b, Table):
                out.append(_html_table(b))
            elif isinstance(b, Figure):
                data = base64.b64encode(b.png).decode("ascii")
                out.append(
                    f'<figure><img alt="{escape(b.alt)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{escape(b.alt)}</figcaption></figure>"
                )
            elif isinstance(b, Text):
                out.append(f"<p>{escape(b.text)}</p>")
            else:
                out.append(b.html)
        out.append("</section>")
    out.append("</body></html>\n")
    return "\n".join(out)
