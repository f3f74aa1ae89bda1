"""Rate–distortion evaluation of a study's codecs, beside what people preferred.

``rd_curves(study)`` returns one JSON-able dict:

**Per image.** For every encoding (one source image × one condition), its bits per pixel
against PSNR, MS-SSIM and DPL. The evaluation unit is the whole encoded crop: the stored
bytes (``Encoding.data``) are decoded again and compared with the same centre crop of the
stored source, so the distortion belongs to exactly the bits that ``bpp`` counts. Where the
bytes cannot be decoded on this machine (a codec or checkpoint that is not here), the unit
is the mean over that encoding's stimuli, each against its reference patch, and the row
says so (``unit: "patches"`` with the reason). DPL, a convolutional network, runs on crops
of at most ``MAX_DPL_PIXELS`` pixels; a larger (uncropped) source is scored by DPL on its
patches (``dpl_unit``). PSNR is in dB with data range 255 (the mean of the per-patch values
for the patch unit). MS-SSIM is ``pytorch_msssim.ms_ssim`` with its 5 scales and an 11-pixel
Gaussian window; images with a side of 160 pixels or less (64-pixel patches) get the largest
odd window that fits the 4 downsamplings, recorded per row as ``msssim_window``. DPL is the
newest fit of the study (``analytics.models.FitReport``, random-trunk fits skipped: their
trunk is not reproducible) or else the trained heads of the offline stlpips-alex network;
without any backbone it is left out and ``unavailable["dpl"]`` says why.

**Curves.** Per codec, one point per condition: mean bpp and mean metric over the sources
(for a target-bitrate condition, the point of that target).

**People at matched bitrate.** Counted votes (``rating.selectors.voted_triplets``: regular
trials of the raters the study counts, or ``include_flagged``) on triplets whose two sides
come from different codecs at matched bitrates: ``|log2(bpp0 / bpp1)| <= tolerance`` (default
0.25, a ratio under 1.19), with bpp that of each side's whole encode. At the default, two codecs
that both met a target bitrate (±5%) are always matched. Per codec: votes preferring its
side over all votes on matched triplets that involve it, with a 95% Wilson interval (votes
treated as independent). Per codec pair the same, from the first codec's side.

**Metrics on the same comparisons.** For each metric, the share of those same votes that the
metric would have cast for the codec (it prefers the side whose encoding scores better per
image, a tie counting half), so its ranking is read on the same footing as the people's; a
metric disagrees with people where its share and theirs fall on opposite sides of one half.
For target-bitrate conditions the codecs are also ranked by mean metric at each target.

``rd_figures(result)`` draws these as inline SVG with matplotlib (Agg canvas, no pyplot).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from django.db.models import QuerySet
from matplotlib.figure import Figure
from matplotlib.patches import Patch

import twoafc_codecs
from rating.selectors import rater_set, voted_triplets
from studies.models import Encoding, Stimulus, Study
from studies.services import load_pixels

from . import dpl, fitting, metrics
from .models import FitReport
from .svg import inline_svg

__all__ = [
    "MATCH_LOG2",
    "MAX_DPL_PIXELS",
    "RD_AXES",
    "rd_curves",
    "rd_figure",
    "rd_figures",
    "win_rate_figure",
    "wilson_interval",
]

MATCH_LOG2 = 0.25
"""Two sides are at matched bitrate when |log2(bpp0 / bpp1)| is at most this."""

MAX_DPL_PIXELS = 1024 * 1024
"""Larger crops are scored by DPL on their patches (memory and time of the trunk)."""

RD_AXES = {
    # name: (label, higher is better)
    "psnr": ("PSNR (dB)", True),
    "msssim": ("MS-SSIM", True),
    "dpl": ("DPL distance", False),
}

# --------------------------------------------------------------------------------------
# Metrics of one unit (a crop, or a stack of patches)
# --------------------------------------------------------------------------------------


def _finite_mean(values) -> float | None:
    """The mean of the finite values (PSNR of identical images is +inf), None if none."""
    kept = [float(v) for v in np.asarray(values, dtype=np.float64).ravel() if math.isfinite(v)]
    return float(np.mean(kept)) if kept else None


def _msssim(refs: np.ndarray, dists: np.ndarray) -> tuple[float | None, int | None]:
    """Mean MS-SSIM over N x H x W x 3 uint8 pairs (``metrics.msssim_distance``), and the
    window it used; (None, None) for images too small for 5 scales."""
    try:
        window = metrics.msssim_window(min(refs.shape[1:3]))
    except metrics.MetricUnavailable:
        return None, None
    return _finite_mean(1.0 - metrics.msssim_distance(refs, dists)), window


def _dpl(model: dpl.DPL, refs: np.ndarray, dists: np.ndarray) -> float:
    phi = fitting.compute_features(model, refs, dists, batch_size=max(1, 2**20 // refs[0].size))
    return float(np.mean(phi @ model.weights()))


@dataclass
class DplChoice:
    """Which DPL scores the images, or why none does."""

    model: dpl.DPL | None
    label: str | None
    weights: str | None = None
    notes: list[str] = field(default_factory=list)


def choose_dpl(study: Study) -> DplChoice:
    """The newest usable fit of ``study``, else the stlpips-alex trained heads, else none."""
    notes = []
    report = FitReport.objects.filter(study=study).exclude(backbone="random").first()
    if report is not None:
        try:
            model = dpl.load_dpl(report.backbone, weights=report.weights_path)
            return DplChoice(model, f"DPL fit {report.pk} ({report.backbone})", report.weights_path)
        except (dpl.BackboneUnavailable, OSError, ValueError) as error:
            notes.append(f"fit {report.pk} not used: {error}")
    try:
        return DplChoice(dpl.load_dpl("stlpips-alex"), "stlpips-alex trained heads", notes=notes)
    except dpl.BackboneUnavailable as error:
        notes.append(str(error))
        return DplChoice(None, None, notes=notes)


# --------------------------------------------------------------------------------------
# Per image
# --------------------------------------------------------------------------------------


def _decoded_crop(encoding: Encoding, shape: tuple[int, ...]) -> tuple[np.ndarray | None, str]:
    """Decode the stored bytes again; None and the reason when this machine cannot."""
    try:
        with encoding.data.open("rb") as handle:
            data = handle.read()
        decoded = twoafc_codecs.get_codec(encoding.condition.codec).decode(data)
    except (twoafc_codecs.CodecError, OSError) as error:
        return None, f"cannot decode the encoding here: {error}"
    if decoded.shape != shape:
        return None, f"decoded shape {decoded.shape} is not the crop's {shape}"
    return decoded, ""


def _patch_pairs(encoding: Encoding) -> tuple[np.ndarray, np.ndarray]:
    stimuli = Stimulus.objects.filter(encoding=encoding).select_related("patch").order_by("pk")
    refs = np.stack([load_pixels(s.patch.image) for s in stimuli])
    dists = np.stack([load_pixels(s.image) for s in stimuli])
    return refs, dists


def _measure(refs: np.ndarray, dists: np.ndarray, model: dpl.DPL | None) -> dict:
    psnr = _finite_mean(-metrics.psnr_distance(refs, dists))
    msssim, window = _msssim(refs, dists)
    out = {"psnr": psnr, "msssim": msssim, "msssim_window": window}
    if model is not None:
        out["dpl"] = _dpl(model, refs, dists)
    return out


def _encodings(study: Study) -> QuerySet[Encoding]:
    return (
        Encoding.objects.filter(source__study=study, condition__study=study)
        .select_related("source", "condition")
        .order_by("source_id", "condition__codec", "condition__level", "condition__target_bpp")
    )


def image_rows(study: Study, model: dpl.DPL | None) -> list[dict]:
    """One row per encoding: its bpp and metrics, and the unit they were measured on."""
    rows = []
    crop = source_id = None
    for encoding in _encodings(study):
        if encoding.source_id != source_id:
            source_id = encoding.source_id
            crop = twoafc_codecs.center_crop(load_pixels(encoding.source.image), study.crop_size)
        condition = encoding.condition
        row = {
            "source": encoding.source.name, "source_id": source_id,
            "condition": str(condition), "condition_id": condition.pk, "codec": condition.codec,
            "level": encoding.level, "target_bpp": condition.target_bpp, "bpp": encoding.bpp,
        }  # fmt: skip
        decoded, reason = _decoded_crop(encoding, crop.shape)
        patches = None
        if decoded is None:
            patches = _patch_pairs(encoding)
            row.update(unit="patches", unit_reason=reason)
            row.update(_measure(*patches, model))
        else:
            row["unit"] = "crop"
            small = crop.shape[0] * crop.shape[1] <= MAX_DPL_PIXELS
            row.update(_measure(crop[None], decoded[None], model if small else None))
            if model is not None and not small:
                patches = _patch_pairs(encoding)
                row["dpl"] = _dpl(model, *patches)
        if model is not None:
            row["dpl_unit"] = "crop" if patches is None else "patches"
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------


def mean_curves(rows: list[dict], names: list[str]) -> dict[str, list[dict]]:
    """Per codec, one point per condition (mean bpp, mean of each metric), by rising bpp."""
    by_condition: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        by_condition[row["condition_id"]].append(row)
    curves: dict[str, list[dict]] = defaultdict(list)
    for group in by_condition.values():
        first = group[0]
        levels = {r["level"] for r in group}
        point = {
            "condition": first["condition"], "condition_id": first["condition_id"],
            "level": levels.pop() if len(levels) == 1 else None,
            "target_bpp": first["target_bpp"], "images": len(group),
            "bpp": float(np.mean([r["bpp"] for r in group])),
        }  # fmt: skip
        for name in names:
            point[name] = _finite_mean([r[name] for r in group if r.get(name) is not None])
        curves[first["codec"]].append(point)
    return {
        codec: sorted(points, key=lambda p: p["bpp"]) for codec, points in sorted(curves.items())
    }


# --------------------------------------------------------------------------------------
# People and metrics at matched bitrate
# --------------------------------------------------------------------------------------


def wilson_interval(successes: float, n: float, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (95% by default); None for n = 0."""
    if n <= 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def is_matched(bpp0: float, bpp1: float, tolerance: float = MATCH_LOG2) -> bool:
    """Whether two bitrates are matched: |log2(bpp0 / bpp1)| <= tolerance."""
    return bpp0 > 0 and bpp1 > 0 and abs(math.log2(bpp0 / bpp1)) <= tolerance


