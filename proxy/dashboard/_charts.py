"""Inline SVG bar charts (no JavaScript, no external assets)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["bars", "columns"]

_ROW = 22


def bars(items: Sequence[tuple[str, int]], title: str, width: int = 520) -> str:
    """Horizontal bars, one per (label, value)."""
    if not items:
        return f'<p class="muted">{escape(title)}: no data</p>'
    top = max(v for _, v in items) or 1
    label_w, bar_w = 180, width - 240
    rows = []
    for i, (label, value) in enumerate(items):
        y = i * _ROW
        w = max(1, round(bar_w * value / top))
        rows.append(
            f'<text x="0" y="{y + 15}" class="lbl">{escape(label[:28])}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{w}" height="16" class="bar"/>'
            f'<text x="{label_w + w + 6}" y="{y + 15}" class="val">{value}</text>')
    height = len(items) * _ROW + 4
    return (f'<svg role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
            f'<title>{escape(title)}</title>{"".join(rows)}</svg>')


def columns(items: Sequence[tuple[str, int, int]], title: str, width: int = 720) -> str:
    """Stacked columns over time: (label, allowed, denied)."""
    if not items:
        return f'<p class="muted">{escape(title)}: no data</p>'
    height, base = 160, 140
    top = max(a + d for _, a, d in items) or 1
    step = width / len(items)
    col = max(1.0, step * 0.8)
    parts = []
    for i, (label, allowed, denied) in enumerate(items):
        x = i * step
        ha, hd = base * allowed / top, base * denied / top
        parts.append(
            f'<g><title>{escape(label)}: {allowed} allowed, {denied} denied</title>'
            f'<rect x="{x:.1f}" y="{base - ha:.1f}" width="{col:.1f}" height="{ha:.1f}" class="bar"/>'
            f'<rect x="{x:.1f}" y="{base - ha - hd:.1f}" width="{col:.1f}" height="{hd:.1f}" '
            f'class="deny"/></g>')
    first, last = escape(items[0][0]), escape(items[-1][0])
    parts.append(f'<text x="0" y="{height - 4}" class="lbl">{first}</text>'
                 f'<text x="{width}" y="{height - 4}" class="lbl" text-anchor="end">{last}</text>')
    return (f'<svg role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
            f'<title>{escape(title)}</title>{"".join(parts)}</svg>')
