"""Server-side SVG line charts of the station page (no JavaScript, no library).

:func:`line_chart` draws one series of (time, value) points; gaps (None) break the line.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape

__all__ = ["line_chart"]


def line_chart(
    points: Sequence[tuple[datetime, float | None]],
    *,
    title: str,
    unit: str = "",
    width: int = 420,
    height: int = 120,
) -> str:
    """An ``<svg>`` element (a string) of ``points`` (oldest first): the line, the min and max
    values on the left, the first and last times under it. With fewer than two values it
    says "no data"."""
    pad_left, pad_bottom, pad_top = 48, 18, 16
    inner_w, inner_h = width - pad_left - 6, height - pad_bottom - pad_top
    values = [v for _, v in points if v is not None]
    head = (
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
        f'<text x="{pad_left}" y="11" class="chart-title">{escape(title)}</text>'
        f'<rect x="{pad_left}" y="{pad_top}" width="{inner_w}" height="{inner_h}" '
        'class="chart-frame"/>'
    )
    if len(values) < 2:
        return head + f'<text x="{pad_left + 8}" y="{pad_top + 24}">no data</text></svg>'
    t0, t1 = points[0][0].timestamp(), points[-1][0].timestamp()
    span_t = (t1 - t0) or 1.0
    low, high = min(values), max(values)
    if high == low:
        low, high = low - 1, high + 1
    paths: list[list[str]] = [[]]
    for at, value in points:
        if value is None:
            if paths[-1]:
                paths.append([])
            continue
        x = pad_left + (at.timestamp() - t0) / span_t * inner_w
        y = pad_top + (1 - (value - low) / (high - low)) * inner_h
        paths[-1].append(f"{x:.1f},{y:.1f}")
    lines = "".join(
        f'<polyline class="chart-line" fill="none" points="{" ".join(p)}"/>' for p in paths if p
    )
    u = escape(unit)
    return (
        head
        + lines
        + f'<text x="{pad_left - 4}" y="{pad_top + 9}" text-anchor="end">{high:.4g}{u}</text>'
        + f'<text x="{pad_left - 4}" y="{pad_top + inner_h}" text-anchor="end">{low:.4g}{u}</text>'
        + f'<text x="{pad_left}" y="{height - 4}">{points[0][0]:%m-%d %H:%M}</text>'
        + f'<text x="{width - 6}" y="{height - 4}" text-anchor="end">'
        + f"{points[-1][0]:%m-%d %H:%M} UTC</text></svg>"
    )