def _preference(mine: float | None, theirs: float | None, higher_is_better: bool) -> float | None:
    """1 if the metric prefers my side, 0 if the other, 0.5 on a tie; None if unscored."""
    if mine is None or theirs is None:
        return None
    if mine == theirs:
        return 0.5
    return float((mine > theirs) == higher_is_better)


class _Tally:
    """Votes for one codec (or one side of a codec pair), and the metrics' equivalent."""

    def __init__(self, names: list[str]):
        self.wins = 0
        self.votes = 0
        self.metric_wins = dict.fromkeys(names, 0.0)
        self.metric_votes = dict.fromkeys(names, 0)

    def add(self, wins: int, votes: int, preferences: dict[str, float | None]) -> None:
        self.wins += wins
        self.votes += votes
        for name, preference in preferences.items():
            if preference is not None:
                self.metric_wins[name] += votes * preference
                self.metric_votes[name] += votes

    def as_dict(self) -> dict:
        interval = wilson_interval(self.wins, self.votes)
        return {
            "wins": self.wins, "votes": self.votes,
            "rate": self.wins / self.votes if self.votes else None,
            "interval": list(interval) if interval else None,
            "metric_rate": {
                name: self.metric_wins[name] / n if n else None
                for name, n in self.metric_votes.items()
            },
        }  # fmt: skip


