"""A small flame graph renderer: collapsed stacks -> one self-contained SVG.

Root at the bottom, one row per stack depth, each box as wide as the samples that passed
through that frame (children sorted by name, as flame graphs are: x is not time). The
colour is the frame's category (loadtest/profile/stacks.py), the box text the function
name, the tooltip (<title>) the whole frame with its samples and share. No script, so the
SVG shows the same in a browser, an <img> tag and a viewer.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping

WIDTH = 1200
ROW = 17
PAD = 10
FONT = 11
CHAR_W = 6.6  # approx. width of one character at FONT px
MIN_W = 0.3  # boxes narrower than this (px) are left out

COLOURS = {
    "kernel": "#f0a050",
    "llhttp": "#7ac27a",
    "event loop": "#6fa8dc",
    "proxy": "#e06666",
    "interpreter": "#b48ad6",
    None: "#c8c8c8",
}
LEGEND = (
    ("kernel", "kernel"),
    ("llhttp", "parser (llhttp)"),
    ("event loop", "event loop"),
    ("proxy", "proxy's own code"),
    ("interpreter", "interpreter"),
    (None, "generic / other"),
)


class _Node:
    __slots__ = ("children", "name", "total")

    def __init__(self, name: str) -> None:
        self.name = name
        self.total = 0
        self.children: dict[str, _Node] = {}


def _tree(stacks: Mapping[str, int]) -> _Node:
    root = _Node("all")
    for stack, n in stacks.items():
        root.total += n
        node = root
        for frame in stack.split(";"):
            child = node.children.get(frame)
            if child is None:
                child = node.children[frame] = _Node(frame)
            child.total += n
            node = child
    return root


def _depth(node: _Node) -> int:
    return 1 + max((_depth(c) for c in node.children.values()), default=0)


def _short(frame: str) -> str:
    """The function name of "name (where)", for the box text."""
    i = frame.rfind(" (")
    return frame[:i] if i > 0 and frame.endswith(")") else frame


def render(
    stacks: Mapping[str, int],
    title: str,
    category: Callable[[str], str | None],
) -> str:
    root = _tree(stacks)
    total = root.total or 1
    depth = _depth(root)
    top = PAD + 2 * ROW  # title and legend
    height = top + depth * ROW + PAD
    scale = (WIDTH - 2 * PAD) / total
    out = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}" font-family="monospace" font-size="{FONT}">'
        ),
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        f'<text x="{PAD}" y="{PAD + FONT}" font-size="{FONT + 2}">{html.escape(title)}</text>',
    ]
    x = PAD
    for cat, label in LEGEND:
        out.append(
            f'<rect x="{x}" y="{PAD + ROW + 3}" width="{FONT}" height="{FONT}" '
            f'fill="{COLOURS[cat]}"/><text x="{x + FONT + 4}" y="{PAD + ROW + FONT + 2}">'
            f"{html.escape(label)}</text>"
        )
        x += int(FONT + 12 + CHAR_W * len(label))

    def box(node: _Node, x0: float, level: int) -> None:
        w = node.total * scale
        if w < MIN_W:
            return
        y = height - PAD - (level + 1) * ROW
        cat = category(node.name) if level > 0 else None
        pct = 100.0 * node.total / total
        tip = f"{node.name}: {node.total} samples, {pct:.2f} %"
        out.append(
            f'<g><title>{html.escape(tip)}</title><rect x="{x0:.2f}" y="{y}" '
            f'width="{w:.2f}" height="{ROW - 1}" fill="{COLOURS.get(cat, COLOURS[None])}" '
            f'rx="2"/>'
        )
        fit = int((w - 4) / CHAR_W)
        if fit >= 3:
            name = _short(node.name)
            text = name if len(name) <= fit else name[: fit - 2] + ".."
            out.append(
                f'<text x="{x0 + 2:.2f}" y="{y + ROW - 5}">{html.escape(text)}</text>'
            )
        out.append("</g>")
        cx = x0
        for child in sorted(node.children.values(), key=lambda c: c.name):
            box(child, cx, level + 1)
            cx += child.total * scale

    box(root, PAD, 0)
    out.append("</svg>")
    return "\n".join(out) + "\n"
