"""The report's figures, drawn with matplotlib's Agg backend (no display) and returned as PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from explore_instruct.errors import MissingExtra

DPI = 130


def _plt() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)  # headless: never try to open a window
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtra("analysis", "matplotlib") from None
    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    # Fixed metadata keeps the bytes identical across runs of the same data.
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    _plt().close(fig)
    return buf.getvalue()


def verb_noun_sunburst(rings: Sequence[tuple[str, Sequence[tuple[str, int]]]], title: str) -> bytes:
    """Inner ring: the top verbs; outer ring: each verb's top nouns (self-instruct's figure layout)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 7.5))
    ax.set_title(title, fontsize=11)
    if not rings:
        ax.text(0.5, 0.5, "no verb–noun pairs found", ha="center", va="center", transform=ax.transAxes)
        ax.axis("off")
        return _png(fig)
    cmap = plt.get_cmap("tab20")
    inner_sizes = [sum(c for _, c in nouns) for _, nouns in rings]
    total = sum(inner_sizes)
    inner_colors = [cmap(i % 20) for i in range(len(rings))]
    outer_sizes: list[int] = []
    outer_labels: list[str] = []
    outer_colors: list[Any] = []
    for i, (_, nouns) in enumerate(rings):
        r, g, b, _a = inner_colors[i]
        for j, (noun, c) in enumerate(nouns):
            outer_sizes.append(c)
            # Labels on slivers would overlap into an unreadable blot; they stay in summary.json.
            outer_labels.append(noun if c / total >= 0.012 else "")
            fade = 0.35 + 0.5 * (j / max(1, len(nouns)))
            outer_colors.append((r + (1 - r) * fade, g + (1 - g) * fade, b + (1 - b) * fade, 1.0))
    inner_labels = [verb if s / total >= 0.02 else "" for (verb, _), s in zip(rings, inner_sizes, strict=True)]
    wedge = {"linewidth": 0.6, "edgecolor": "white"}
    ax.pie(
        outer_sizes,
        radius=1.0,
        labels=outer_labels,
        labeldistance=0.86,
        colors=outer_colors,
        wedgeprops={**wedge, "width": 0.3},
        textprops={"fontsize": 7, "ha": "center", "va": "center"},
        rotatelabels=True,
        startangle=90,
        counterclock=False,
    )
    ax.pie(
        inner_sizes,
        radius=0.7,
        labels=inner_labels,
        labeldistance=0.7,
        colors=inner_colors,
        wedgeprops={**wedge, "width": 0.4},
        textprops={"fontsize": 8, "ha": "center", "va": "center"},
        rotatelabels=True,
        startangle=90,
        counterclock=False,
    )
    ax.set(aspect="equal")
    return _png(fig)


def overlap_histogram(scores: dict[str, Sequence[float]], bins: int = 20) -> bytes:
    """Share of each dataset's instructions per ROUGE-L-to-seed bin, all datasets on one figure."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    edges = [i / bins for i in range(bins + 1)]
    for name, values in scores.items():
        if not values:
            continue
        ax.hist(
            values,
            bins=edges,
            weights=[1 / len(values)] * len(values),
            histtype="step",
            linewidth=1.8,
            label=name,
        )
    ax.set_xlim(0, 1)
    ax.set_xlabel("highest ROUGE-L F1 against the seed instructions")
    ax.set_ylabel("share of instructions")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def length_boxplots(lengths: Mapping[str, Mapping[str, Sequence[int]]]) -> bytes:
    """One panel per field (instruction, input, output): a box per dataset, lengths in words."""
    plt = _plt()
    fields = ("instruction", "input", "output")
    names = list(lengths)
    fig, axes = plt.subplots(1, 3, figsize=(11, 0.5 + 0.55 * max(2, len(names)) + 1.2))
    for ax, field in zip(axes, fields, strict=True):
        data = [list(lengths[n][field]) or [0] for n in names]
        ax.boxplot(data, vert=False, showfliers=False, widths=0.6)
        ax.set_yticks(range(1, len(names) + 1), names if field == "instruction" else [""] * len(names), fontsize=8)
        ax.set_title(field, fontsize=10)
        ax.set_xlabel("words")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def examples_per_task(tasks: Sequence[tuple[str, int, bool]], title: str) -> bytes:
    """Bar per task (level order); pruned tasks are hatched grey bars with grey labels and a legend entry.

    A pruned task gets no generated examples, so its bar is short or empty: its grey label is what
    shows it even then.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * len(tasks) + 2), 4.2))
    xs = list(range(len(tasks)))
    pruned = [p for _, _, p in tasks]
    bars = ax.bar(xs, [n for _, n, _ in tasks], color=["#bbbbbb" if p else "#4c72b0" for p in pruned])
    for bar, is_pruned in zip(bars, pruned, strict=True):
        if is_pruned:
            bar.set_hatch("//")
            bar.set_edgecolor("#888888")
    ax.set_xticks(
        xs,
        [name if len(name) <= 28 else name[:27] + "…" for name, _, _ in tasks],
        rotation=75,
        ha="right",
        fontsize=6,
    )
    for label, is_pruned in zip(ax.get_xticklabels(), pruned, strict=True):
        if is_pruned:
            label.set_color("#888888")
    if any(pruned):
        from matplotlib.patches import Patch

        ax.legend(
            handles=[Patch(facecolor="#bbbbbb", edgecolor="#888888", hatch="//", label=f"pruned ({sum(pruned)})")],
            fontsize=7,
        )
    ax.set_ylabel("examples")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


MAP_TASKS = 10  # top-level tasks with a colour of their own on the embedding map; the rest are grey


def embedding_map(points: Any, tasks: Sequence[str], title: str, method: str) -> bytes:
    """The instructions' embeddings in 2-D, one colour per top-level task (the most common ones)."""
    from collections import Counter

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 5.2))
    common = [t for t, _ in Counter(tasks).most_common(MAP_TASKS)]
    others = [i for i, t in enumerate(tasks) if t not in common]
    if others:
        ax.scatter(points[others, 0], points[others, 1], s=4, c="#bbbbbb", alpha=0.5, label="other tasks")
    colours = plt.get_cmap("tab10")
    for k, task in enumerate(common):
        idx = [i for i, t in enumerate(tasks) if t == task]
        ax.scatter(points[idx, 0], points[idx, 1], s=5, color=colours(k), alpha=0.7, label=task[:40])
    ax.set_xlabel(f"{method.upper()} 1")
    ax.set_ylabel(f"{method.upper()} 2")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, markerscale=2.5, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _png(fig)
