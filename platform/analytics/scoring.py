"""2AFC scores with bootstrap intervals, overall and broken down by group (Zhang et al., CVPR 2018).

Point estimates are ``score_2afc`` (a metric) and ``human_ceiling`` (two random raters,
leave-one-out). Intervals are percentile bootstrap intervals over triplets:
each replicate draws N triplets with replacement (the same draws for every metric and the
ceiling, so their intervals are comparable) and takes the replicate's mean; the ceiling's
replicate is the mean over its drawn triplets with at least 2 votes.

Breakdown labels (``codec_pairs``, ``bitrate_bands``) are plain arrays, one label per
triplet; ``score_table`` scores every metric within each label's triplets, with its own
intervals.

This module imports neither Django nor torch (exports and web processes use it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "BPP_BANDS",
    "bootstrap_2afc",
    "human_ceiling",
    "score_2afc",
    "bitrate_bands",
    "bootstrap_interval",
    "ceiling_terms",
    "codec_pairs",
    "score_table",
    "triplet_agreement",
]

BPP_BANDS = (0.25, 0.5, 1.0, 2.0)
"""Edges (bits per pixel) of the bitrate bands; see ``bitrate_bands``."""

# Most (replicates x triplets) counts held at once while bootstrapping.
_BLOCK_CELLS = 4_000_000


def triplet_agreement(d0, d1, judge) -> np.ndarray:
    """Per triplet, the term whose mean is ``score_2afc``:
    (d0<d1)(1-g) + (d1<d0)g + 0.5(d0==d1)."""
    d0, d1, g = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (d0, d1, judge))
    return (d0 < d1) * (1.0 - g) + (d1 < d0) * g + 0.5 * (d0 == d1)


def ceiling_terms(n_p0, n_p1) -> tuple[np.ndarray, np.ndarray]:
    """Per triplet, the leave-one-out agreement of two distinct raters and whether it is
    defined (n >= 2 votes); the mean over defined triplets is ``human_ceiling``."""
    n0 = np.asarray(n_p0, dtype=np.float64).reshape(-1)
    n1 = np.asarray(n_p1, dtype=np.float64).reshape(-1)
    n = n0 + n1
    defined = n >= 2
    pairs = np.where(defined, n * (n - 1), 1.0)
    return np.where(defined, (n1 * (n1 - 1) + n0 * (n0 - 1)) / pairs, 0.0), defined


def bootstrap_interval(
    values: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> np.ndarray:
    """Percentile bootstrap intervals of weighted means, resampling columns (triplets).

    ``values``: (M, N), one row per statistic; ``weights``: (M, N) or None (all ones). Each
    replicate draws N column indices with replacement (as multinomial counts, in blocks, the
    same draws for all rows) and computes sum(w v) / sum(w) per row. Returns (M, 2): the
    (1 - level)/2 and (1 + level)/2 quantiles, nan where no replicate is defined.
    """
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    weights = np.ones_like(values) if weights is None else np.atleast_2d(weights).astype(float)
    m, n = values.shape
    if weights.shape != values.shape:
        raise ValueError(f"weights {weights.shape} do not match values {values.shape}")
    if bootstrap < 1:
        raise ValueError("bootstrap must be >= 1")
    if not 0 < level < 1:
        raise ValueError("level must be in (0, 1)")
    if n == 0:
        return np.full((m, 2), np.nan)
    rng = np.random.default_rng(seed)
    weighted = weights * values
    stats = np.empty((m, bootstrap))
    block = max(1, _BLOCK_CELLS // n)
    for start in range(0, bootstrap, block):
        size = min(block, bootstrap - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=size).T.astype(np.float64)
        total = weights @ counts
        with np.errstate(invalid="ignore", divide="ignore"):
            stats[:, start : start + size] = np.where(
                total > 0, (weighted @ counts) / total, np.nan
            )
    tail = (1.0 - level) / 2.0
    out = np.full((m, 2), np.nan)
    defined = ~np.isnan(stats).all(axis=1)
    if defined.any():
        out[defined] = np.nanquantile(stats[defined], [tail, 1.0 - tail], axis=1).T
    return out


def score_2afc(d0, d1, judge) -> float:
    """2AFC score (LPIPS ``score_2afc_dataset`` in ``lpips/trainer.py``):
    mean((d0<d1)(1-g) + (d1<d0)g + 0.5(d0==d1)), g = fraction that chose p1.
    The expected agreement of the metric with one random rater."""
    shapes = {np.shape(np.ravel(v)) for v in (d0, d1, judge)}
    if len(shapes) != 1:
        raise ValueError(f"shapes disagree: {sorted(shapes)}")
    terms = triplet_agreement(d0, d1, judge)
    if terms.size == 0:
        raise ValueError("no triplets to score")
    return float(terms.mean())


def bootstrap_2afc(
    d0, d1, judge, bootstrap: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``score_2afc``, resampling triplets."""
    score_2afc(d0, d1, judge)  # the same checks
    low, high = bootstrap_interval(
        triplet_agreement(d0, d1, judge), bootstrap=bootstrap, seed=seed, level=level
    )[0]
    return float(low), float(high)


