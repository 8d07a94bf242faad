"""Small inline SVG charts drawn by the server: a region's recent samples and its EMA, no script, no asset.

A chart is a few hundred bytes of markup: a polyline of the measured latencies, a dashed one of the EMA, and a
cross at the top for each failed probe. It carries its own text alternative (`role="img"`, `<title>`), so a
screen reader hears what a sighted reader sees. At most `max_points` points are drawn whatever is passed in
(longer series are reduced to the highest latency of each bucket, so a spike never disappears).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from region_latency.recent import Sample

WIDTH = 160
HEIGHT = 36
PAD = 3
MAX_POINTS = 60


def latency_chart(samples: Sequence[Sample], label: str, *, width: int = WIDTH, height: int = HEIGHT,
                  max_points: int = MAX_POINTS) -> str:
    """An SVG element charting `samples` (oldest first); `label` names the series (escaped)."""
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    points = reduce_points(samples, max_points)
    latencies = [s.latency for s in points if s.latency is not None]
    failures = sum(1 for s in samples if s.latency is None)
    title = html.escape(_describe(label, samples, failures), quote=True)
    head = (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" aria-label="{title}"><title>{title}</title>')
    if not points:
        return (f'{head}<text x="{PAD}" y="{height / 2 + 4:g}" font-size="11" fill="#6e7781">no samples yet</text>'
                "</svg>")
    top = max([*latencies, *(s.ema for s in points if s.ema is not None)], default=0.0) * 1.1 or 1.0
    step = (width - 2 * PAD) / max(len(points) - 1, 1)

    def x(i: int) -> float:
        return PAD + i * step

    def y(value: float) -> float:
        return height - PAD - (height - 2 * PAD) * min(value / top, 1.0)

    parts = [head, f'<line x1="{PAD}" y1="{height - PAD}" x2="{width - PAD}" y2="{height - PAD}" stroke="#d0d7de"/>']
    sampled = " ".join(f"{x(i):.1f},{y(s.latency):.1f}" for i, s in enumerate(points) if s.latency is not None)
    if sampled:
        parts.append(f'<polyline class="samples" fill="none" stroke="#0969da" stroke-width="1.2" points="{sampled}"/>')
    ema = " ".join(f"{x(i):.1f},{y(s.ema):.1f}" for i, s in enumerate(points) if s.ema is not None)
    if ema:
        parts.append(f'<polyline class="ema" fill="none" stroke="#8250df" stroke-width="1.5" '
                     f'stroke-dasharray="3 2" points="{ema}"/>')
    for i, s in enumerate(points):
        if s.latency is None:
            cx = x(i)
            parts.append(f'<path class="failed" d="M{cx - 2.5:.1f} {PAD}l5 5m0 -5l-5 5" stroke="#cf222e" '
                         'stroke-width="1.5"/>')
    parts.append("</svg>")
    return "".join(parts)


def reduce_points(samples: Sequence[Sample], max_points: int) -> list[Sample]:
    """At most `max_points` samples, in order: each bucket of consecutive samples kept as its slowest one
    (a failure wins over any latency, so a failure is never hidden)."""
    if len(samples) <= max_points:
        return list(samples)
    out = []
    for b in range(max_points):
        bucket = samples[b * len(samples) // max_points:(b + 1) * len(samples) // max_points]
        out.append(max(bucket, key=lambda s: float("inf") if s.latency is None else s.latency))
    return out


def _describe(label: str, samples: Sequence[Sample], failures: int) -> str:
    """The chart in words: what a screen reader reads, and the tooltip."""
    latencies = [s.latency for s in samples if s.latency is not None]
    if not samples:
        return f"{label}: no samples yet"
    words = f"{label}: {len(samples)} recent probe(s)"
    if latencies:
        words += (f", latest sample {latencies[-1] * 1000:.1f} ms, min {min(latencies) * 1000:.1f} ms, "
                  f"max {max(latencies) * 1000:.1f} ms")
    ema = samples[-1].ema
    if ema is not None:
        words += f", EMA {ema * 1000:.1f} ms"
    if failures:
        words += f", {failures} failed"
    return words
