"""Geometry of the error-versus-budget strip plot.

One horizontal strip per adapter; each record with a numeric comparison is a
dot at its worst error/budget ratio on a log axis, with the budget line at 1.
Only coordinates and labels are computed here; the template draws them, so all
text goes through the same autoescaping as the rest of the report.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .records import Record, Results

WIDTH = 1080
LABEL_W = 200     # adapter names on the left
GUTTER = 52       # the "0" and "NaN/inf" columns either side of the log axis
PAD = 12          # between a gutter and the first / last decade
ROW_H = 46
TOP = 14
BOTTOM = 40
# Beyond this, a strip keeps every non-passing dot and an even sample of the rest:
# thousands of overlapping circles add bytes, not information.
MAX_DOTS = 1500

_GOLDEN = 0.6180339887498949


@dataclass
class Dot:
    x: float
    y: float
    outcome: str
    title: str
    href: str | None = None
    off_axis: bool = False  # drawn in a gutter: exactly 0, or NaN/inf


@dataclass
class Strip:
    adapter: str
    y: float
    dots: list[Dot] = field(default_factory=list)
    shown: int = 0
    total: int = 0
    over_budget: int = 0
    worst: float | None = None


@dataclass
class Plot:
    width: int
    height: int
    axis_left: float
    axis_right: float
    label_x: float
    zero_x: float
    inf_x: float
    zero_sep: float
    inf_sep: float
    budget_x: float
    plot_top: float
    plot_bottom: float
    ticks: list[tuple[float, str]]
    strips: list[Strip]
    unplotted: int


def strip_plot(results: Results, anchors: dict[int, str] | None = None) -> Plot | None:
    """Lay out the plot; ``anchors`` maps ``id(record)`` to a failure anchor."""
    anchors = anchors or {}
    by_adapter: dict[str, list[Record]] = {a.name: [] for a in results.adapters}
    unplotted = 0
    for r in results.records:
        if r.worst_ratio is None:
            unplotted += 1
        else:
            by_adapter.setdefault(r.adapter, []).append(r)
    by_adapter = {k: v for k, v in by_adapter.items() if v}
    if not by_adapter:
        return None

    lo, hi = _decades(r.worst_ratio for rs in by_adapter.values() for r in rs)
    zero_x, zero_sep = LABEL_W + GUTTER / 2, LABEL_W + GUTTER
    inf_sep = WIDTH - 10 - GUTTER
    inf_x = inf_sep + GUTTER / 2
    axis_left, axis_right = zero_sep + PAD, inf_sep - PAD

    def x_of(ratio: float) -> float:
        return axis_left + (math.log10(ratio) - lo) / (hi - lo) * (axis_right - axis_left)

    strips = []
    for row, (adapter, recs) in enumerate(by_adapter.items()):
        mid = TOP + row * ROW_H + ROW_H / 2
        strip = Strip(adapter, mid, total=len(recs))
        chosen = _sample(recs)
        strip.shown = len(chosen)
        strip.over_budget = sum(1 for r in recs if not r.worst_ratio <= 1)
        strip.worst = max((r.worst_ratio for r in recs),
                          key=lambda v: math.inf if math.isnan(v) else v)
        # Failures last, so they are drawn on top of the passing cloud.
        chosen.sort(key=lambda r: r.outcome in ("failed", "error", "xpassed"))
        for i, r in enumerate(chosen):
            ratio = r.worst_ratio
            jitter = ((i * _GOLDEN) % 1.0 - 0.5) * ROW_H * 0.62
            if math.isnan(ratio) or math.isinf(ratio):
                x, off = inf_x + jitter / 3, True
            elif ratio <= 0:
                x, off = zero_x + jitter / 3, True
            else:
                x, off = x_of(min(max(ratio, 10.0 ** lo), 10.0 ** hi)), False
            strip.dots.append(Dot(round(x, 1), round(mid + jitter, 1), r.outcome,
                                  _title(r), anchors.get(id(r)), off))
        strips.append(strip)

    step = max(1, math.ceil((hi - lo) / 12))
    ticks = [(round(x_of(10.0 ** d), 1), _decade_label(d)) for d in range(lo, hi + 1, step)]
    height = TOP + len(strips) * ROW_H + BOTTOM
    return Plot(width=WIDTH, height=height, axis_left=axis_left, axis_right=axis_right,
                label_x=LABEL_W - 8, zero_x=zero_x, inf_x=inf_x, zero_sep=zero_sep,
                inf_sep=inf_sep,
                budget_x=round(x_of(1.0), 1), plot_top=TOP,
                plot_bottom=TOP + len(strips) * ROW_H, ticks=ticks, strips=strips,
                unplotted=unplotted)


def _decades(ratios) -> tuple[int, int]:
    """Whole decades covering every finite positive ratio, and always 0.1 .. 10."""
    finite = [v for v in ratios if v > 0 and math.isfinite(v)]
    lo = math.floor(math.log10(min(finite))) if finite else -1
    hi = math.ceil(math.log10(max(finite))) if finite else 1
    return max(min(lo, -1), -20), min(max(hi, 1), 20)


def _sample(recs: list[Record]) -> list[Record]:
    if len(recs) <= MAX_DOTS:
        return list(recs)
    keep = [r for r in recs if r.outcome != "passed" or not r.worst_ratio <= 1]
    rest = [r for r in recs if r.outcome == "passed" and r.worst_ratio <= 1]
    room = max(MAX_DOTS - len(keep), 0)
    if room and rest:
        stride = len(rest) / room
        keep += [rest[int(i * stride)] for i in range(min(room, len(rest)))]
    return keep


def _title(r: Record) -> str:
    where = f" · {r.dtype}" if r.dtype else ""
    return f"{r.clause} · {r.outcome}{where} · ratio {r.worst_ratio:.3g}\n{r.nodeid}"


def _decade_label(d: int) -> str:
    return {-1: "0.1", 0: "1", 1: "10"}.get(d, f"1e{d}")