def human_ceiling(n_p0, n_p1) -> float:
    """Mean human-human agreement (Zhang et al., CVPR 2018): per triplet the chance that two
    random raters agree, g^2 + (1-g)^2. With n = n0 + n1 votes, plugging g = n1/n into that
    is biased upwards (a single vote "agrees with itself"); we use the leave-one-out estimate

        (n1 (n1 - 1) + n0 (n0 - 1)) / (n (n - 1)),

    the fraction of ordered pairs of *distinct* raters that agree, which is unbiased for
    g^2 + (1-g)^2. Triplets with n < 2 carry no information about agreement and are
    ignored; if none has n >= 2 the result is nan. (A metric that always sides with the
    majority scores mean(max(g, 1-g)) in ``score_2afc``, which can exceed this ceiling.)
    """
    if np.shape(np.ravel(n_p0)) != np.shape(np.ravel(n_p1)):
        raise ValueError(f"shapes disagree: {np.shape(n_p0)}, {np.shape(n_p1)}")
    if (np.asarray(n_p0) < 0).any() or (np.asarray(n_p1) < 0).any():
        raise ValueError("vote counts must be >= 0")
    terms, defined = ceiling_terms(n_p0, n_p1)
    return float(terms[defined].mean()) if defined.any() else float("nan")


def codec_pairs(codec0: Sequence[str], codec1: Sequence[str]) -> np.ndarray:
    """Label per triplet: its two codecs in alphabetical order, "jpeg vs webp" (a codec at
    two settings gives "jpeg vs jpeg")."""
    return np.array([" vs ".join(sorted((a, b))) for a, b in zip(codec0, codec1, strict=True)])


def bitrate_bands(bpp0, bpp1, edges: Sequence[float] = BPP_BANDS) -> np.ndarray:
    """Label per triplet: the band of the mean bitrate of its two sides, (bpp0 + bpp1) / 2.

    Bands are half-open [a, b) between 0, the ``edges`` and infinity: with the default edges
    "0-0.25 bpp", "0.25-0.5 bpp", "0.5-1 bpp", "1-2 bpp", "2+ bpp"."""
    edges = list(edges)
    lows = [0.0, *edges]
    names = [f"{a:g}-{b:g} bpp" for a, b in zip(lows, edges, strict=False)]
    names.append(f"{edges[-1]:g}+ bpp")
    mean = (np.asarray(bpp0, dtype=np.float64) + np.asarray(bpp1, dtype=np.float64)) / 2.0
    return np.array(names, dtype=object)[np.searchsorted(edges, mean, side="right")].astype(str)


def _number(x) -> float | None:
    """A float for JSON, None where undefined (nan)."""
    return None if np.isnan(x) else float(x)


def _label_order(label: str) -> tuple[float, str]:
    """Labels that start with a number (bitrate bands) in numeric order, then the rest."""
    number = re.match(r"\d+(\.\d+)?", label)
    return (float(number.group()) if number else math.inf, label)


def _estimates(
    distances: Mapping[str, tuple[np.ndarray, np.ndarray]],
    n_p0: np.ndarray,
    n_p1: np.ndarray,
    bootstrap: int,
    seed: int,
) -> dict:
    judge = n_p1 / (n_p0 + n_p1)
    names = list(distances)
    rows = [triplet_agreement(*distances[name], judge) for name in names]
    ceiling, defined = ceiling_terms(n_p0, n_p1)
    values = np.vstack([*rows, ceiling]) if rows else ceiling[None]
    weights = np.vstack([np.ones((len(rows), len(judge))), defined])
    intervals = bootstrap_interval(values, weights, bootstrap=bootstrap, seed=seed)
    out = {
        "triplets": int(len(judge)),
        "votes": int((n_p0 + n_p1).sum()),
        "metrics": {
            name: {
                "score": _number(score_2afc(*distances[name], judge)),
                "low": _number(intervals[i, 0]),
                "high": _number(intervals[i, 1]),
            }
            for i, name in enumerate(names)
        },
    }
    out["human_ceiling"] = {
        "score": _number(human_ceiling(n_p0, n_p1)),
        "low": _number(intervals[-1, 0]),
        "high": _number(intervals[-1, 1]),
        "triplets": int(defined.sum()),
    }
    return out


def score_table(
    distances: Mapping[str, tuple[np.ndarray, np.ndarray]],
    n_p0,
    n_p1,
    *,
    groups: Mapping[str, Sequence[str]] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """2AFC of every metric and the human ceiling, each with a 95% bootstrap interval.

    ``distances``: metric name -> (d0, d1), the distances of each triplet's two sides.
    ``n_p0``, ``n_p1``: votes per triplet; triplets without votes are left out. ``groups``:
    breakdown name -> one label per triplet (e.g. ``codec_pairs``); each label's triplets
    are scored on their own, with the same seed.

    Returns a JSON-able dict: ``triplets``, ``votes``, ``metrics`` (name -> score, low,
    high), ``human_ceiling`` (score, low, high, triplets with >= 2 votes), and
    ``breakdowns`` (breakdown -> label -> the same fields), labels in sorted order (those
    starting with a number, such as bitrate bands, in numeric order).
    Scores and bounds are None where undefined (e.g. the ceiling with no triplet of 2 votes).
    """
    n_p0 = np.asarray(n_p0, dtype=np.float64).reshape(-1)
    n_p1 = np.asarray(n_p1, dtype=np.float64).reshape(-1)
    voted = (n_p0 + n_p1) > 0
    if not voted.any():
        raise ValueError("no triplet has a vote")
    distances = {
        name: (np.asarray(d0, np.float64)[voted], np.asarray(d1, np.float64)[voted])
        for name, (d0, d1) in distances.items()
    }
    n_p0, n_p1 = n_p0[voted], n_p1[voted]
    out = _estimates(distances, n_p0, n_p1, bootstrap, seed)
    out["breakdowns"] = {}
    for group_name, labels in (groups or {}).items():
        labels = np.asarray(labels).reshape(-1)[voted]
        out["breakdowns"][group_name] = {
            str(label): _estimates(
                {
                    k: (d0[labels == label], d1[labels == label])
                    for k, (d0, d1) in distances.items()
                },
                n_p0[labels == label],
                n_p1[labels == label],
                bootstrap,
                seed,
            )
            for label in sorted(set(labels.tolist()), key=_label_order)
        }
    return out
