"""A study's results report: sections of a figure (inline SVG from matplotlib), a table and a note.

``study_report(study)`` builds the report the staff results page shows and the download
holds: 2AFC bars with bootstrap intervals and the human ceiling, the per-codec-pair and
per-bitrate-band breakdowns, the condition scales, the latest DPL fit and a rater-quality
histogram. More sections can be appended with ``Report.add`` (any code that can draw a
matplotlib ``Figure`` can add one through ``figure_svg``). The template
``analytics/_report.html`` renders the sections inside a page; ``Report.html`` makes one
self-contained file (styles inline, figures inline, no external assets).

Figures use matplotlib's object API (``matplotlib.figure.Figure``, no pyplot and no global
backend), so building reports is safe in threaded web workers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from django.template.loader import render_to_string
from django.utils.safestring import SafeString, mark_safe
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from rating.selectors import count_rows, vote_counts
from studies.models import Study
from studies.services import study_counts

from . import rd
from .evaluation import cached_evaluation, cached_for_study
from .svg import inline_svg

__all__ = [
    "Report",
    "Section",
    "Table",
    "afc_figure",
    "breakdown_figure",
    "figure_svg",
    "quality_figure",
    "study_report",
]

BLUE, RED = "#4c78a8", "#e45756"
# Figures are at most this wide (inches) and their text this large (points): the results
# page's column is 920 CSS px, so a figure is never shrunk and no text is under 9 px.
FIG_WIDTH = rd.FIG_WIDTH
FONT = rd.FONT

QUALITY_MEASURES = {
    # measure: (study field holding its threshold, kind of limit, axis label)
    # Sentinels screen out by a binomial test; for a full session that is an accuracy floor.
    "sentinel_accuracy": ("sentinel_pass_accuracy", "min", "sentinel accuracy"),
    "repeat_agreement": ("qc_min_repeat_agreement", "min", "repeat agreement"),
    "median_rt_ms": ("qc_min_median_rt_ms", "min", "median response time (ms)"),
    "fast_share": ("qc_max_fast_share", "max", "share of too-fast responses"),
    "side_share": ("qc_max_side_share", "max", "share on the preferred side"),
}


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    """One part of a report; any of its three parts may be empty."""

    title: str
    svg: SafeString | str = ""
    table: Table | None = None
    note: str = ""


@dataclass
class Report:
    """``counts``: the vote counts the report was computed from (``rating.selectors.count_rows``),
    shown side by side at its top."""

    title: str
    summary: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    counts: list[tuple[str, str, str, int | None]] = field(default_factory=list)

    def add(self, section: Section) -> Section:
        self.sections.append(section)
        return section

    def html(self) -> str:
        """The report as one self-contained HTML document (styles and figures inline)."""
        return render_to_string("analytics/report_file.html", {"report": self})


def figure_svg(fig: Figure) -> SafeString:
    """The figure as an inline ``<svg>`` element (see ``analytics.svg``)."""
    return mark_safe(inline_svg(fig))  # noqa: S308 - matplotlib's own output


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _estimate(value: Mapping) -> str:
    if value["low"] is None:
        return _fmt(value["score"])
    return f"{_fmt(value['score'])} [{_fmt(value['low'])}, {_fmt(value['high'])}]"


def afc_figure(table: Mapping, names: Sequence[str]) -> Figure:
    """Horizontal 2AFC bars with 95% intervals, the human ceiling as a line with its band.

    Each value is written just past its interval's upper end, so no label sits on an error
    bar; the legend is above the plot."""
    fig = Figure(figsize=(FIG_WIDTH, 0.4 * len(names) + 1.5), layout="constrained")
    ax = fig.add_subplot()
    estimates = [table["metrics"][n] for n in names]
    scores = [e["score"] for e in estimates]
    lows = [e["score"] if e["low"] is None else e["low"] for e in estimates]
    highs = [e["score"] if e["high"] is None else e["high"] for e in estimates]
    errors = [[s - lo for s, lo in zip(scores, lows, strict=True)],
              [hi - s for s, hi in zip(scores, highs, strict=True)]]  # fmt: skip
    ax.barh(names, scores, xerr=errors, color=BLUE, capsize=3, error_kw={"ecolor": "#333"})
    for y, (score, high) in enumerate(zip(scores, highs, strict=True)):
        ax.annotate(f"{score:.3f}", (high, y), xytext=(5, 0), textcoords="offset points",
                    va="center", fontsize=FONT)  # fmt: skip
    ceiling = table["human_ceiling"]
    if ceiling["score"] is not None:
        if ceiling["low"] is not None:
            ax.axvspan(ceiling["low"], ceiling["high"], color=RED, alpha=0.15)
        ax.axvline(ceiling["score"], color=RED, ls="--", label="human ceiling (95% band)")
        fig.legend(loc="outside upper right", fontsize=FONT)
    left = min(0.5, *lows) - 0.02
    # Room right of 1 for the labels of intervals that reach it; ticks stop at 1.
    ax.set_xlim(left, 1.0 + 0.12 * (1.0 - left))
    ax.set_xticks([t for t in np.arange(0.0, 1.01, 0.1) if t >= left - 1e-9])
    ax.invert_yaxis()
    ax.tick_params(labelsize=FONT)
    ax.set_xlabel("2AFC agreement with raters (0.5 = chance)", fontsize=FONT)
    return fig


BREAKDOWN_MARKERS = "osD^vPX*<>"


def breakdown_figure(groups: Mapping[str, Mapping], names: Sequence[str], xlabel: str) -> Figure:
    """One row per label (e.g. codec pair): each metric's 2AFC as a marker, the group's human
    ceiling as a black bar. Rows, not columns, so any number of labels stays legible (the
    figure grows taller, never wider); the legend is above the plot."""
    labels = list(groups)
    fig = Figure(figsize=(FIG_WIDTH, 0.34 * len(labels) + 1.6), layout="constrained")
    ax = fig.add_subplot()
    spread = min(0.14, 0.6 / max(1, len(names)))  # metrics side by side within a row
    for k, name in enumerate(names):
        ys = [i + spread * (k - (len(names) - 1) / 2) for i in range(len(labels))]
        xs = [groups[label]["metrics"][name]["score"] for label in labels]
        ax.scatter(xs, ys, marker=BREAKDOWN_MARKERS[k % len(BREAKDOWN_MARKERS)],
                   color=f"C{k % 10}", s=28, zorder=3, label=name)  # fmt: skip
    for i, label in enumerate(labels):
        ceiling = groups[label]["human_ceiling"]["score"]
        if ceiling is not None:
            ax.vlines(ceiling, i - 0.42, i + 0.42, colors="black", linewidth=2)
    ax.plot([], [], color="black", linewidth=2, label="human ceiling")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xlim(0, 1.02)
    ax.axvline(0.5, color="grey", lw=0.8, ls=":")
    ax.grid(axis="y", color="#eee")
    ax.tick_params(labelsize=FONT)
    ax.set_xlabel("2AFC agreement with raters (0.5 = chance)", fontsize=FONT)
    ax.set_ylabel(xlabel, fontsize=FONT)
    fig.legend(loc="outside upper center", ncols=min(5, len(names) + 1), fontsize=FONT)
    return fig


def quality_figure(qualities: Sequence[Mapping], flagged: Sequence[bool], thresholds) -> Figure:
    """Histograms of each rater-quality measure, flagged and unflagged raters stacked, with
    the study's threshold. ``thresholds``: measure -> (limit, "min" or "max", label).
    Three panels a row, the legend above them."""
    columns = 3
    rows = math.ceil(len(thresholds) / columns)
    fig = Figure(figsize=(FIG_WIDTH, 2.4 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[len(thresholds) :]:
        ax.set_axis_off()
    for ax, (measure, (limit, _, label)) in zip(axes, thresholds.items(), strict=False):
        ok = [
            q[measure]
            for q, f in zip(qualities, flagged, strict=True)
            if not f and _has(q, measure)
        ]
        bad = [
            q[measure] for q, f in zip(qualities, flagged, strict=True) if f and _has(q, measure)
        ]
        if ok or bad:
            ax.hist([ok, bad], bins=10, stacked=True, color=[BLUE, RED])
        ax.axvline(limit, color="black", ls="--")
        ax.set_xlabel(label, fontsize=FONT)
        ax.set_ylabel("raters", fontsize=FONT)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # no "1.5 raters"
        ax.tick_params(labelsize=FONT)
    fig.legend(
        handles=[
            Patch(color=BLUE, label="unflagged"),
            Patch(color=RED, label="flagged"),
            Line2D([], [], color="black", ls="--", label="threshold"),
        ],
        loc="outside upper center",
        ncols=3,
        fontsize=FONT,
    )
    return fig


def _has(quality: Mapping, measure: str) -> bool:
    value = quality.get(measure)
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _metric_sections(report: Report, evaluation: dict) -> None:
    headline = evaluation["sets"][evaluation["headline"]]
    scored = [n for n, info in evaluation["metrics"].items() if not info["unavailable"]]
    sets = evaluation["sets"]
    rows = []
    for name, info in evaluation["metrics"].items():
        cells = [name]
        for table in sets.values():
            cells.append(
                "unavailable" if info["unavailable"] or not table["votes"]
                else _estimate(table["metrics"][name])
            )  # fmt: skip
        rows.append([*cells, info["unavailable"] or info["description"]])
    rows.append(
        ["human ceiling"]
        + [_estimate(t["human_ceiling"]) if t["votes"] else "–" for t in sets.values()]
        + ["two random raters agree (leave-one-out)"]
    )
    headline_name = evaluation["headline"]
    headers = ["metric"] + [
        f"{name} raters: {t['counted']} raters, {t['votes']} regular votes"
        + (" (the counted votes)" if name == headline_name else "")
        for name, t in sets.items()
    ]
    report.add(
        Section(
            "2AFC agreement with raters",
            figure_svg(afc_figure(headline, scored)) if scored else "",
            Table([*headers, "about"], rows),
            f"All {headline['triplets']} voted triplets; bars: the {evaluation['headline']} "
            f"raters (the study's setting: their regular votes are the counted votes); 95% "
            f"percentile bootstrap intervals over {evaluation['bootstrap']} resamples of "
            "triplets. 'all' keeps flagged raters, 'unflagged' leaves them out; both leave out "
            "raters an admin excluded.",
        )
    )
    titles = {
        "codec_pair": ("By codec pair", "codec pair"),
        "bitrate_band": ("By bitrate band", "mean bpp of the two sides"),
        "source": ("By source image", "source image"),
    }
    for key, (title, xlabel) in titles.items():
        groups = headline["breakdowns"][key]
        rows = [
            [label, str(g["triplets"]), str(g["votes"])]
            + [_estimate(g["metrics"][n]) for n in scored]
            + [_estimate(g["human_ceiling"])]
            for label, g in groups.items()
        ]
        report.add(
            Section(
                title,
                figure_svg(breakdown_figure(groups, scored, xlabel)) if key != "source" else "",
                Table([xlabel, "triplets", "counted votes", *scored, "human ceiling"], rows),
            )
        )


def _scaling_section(report: Report, evaluation: dict) -> None:
    pooled = evaluation["scaling"]["pooled"]
    order = sorted(pooled, key=lambda c: -pooled[c]["thurstone_jnd"])
    report.add(
        Section(
            "Condition scales (all references pooled)",
            table=Table(
                ["condition", "Thurstone (JND)", "Bradley-Terry", "wins / comparisons"],
                [
                    [
                        c,
                        f"{pooled[c]['thurstone_jnd']:+.2f} ± {pooled[c]['thurstone_sd']:.2f}",
                        f"{pooled[c]['bradley_terry']:+.2f}",
                        f"{pooled[c]['wins']} / {pooled[c]['comparisons']}",
                    ]
                    for c in order
                ],
            ),
            note="Thurstone Case V (1 JND = 75% preference, pwcmp) and Bradley-Terry "
            "log-strengths, fitted by choix; higher is closer to the reference. Per-reference "
            "scales are in the JSON of manage.py score_metrics --json.",
        )
    )


def _fit_section(report: Report, fit) -> None:
    result = fit.result
    rows = [
        [name, "unavailable" if score is None else f"{score:.3f}"]
        for name, score in result["afc"].items()
    ]
    rows.append(["human ceiling", _fmt(result["human_ceiling"])])
    report.add(
        Section(
            "Latest DPL fit: 2AFC on held-out triplets",
            table=Table(["metric", "2AFC"], rows),
            note=f"Fit {fit.created_at:%Y-%m-%d %H:%M}, backbone {fit.backbone}, loss {fit.loss}, "
            f"{result['train_triplets']} training triplets ({result.get('train_votes', '?')} "
            f"counted votes) and {result['triplets']} test triplets ({result.get('votes', '?')} "
            "counted votes), split by source image; the counted votes of the fit's time. "
            f"Weights: {fit.weights_path}",
        )
    )


def _quality_section(report: Report, study: Study) -> None:
    sessions = list(study.sessions.values_list("quality", "flagged", "flags"))
    if not sessions:
        return
    thresholds = {
        measure: (getattr(study, name), kind, label)
        for measure, (name, kind, label) in QUALITY_MEASURES.items()
    }
    qualities = [q for q, _, _ in sessions]
    flagged = [f for _, f, _ in sessions]
    reasons: dict[str, int] = {}
    for _, _, flags in sessions:
        for flag in flags:
            reasons[flag] = reasons.get(flag, 0) + 1
    report.add(
        Section(
            "Rater quality",
            figure_svg(quality_figure(qualities, flagged, thresholds)),
            Table(
                ["measure", "threshold", "raters flagged by it"],
                [
                    [label, f"{'≥' if kind == 'min' else '≤'} {limit:g}", str(reasons.get(m, 0))]
                    for m, (limit, kind, label) in thresholds.items()
                ],
            ),
            f"{len(sessions)} raters, {sum(flagged)} flagged. Dashed lines: the study's "
            "thresholds (a measure flags only with enough trials).",
        )
    )


def study_report(study: Study) -> Report:
    """The results report of ``study`` (its evaluation comes from ``cached_evaluation``)."""
    made = study_counts(study)
    report = Report(
        f"Results: {study.name}",
        [f"{made['stimuli']} stimuli · {made['triplets']} triplets. Votes now (scores use the "
         "counted ones):"],
        counts=count_rows(vote_counts(study)),
    )  # fmt: skip
    try:
        evaluation = cached_evaluation(study)
    except ValueError as error:
        report.add(Section("2AFC agreement with raters", note=str(error)))
    else:
        _metric_sections(report, evaluation)
        _scaling_section(report, evaluation)
    fit = study.fit_reports.first()
    if fit is not None:
        _fit_section(report, fit)
    _rd_sections(report, study)
    _quality_section(report, study)
    return report


def _rd_sections(report: Report, study: Study) -> None:
    """Rate–distortion curves under each metric, and codecs' win-rates at matched bpp."""
    try:
        curves = cached_for_study(study, "rd", rd.rd_curves)
    except ValueError as error:
        report.add(Section("Rate–distortion", note=str(error)))
        return
    figures = rd.rd_figures(curves)
    for title, svg in figures:
        report.add(Section(title, mark_safe(svg)))  # noqa: S308 - matplotlib's own SVG
    matched = curves["matched"]
    names = curves["metrics"]
    rows = [
        [codec, f"{tally['rate']:.2f}" if tally["rate"] is not None else "–", str(tally["votes"])]
        + [_fmt(tally["metric_rate"].get(name), 2) for name in names]
        for codec, tally in matched["win_rate"].items()
    ]
    agreement = curves["pair_agreement"]
    report.add(
        Section(
            "Codec win-rates at matched bitrate: people and metrics",
            table=Table(
                ["codec", "people", "counted votes", *[curves["labels"][n] for n in names]], rows
            ),
            note=f"Triplets whose sides are {matched['rule']}: {matched['triplets']} triplets, "
            f"{matched['votes']} counted votes. Codec pairs each metric orders as people do: "
            + ", ".join(
                f"{curves['labels'][n]} {agreement[n]['agree']}/{agreement[n]['pairs']}"
                for n in names
            )
            + ". Unavailable: "
            + ("; ".join(f"{k}: {v}" for k, v in curves["unavailable"].items()) or "none"),
        )
    )