def _tallies(names: list[str]) -> defaultdict:
    return defaultdict(lambda: _Tally(names))


def matched_preferences(
    study: Study,
    rows: list[dict],
    names: list[str],
    tolerance: float = MATCH_LOG2,
    include_flagged: bool | None = None,
) -> dict:
    """Win-rates of people and metrics on the votes of cross-codec triplets at matched bpp."""
    scored = {(r["source_id"], r["condition_id"]): r for r in rows}
    per_codec: dict[str, _Tally] = _tallies(names)
    per_pair: dict[tuple[str, str], _Tally] = _tallies(names)
    per_target: dict[float, dict[str, _Tally]] = defaultdict(lambda: _tallies(names))
    triplets = votes = 0
    for triplet in voted_triplets(study, include_flagged):
        sides = [(triplet.p0, triplet.n_p0), (triplet.p1, triplet.n_p1)]
        (a, a_votes), (b, b_votes) = sides
        if a.codec == b.codec or not is_matched(a.bpp, b.bpp, tolerance):
            continue
        source_id = triplet.patch.source_id
        row = {s.pk: scored.get((source_id, s.condition_id), {}) for s, _ in sides}
        n = a_votes + b_votes
        triplets += 1
        votes += n
        for (mine, my_votes), (theirs, _) in (sides, sides[::-1]):
            preferences = {
                name: _preference(
                    row[mine.pk].get(name), row[theirs.pk].get(name), RD_AXES[name][1]
                )
                for name in names
            }
            per_codec[mine.codec].add(my_votes, n, preferences)
            if mine.codec < theirs.codec:
                per_pair[(mine.codec, theirs.codec)].add(my_votes, n, preferences)
            if mine.target_bpp is not None and mine.target_bpp == theirs.target_bpp:
                per_target[mine.target_bpp][mine.codec].add(my_votes, n, preferences)
    win_rate = {codec: tally.as_dict() for codec, tally in sorted(per_codec.items())}
    pairs = [{"a": a, "b": b, **tally.as_dict()} for (a, b), tally in sorted(per_pair.items())]
    return {
        "rule": f"two codecs, |log2(bpp0/bpp1)| <= {tolerance:g}",
        "tolerance_log2": tolerance,
        **rater_set(study, include_flagged),
        "triplets": triplets,
        "votes": votes,
        "win_rate": win_rate,
        "pairs": pairs,
        "by_target": [
            {
                "target_bpp": t,
                "win_rate": {codec: tally.as_dict() for codec, tally in sorted(by_codec.items())},
            }
            for t, by_codec in sorted(per_target.items())
        ],
    }


