"""The report's figures are legible where they are shown: text no smaller than 9 CSS pixels
once the page fits the figure in its column, value labels clear of the error bars, legends
outside the plots, where they hide no bar or point. (The browser journey screenshots each figure for a person to
look at; these are the measurable parts.)"""

import re

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from analytics import rd
from analytics.report import afc_figure, breakdown_figure, figure_svg, quality_figure

COLUMN_PX = 920  # the results page's column: main is 960 px at most, with 20 px padding
SMALLEST_PX = 9
METRICS = ["psnr", "ssim", "ms-ssim", "lpips-alex", "lpips-vgg", "stlpips-alex", "dpl"]
CODECS = ["jpeg", "jpeg2000", "webp", "avif", "heic", "jpegxl"]


QUALITIES = [
    {"sentinel_accuracy": 0.9 - 0.1 * k, "repeat_agreement": 0.8, "median_rt_ms": 300 + 100 * k,
     "fast_share": 0.05 * k, "side_share": 0.6}
    for k in range(5)
]  # fmt: skip
THRESHOLDS = {
    "sentinel_accuracy": (0.8, "min", "sentinel accuracy"),
    "repeat_agreement": (0.5, "min", "repeat agreement"),
    "median_rt_ms": (400, "min", "median response time (ms)"),
    "fast_share": (0.2, "max", "share of too-fast responses"),
    "side_share": (0.9, "max", "share on the preferred side"),
}


def shown_font_sizes(svg: str) -> list[float]:
    """Each text's size in CSS pixels once ``max-width: 100%`` fits the SVG in the column.

    matplotlib writes sizes in the SVG's user units, which are points (width="...pt")."""
    width_pt = float(re.search(r'<svg[^>]* width="([\d.]+)pt"', svg).group(1))
    px_per_unit = min(width_pt * 4 / 3, COLUMN_PX) / width_pt
    return [float(size) * px_per_unit for size in re.findall(r"font-size: ([\d.]+)px", svg)]


def drawn(fig):
    FigureCanvasAgg(fig).draw()
    return fig.canvas.get_renderer()


def legends(fig):
    return [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]


def estimate(score, half=0.1):
    return {"score": score, "low": max(0.0, score - half), "high": min(1.0, score + half)}


def afc_table():
    return {
        "metrics": {name: estimate(0.6 + 0.04 * k, 0.12) for k, name in enumerate(METRICS)},
        "human_ceiling": estimate(0.82, 0.03),
    }


def pair_groups(codecs=CODECS):
    labels = [f"{a} vs {b}" for i, a in enumerate(codecs) for b in codecs[i:]]
    rng = np.random.default_rng(0)
    return {
        label: {
            "metrics": {name: {"score": float(rng.uniform(0.5, 0.95))} for name in METRICS},
            "human_ceiling": {"score": 0.9},
        }
        for label in labels
    }


def win_rate_result():
    codecs = CODECS[:4]
    win_rate = {
        codec: {"votes": 40 + k, "rate": 0.3 + 0.12 * k,
                "interval": [0.2 + 0.12 * k, 0.45 + 0.12 * k],
                "metric_rate": {"psnr": 0.5, "msssim": 0.55 - 0.05 * k}}
        for k, codec in enumerate(codecs)
    }  # fmt: skip
    points = [{"bpp": b, "psnr": 28 + 4 * b, "msssim": 0.9 + 0.05 * b, "target_bpp": None}
              for b in (0.25, 0.5, 1.0, 2.0)]  # fmt: skip
    return {
        "metrics": ["psnr", "msssim"],
        "labels": {"psnr": "PSNR (dB)", "msssim": "MS-SSIM"},
        "higher_is_better": {"psnr": True, "msssim": True},
        "curves": {codec: points for codec in codecs},
        "images": [{"codec": c, **p} for c in codecs for p in points],
        "matched": {"win_rate": win_rate, "rule": "two codecs, |log2(bpp0/bpp1)| <= 0.25"},
    }


@pytest.mark.parametrize(
    "make",
    [
        lambda: afc_figure(afc_table(), METRICS),
        lambda: breakdown_figure(pair_groups(), METRICS, "codec pair"),
        lambda: breakdown_figure(pair_groups(CODECS[:2]), METRICS[:3], "codec pair"),
        lambda: quality_figure(QUALITIES, [False] * 4 + [True], THRESHOLDS),
        lambda: rd.rd_figure(win_rate_result(), "psnr"),
        lambda: rd.win_rate_figure(win_rate_result()),
    ],
    ids=["afc", "codec-pairs-21", "codec-pairs-3", "quality", "rd-curve", "win-rate"],
)
def test_every_text_is_legible_at_the_page_width(make):
    sizes = shown_font_sizes(figure_svg(make()))
    assert sizes and min(sizes) >= SMALLEST_PX, f"smallest text {min(sizes):.1f} px"


def test_afc_value_labels_clear_the_error_bars():
    table = afc_table()
    fig = afc_figure(table, METRICS)
    renderer = drawn(fig)
    ax = fig.axes[0]
    labels = [t for t in ax.texts if re.fullmatch(r"\d\.\d{3}", t.get_text())]
    assert len(labels) == len(METRICS)
    figure_box = fig.bbox
    for y, (name, label) in enumerate(zip(METRICS, labels, strict=True)):
        box = label.get_window_extent(renderer)
        high = ax.transData.transform((table["metrics"][name]["high"], y))[0]
        low = ax.transData.transform((table["metrics"][name]["low"], y))[0]
        assert box.x0 > high + 2 or box.x1 < low - 2, (name, box, low, high)
        assert figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1  # not cut off


@pytest.mark.parametrize(
    "make",
    [
        lambda: afc_figure(afc_table(), METRICS),
        lambda: breakdown_figure(pair_groups(), METRICS, "codec pair"),
        lambda: breakdown_figure(pair_groups(CODECS[:2]), METRICS[:3], "codec pair"),
        lambda: rd.rd_figure(win_rate_result(), "psnr"),
        lambda: rd.win_rate_figure(win_rate_result()),
    ],
    ids=["afc", "codec-pairs-21", "codec-pairs-3", "rd-curve", "win-rate"],
)
def test_legends_are_outside_the_plots(make):
    """A legend outside every plot area can hide no bar, interval or point."""
    fig = make()
    renderer = drawn(fig)
    assert legends(fig)
    plots = [ax.get_window_extent(renderer) for ax in fig.axes if ax.axison]
    for legend in legends(fig):
        box = legend.get_window_extent(renderer)
        assert not any(box.overlaps(plot) for plot in plots), (box, plots)
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1  # and not cut off
