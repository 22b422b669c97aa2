"""The shop's charts as PNG images, drawn by matplotlib (Agg, no display) in the reader's
language: every word comes in already worded from the templates' labels.

Chinese needs a font with CJK glyphs, which matplotlib's bundled DejaVu fonts lack (each
missing glyph would be drawn as an empty box). The package ships its own: a subset of Noto
Sans CJK SC (SIL Open Font License, see fonts/OFL.txt) holding GB2312, Latin-1 and every
character of the Chinese templates and the bundled program (bench/subset_font.py makes it),
so a chart looks the same on a fresh machine with no fonts installed. It draws the English
charts too, so both languages share one look.

Drawing is CPU work of 50-200 ms: callers run ``render`` in a worker thread
(``asyncio.to_thread``); each call builds its own Figure (no pyplot global state).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties, fontManager
from matplotlib.ticker import FuncFormatter

WIDTH_PX, HEIGHT_PX, DPI = 960, 600, 120
FONT_FILE = "NotoSansSC-Subset.otf"
COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52")


@cache
def font_path() -> Path:
    """The bundled CJK font, wherever the package is installed."""
    return Path(str(resources.files("handlers").joinpath("fonts", FONT_FILE)))


@cache
def _font() -> FontProperties:
    path = font_path()
    fontManager.addfont(str(path))
    return FontProperties(fname=str(path))


@dataclass(frozen=True)
class Series:
    label: str
    values: Sequence[float]


@dataclass(frozen=True)
class Chart:
    """What to draw: a kind and its worded texts and numbers. ``texts`` lists every string
    drawn, so a test can check the font covers each character."""

    kind: str  # "pyramid" | "funnel" | "bars" | "lines"
    title: str
    categories: Sequence[str]
    series: Sequence[Series]
    axis_label: str = ""
    line: Series | None = None  # drawn as a dashed line over the bars (the red line)
    number_format: str = "{:,.0f}"
    extra_texts: Sequence[str] = field(default_factory=tuple)

    def texts(self) -> list[str]:
        found = [self.title, self.axis_label, *self.categories, *self.extra_texts]
        found += [s.label for s in self.series]
        if self.line is not None:
            found.append(self.line.label)
        drawn = [*self.series, *([self.line] if self.line else [])]
        found += [self.number_format.format(v) for s in drawn for v in s.values]
        return [t for t in found if t]


def render(chart: Chart, image_format: str = "png") -> bytes:
    """The chart as a PNG of WIDTH_PX x HEIGHT_PX, or as SVG (``image_format="svg"``, for the
    Mini App's dashboard): one drawing, two encodings."""
    font = _font()
    figure = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    fmt = FuncFormatter(lambda value, _pos: chart.number_format.format(value))
    count = len(chart.series)
    positions = list(range(len(chart.categories)))
    if chart.kind in ("pyramid", "funnel"):
        height = 0.8 / max(count, 1)
        for i, series in enumerate(chart.series):
            offsets = [p + (i - (count - 1) / 2) * height for p in positions]
            bars = axes.barh(offsets, series.values, height=height, label=series.label,
                             color=COLORS[i % len(COLORS)])
            axes.bar_label(bars, labels=[chart.number_format.format(v) for v in series.values],
                           padding=3, fontproperties=font, fontsize=8)
        axes.set_yticks(positions, labels=list(chart.categories), fontproperties=font)
        if chart.kind == "funnel":
            axes.invert_yaxis()
        axes.xaxis.set_major_formatter(fmt)
        axes.set_xlabel(chart.axis_label, fontproperties=font)
    else:
        width = 0.8 / max(count, 1)
        for i, series in enumerate(chart.series):
            offsets = [p + (i - (count - 1) / 2) * width for p in positions]
            if chart.kind == "bars":
                axes.bar(offsets, series.values, width=width, label=series.label,
                         color=COLORS[i % len(COLORS)])
            else:
                axes.plot(positions, series.values, marker="o", label=series.label,
                          color=COLORS[i % len(COLORS)])
        if chart.line is not None:
            axes.plot(positions, chart.line.values, linestyle="--", color="#D62728",
                      label=chart.line.label)
        axes.set_xticks(positions, labels=list(chart.categories), fontproperties=font,
                        rotation=30 if len(positions) > 6 else 0)
        axes.yaxis.set_major_formatter(fmt)
        axes.set_ylabel(chart.axis_label, fontproperties=font)
    for label in (*axes.get_xticklabels(), *axes.get_yticklabels()):
        label.set_fontproperties(font)
    axes.set_title(chart.title, fontproperties=font)
    axes.legend(prop=font, loc="best")
    axes.grid(axis="x" if chart.kind in ("pyramid", "funnel") else "y", alpha=0.3)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format=image_format, dpi=DPI)
    return out.getvalue()