def _ranked(scores: dict[str, float | None], higher_is_better: bool = True) -> list[str]:
    known = [(codec, s) for codec, s in scores.items() if s is not None]
    return [c for c, _ in sorted(known, key=lambda cs: cs[1], reverse=higher_is_better)]


def rankings(matched: dict, names: list[str]) -> dict:
    """Codecs ordered best first by people's win-rate and by each metric's, and how many
    codec pairs each metric orders as people do."""
    win_rate = matched["win_rate"]
    ranking = {"people": _ranked({c: w["rate"] for c, w in win_rate.items()})}
    agreement = {}
    for name in names:
        ranking[name] = _ranked({c: w["metric_rate"][name] for c, w in win_rate.items()})
        decided = [
            p for p in matched["pairs"] if p["rate"] != 0.5 and p["metric_rate"][name] is not None
        ]
        agree = sum((p["rate"] > 0.5) == (p["metric_rate"][name] > 0.5) for p in decided)
        agreement[name] = {"pairs": len(decided), "agree": agree}
    return {"ranking": ranking, "pair_agreement": agreement}


def target_rankings(curves: dict[str, list[dict]], matched: dict, names: list[str]) -> list[dict]:
    """At each target bitrate, codecs ranked by each metric's mean and by people's win-rate
    on the matched triplets whose sides share that target (counts in ``matched["by_target"]``)."""
    at: dict[float, dict[str, dict]] = defaultdict(dict)
    for codec, points in curves.items():
        for point in points:
            if point["target_bpp"] is not None:
                at[point["target_bpp"]][codec] = point
    out = []
    for target, points in sorted(at.items()):
        if len(points) < 2:
            continue
        people = next(
            (t["win_rate"] for t in matched["by_target"] if t["target_bpp"] == target), {}
        )
        ranking = {
            name: _ranked({c: p[name] for c, p in points.items()}, RD_AXES[name][1])
            for name in names
        }
        ranking["people"] = _ranked({c: w["rate"] for c, w in people.items()})
        out.append({
            "target_bpp": target,
            "bpp": {c: p["bpp"] for c, p in sorted(points.items())},
            "ranking": ranking,
        })  # fmt: skip
    return out


