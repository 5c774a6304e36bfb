"""Model answers as the HTML of their Markdown, sanitised: raters and reviewers read formatted text.

CommonMark with raw HTML off (a `<script>` or `<img onerror>` in an answer stays escaped text), and
links or images only to http, https or mailto addresses: a `javascript:`, `vbscript:`, `data:` or
relative target is not made a link at all and shows as the text it was written as. Links open in a
new tab without a referrer, so a rater's secret address never reaches another site.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from markupsafe import Markup

LINK_SCHEMES = ("http://", "https://", "mailto:")


def safe_link(url: str) -> bool:
    """Only absolute http, https and mailto targets (the parser hands over the normalised URL)."""
    return url.strip().lower().startswith(LINK_SCHEMES)


def _open_links_apart(self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
    tokens[idx].attrSet("rel", "noopener noreferrer nofollow")
    tokens[idx].attrSet("target", "_blank")
    return self.renderToken(tokens, idx, options, env)


@cache
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False})
    md.validateLink = safe_link  # type: ignore[method-assign]
    md.add_render_rule("link_open", _open_links_apart)
    return md


def render_markdown(text: str) -> Markup:
    """The sanitised HTML of `text` (a Jinja filter: `{{ answer|markdown }}`)."""
    return Markup(_parser().render(text or ""))
