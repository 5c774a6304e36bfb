"""A task tree as collapsible HTML (`<details>`/`<summary>`): no script, no network, every text escaped."""

from __future__ import annotations

from html import escape

from explore_instruct.tree import DomainTree, TaskNode

EXAMPLES_SHOWN = 3
TEXT_CHARS = 300

TREE_CSS = """
.tree details { margin-left: 1.1em; }
.tree summary { cursor: pointer; padding: 1px 0; }
.tree summary .n { color: #666; font-size: 0.85em; }
.tree .pruned > summary { color: #999; text-decoration: line-through; }
.tree .reason { color: #444; font-style: italic; margin: 2px 0 4px 1.1em; }
.tree ol.ex { margin: 2px 0 6px 1.1em; font-size: 0.9em; }
.tree ol.ex li { margin-bottom: 4px; }
.tree .lbl { color: #888; font-size: 0.85em; }
"""


def _short(text: str) -> str:
    text = " ".join(text.split())
    return escape(text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1] + "…")


def _node_html(node: TaskNode, depth: int, open_depth: int) -> str:
    cls = ' class="pruned"' if node.pruned else ""
    opened = " open" if depth < open_depth else ""
    badge = f"{len(node.examples)} examples, {len(node.children)} subtasks" + (", pruned" if node.pruned else "")
    parts = [f'<details{cls}{opened}><summary>{escape(node.name)} <span class="n">({badge})</span></summary>']
    if node.reason:
        parts.append(f'<div class="reason">{_short(node.reason)}</div>')
    if node.examples:
        parts.append('<ol class="ex">')
        for ex in node.examples[:EXAMPLES_SHOWN]:
            item = f'<span class="lbl">instruction</span> {_short(ex.instruction)}'
            if ex.input.strip():
                item += f'<br><span class="lbl">input</span> {_short(ex.input)}'
            item += f'<br><span class="lbl">output</span> {_short(ex.output)}'
            parts.append(f"<li>{item}</li>")
        parts.append("</ol>")
    parts.extend(_node_html(child, depth + 1, open_depth) for child in node.children)
    parts.append("</details>")
    return "".join(parts)


def tree_fragment(tree: DomainTree, open_depth: int = 1) -> str:
    """The tree as a `<div class="tree">` block; levels above `open_depth` start expanded."""
    return f'<div class="tree">{_node_html(tree.root, 0, open_depth)}</div>'


def tree_page(tree: DomainTree, title: str) -> str:
    """A standalone page holding just the tree (opens offline)."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>body{{font-family:sans-serif;max-width:60em;margin:1em auto;}}"
        f"{TREE_CSS}</style></head><body><h1>{escape(title)}</h1>{tree_fragment(tree)}</body></html>\n"
    )