# --------------------------------------------------------------------------------------
# The whole evaluation
# --------------------------------------------------------------------------------------


def rd_curves(
    study: Study,
    *,
    tolerance: float = MATCH_LOG2,
    include_flagged: bool | None = None,
    with_dpl: bool = True,
) -> dict:
    """Rate–distortion points, mean curves, and people's and metrics' win-rates at matched
    bitrate for ``study`` (see the module docstring). Raises ValueError if nothing is encoded.

    Keys: ``metrics`` (those computed), ``labels``, ``higher_is_better``, ``unavailable``
    (metric: reason), ``dpl`` (which model), ``images`` (one row per encoding), ``curves``
    (codec: points by rising bpp), ``matched`` (rule, raters, ``win_rate`` per codec,
    ``pairs``, ``by_target``), ``ranking`` (people and each metric: codecs best first),
    ``pair_agreement`` (metric: codec pairs it orders as people do) and ``targets``.
    """
    if not _encodings(study).exists():
        raise ValueError(f"study {study.slug!r} has no encodings yet (press Generate)")
    if tolerance <= 0:
        raise ValueError("the matched-bitrate tolerance must be positive")
    unavailable = {}
    choice = DplChoice(None, None, notes=["not asked for"])
    if with_dpl:
        choice = choose_dpl(study)
    if choice.model is None:
        unavailable["dpl"] = "; ".join(choice.notes)
    names = [name for name in RD_AXES if name != "dpl" or choice.model is not None]
    rows = image_rows(study, choice.model)
    curves = mean_curves(rows, names)
    matched = matched_preferences(study, rows, names, tolerance, include_flagged)
    return {
        "study": study.slug,
        "metrics": names,
        "labels": {name: RD_AXES[name][0] for name in names},
        "higher_is_better": {name: RD_AXES[name][1] for name in names},
        "unavailable": unavailable,
        "dpl": {"model": choice.label, "weights": choice.weights, "notes": choice.notes}
        if choice.model is not None
        else None,
        "images": rows,
        "curves": curves,
        "matched": matched,
        **rankings(matched, names),
        "targets": target_rankings(curves, matched, names),
    }


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------


def _colors(codecs: list[str]) -> dict[str, str]:
    palette = [f"C{i}" for i in range(10)]
    return {codec: palette[i % len(palette)] for i, codec in enumerate(sorted(codecs))}


# Figures are at most this wide (inches) and their text this large (points): the report's
# column is 920 CSS px, so a figure is never shrunk and no text is under 9 px.
FIG_WIDTH = 8.0
FONT = 9


def rd_figure(result: dict, name: str) -> Figure:
    """bpp against one metric: each image's point faint, each codec's mean curve; the legend
    outside the plot, to the right, so it never hides a point."""
    codecs = sorted(result["curves"])
    colors = _colors(codecs)
    label = result["labels"][name]
    figure = Figure(figsize=(FIG_WIDTH * 0.8, 4), layout="constrained")
    axes = figure.add_subplot()
    for codec in codecs:
        points = [(r["bpp"], r[name]) for r in result["images"] if r["codec"] == codec]
        points = [p for p in points if p[1] is not None]
        if points:
            axes.scatter(*zip(*points, strict=True), s=10, alpha=0.25, color=colors[codec])
        curve = [(p["bpp"], p[name]) for p in result["curves"][codec] if p[name] is not None]
        if curve:
            axes.plot(*zip(*curve, strict=True), "o-", color=colors[codec], label=codec)
    axes.set_xlabel("bits per pixel", fontsize=FONT)
    axes.set_ylabel(
        label + ("" if result["higher_is_better"][name] else " (lower is better)"), fontsize=FONT
    )
    axes.tick_params(labelsize=FONT)
    axes.grid(alpha=0.3)
    axes.set_title(f"{label} against bitrate", fontsize=FONT + 1)
    if axes.get_legend_handles_labels()[0]:
        figure.legend(loc="outside right upper", fontsize=FONT, title="codec",
                      title_fontsize=FONT)  # fmt: skip
    return figure


def win_rate_figure(result: dict) -> Figure:
    """People's win-rate per codec at matched bitrate (bars, 95% Wilson intervals) and the
    share each metric would give (markers); the legend above the plot."""
    win_rate = {c: w for c, w in result["matched"]["win_rate"].items() if w["votes"]}
    codecs = list(win_rate)
    colors = _colors(sorted(result["curves"]) or codecs)
    figure = Figure(figsize=(FIG_WIDTH * 0.8, 0.5 * len(codecs) + 1.8), layout="constrained")
    axes = figure.add_subplot()
    y = np.arange(len(codecs))
    rates = [win_rate[c]["rate"] for c in codecs]
    low, high = zip(*(win_rate[c]["interval"] for c in codecs), strict=True)
    errors = [np.subtract(rates, low), np.subtract(high, rates)]
    axes.barh(
        y, rates, height=0.7, xerr=errors, color=[colors.get(c, "C0") for c in codecs],
        alpha=0.6,
    )  # fmt: skip
    markers = "Dsv^"
    names = result["metrics"]
    for i, name in enumerate(names):
        shares = [win_rate[c]["metric_rate"][name] for c in codecs]
        offset = 0.15 * (i - (len(names) - 1) / 2)  # side by side where they coincide
        shown = [(s, yy + offset) for s, yy in zip(shares, y, strict=True) if s is not None]
        if shown:
            axes.scatter(
                *zip(*shown, strict=True), marker=markers[i % len(markers)], color="black",
                zorder=3, clip_on=False, label=result["labels"][name],
            )  # fmt: skip
    axes.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    axes.set_yticks(y, [f"{c} (n={win_rate[c]['votes']})" for c in codecs])
    axes.invert_yaxis()
    axes.tick_params(labelsize=FONT)
    axes.set_xlim(0, 1)
    axes.set_xlabel("share of votes preferring the codec (95% Wilson interval)", fontsize=FONT)
    axes.set_title("Win-rate at matched bitrate", fontsize=FONT + 1)
    # The bars take each codec's colour: the legend's bar is neutral.
    people = Patch(color="grey", alpha=0.6, label="people (bar, with interval)")
    handles = [people, *axes.get_legend_handles_labels()[0]]
    figure.legend(handles=handles, loc="outside upper center", ncols=len(handles), fontsize=FONT)
    return figure


def rd_figures(result: dict) -> list[tuple[str, str]]:
    """(title, inline SVG) per metric (``rd_figure``), then people's win-rate at matched bpp
    (``win_rate_figure``) if any vote qualifies."""
    figures = [
        (f"{result['labels'][name]} against bitrate", inline_svg(rd_figure(result, name)))
        for name in result["metrics"]
    ]
    if any(w["votes"] for w in result["matched"]["win_rate"].values()):
        title = f"Win-rate at matched bitrate ({result['matched']['rule']})"
        figures.append((title, inline_svg(win_rate_figure(result))))
    return figures
