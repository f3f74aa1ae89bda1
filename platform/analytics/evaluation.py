"""Score every registry metric against a study's votes, and aggregate the votes.

``evaluate_study`` is the whole evaluation as one JSON-able dict: 2AFC per metric and the
human ceiling with bootstrap intervals (``analytics.scoring``), broken down by codec pair,
bitrate band and source image, once with flagged raters counted and once without them;
per-triplet judge fractions and Bradley-Terry / Thurstone scales of the conditions
(``analytics.scaling``). ``cached_evaluation`` memoises it until the votes, the raters'
flags or the fits change.

Unlike ``fit_dpl``, which scores held-out triplets only, this scores every voted triplet:
a fitted DPL ("dpl") has seen part of them in training, so its own held-out score (from its
FitReport) is reported beside it.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from django.core.cache import cache
from django.db.models import Count, Max

from rating.models import Vote
from rating.selectors import rater_set, voted_triplets
from studies.models import Condition, Study

from . import dpl, scaling, scoring, services
from .metrics import REGISTRY, dpl_metric

__all__ = ["RATER_SETS", "cached_evaluation", "evaluate_study"]

RATER_SETS = {"all": True, "unflagged": False}
"""The two rater sets every score is computed for: name -> ``include_flagged``."""


def _load(study: Study) -> tuple[services.TripletData, dict[str, np.ndarray]]:
    """Triplets voted by any counted rater, flagged or not, with their labels.

    ``services.load_triplets`` counts raters as the study's own setting says; a copy of the
    study (never saved) that keeps flagged raters makes it load the larger of the two rater
    sets, which holds every triplet of the other."""
    everyone = copy.copy(study)
    everyone.exclude_flagged_raters = False
    data = services.load_triplets(everyone)
    conditions = {c.pk: str(c) for c in Condition.objects.filter(study=study)}
    rows = {
        row[0]: row
        for row in study.triplets.values_list(
            "pk",
            "patch_id",
            "patch__source__name",
            "p0__codec",
            "p0__bpp",
            "p0__condition_id",
            "p1__codec",
            "p1__bpp",
            "p1__condition_id",
        )  # fmt: skip
    }
    meta = [rows[pk] for pk in data.triplet_ids.tolist()]
    columns = list(zip(*meta, strict=True))
    labels = {
        "patch": np.array(columns[1]),
        "source": np.array(columns[2], dtype=str),
        "codec_pair": scoring.codec_pairs(columns[3], columns[6]),
        "bitrate_band": scoring.bitrate_bands(columns[4], columns[7]),
        "condition_p0": np.array([conditions[c] for c in columns[5]], dtype=str),
        "condition_p1": np.array([conditions[c] for c in columns[8]], dtype=str),
    }
    return data, labels


def _counts(study: Study, include_flagged: bool, triplet_ids: np.ndarray):
    """Votes per triplet of ``triplet_ids`` from one rater set (0 where it has none)."""
    n_p0, n_p1 = np.zeros(len(triplet_ids)), np.zeros(len(triplet_ids))
    for pk, a, b in voted_triplets(study, include_flagged).values_list("pk", "n_p0", "n_p1"):
        i = np.searchsorted(triplet_ids, pk)
        n_p0[i], n_p1[i] = a, b
    return n_p0, n_p1


def _registry(study: Study, names, dpl_weights, dpl_backbone) -> tuple[dict, dict | None]:
    """The metrics to score, and the fit the "dpl" entry comes from (None without one)."""
    registry = dict(REGISTRY)
    fit = None
    if dpl_weights is not None:
        if not Path(dpl_weights).is_file():
            raise ValueError(f"no DPL weights file at {dpl_weights}")
        registry["dpl"] = dpl_metric(dpl_weights, dpl_backbone or "stlpips-alex")
        fit = {"weights": str(dpl_weights), "backbone": dpl_backbone or "stlpips-alex"}
    else:
        # A random trunk's seed is not stored with the fit: it cannot be rebuilt to score it.
        report = study.fit_reports.exclude(backbone="random").first()
        if report is not None:
            registry["dpl"] = dpl_metric(report.weights_path, report.backbone)
            fit = {
                "weights": report.weights_path,
                "backbone": report.backbone,
                "fit_report": report.pk,
                "created_at": report.created_at.isoformat(),
                "held_out_afc": report.result.get("afc", {}).get("dpl"),
                "held_out_human_ceiling": report.result.get("human_ceiling"),
                "held_out_triplets": report.result.get("triplets"),
            }
    if names is not None:
        unknown = sorted(set(names) - set(registry))
        if unknown:
            raise ValueError(
                f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(registry)}"
            )
        registry = {name: registry[name] for name in names}
    return registry, fit


def evaluate_study(
    study: Study,
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    metrics: list[str] | None = None,
    dpl_weights: str | Path | None = None,
    dpl_backbone: str | None = None,
    include_flagged: bool | None = None,
) -> dict:
    """Score ``metrics`` (default: the whole registry, plus "dpl") on every voted triplet.

    "dpl" uses ``dpl_weights`` (an lpips-format .pth fitted on ``dpl_backbone``, default
    "stlpips-alex") when given, else the newest FitReport's weights, else it is left out.
    A metric that cannot run here (a missing trunk file) gets a score of None and its reason.
    ``include_flagged`` picks the ``headline`` rater set (default: the study's setting); both
    sets are always scored. Scaling and judge fractions use the headline set.

    Raises ``ValueError`` when the study has no votes, a metric name is unknown or
    ``dpl_weights`` is not a file.
    """
    registry, fit = _registry(study, metrics, dpl_weights, dpl_backbone)
    data, labels = _load(study)
    distances, unavailable = {}, {}
    for name, metric in registry.items():
        try:
            per_stimulus = metric.distance(data.refs, data.stimuli)
        except dpl.BackboneUnavailable as error:
            unavailable[name] = str(error)
            continue
        distances[name] = (per_stimulus[data.p0], per_stimulus[data.p1])

    if include_flagged is None:
        include_flagged = not study.exclude_flagged_raters
    headline = "all" if include_flagged else "unflagged"
    groups = {key: labels[key] for key in ("codec_pair", "bitrate_band", "source")}
    counts = {
        name: (data.n_p0, data.n_p1) if flagged else _counts(study, flagged, data.triplet_ids)
        for name, flagged in RATER_SETS.items()
    }
    sets = {}
    for name, flagged in RATER_SETS.items():
        n_p0, n_p1 = counts[name]
        table = {"votes": 0}
        if (n_p0 + n_p1).any():
            table = scoring.score_table(
                distances, n_p0, n_p1, groups=groups, bootstrap=bootstrap, seed=seed
            )
        sets[name] = {**table, **rater_set(study, flagged)}
    if sets[headline]["votes"] == 0:
        raise ValueError(f"study {study.slug!r} has no votes from its {headline} raters")

    n_p0, n_p1 = counts[headline]
    voted = (n_p0 + n_p1) > 0
    judge = scaling.judge_fractions(n_p0, n_p1)
    conditions = (labels["condition_p0"][voted], labels["condition_p1"][voted])
    return {
        "study": study.slug,
        "bootstrap": bootstrap,
        "seed": seed,
        "level": 0.95,
        "headline": headline,
        "metrics": {
            name: {
                "description": metric.description,
                "unavailable": unavailable.get(name),
            }
            for name, metric in registry.items()
        },
        "dpl": fit,
        "sets": sets,
        "judges": [
            {"triplet": int(pk), "n_p0": int(a), "n_p1": int(b), "judge": float(g)}
            for pk, a, b, g in zip(
                data.triplet_ids[voted], n_p0[voted], n_p1[voted], judge[voted], strict=True
            )
        ],
        "scaling": {
            "pooled": scaling.scale(*conditions, n_p0[voted], n_p1[voted]),
            "per_reference": scaling.scale_by(
                labels["patch"][voted], *conditions, n_p0[voted], n_p1[voted]
            ),
        },
    }


def _state(study: Study) -> str:
    """A digest of what an evaluation depends on: votes, rater flags and overrides, fits."""
    votes = Vote.objects.filter(trial__session__study=study).aggregate(
        n=Count("pk"), last=Max("pk")
    )
    raters = list(study.sessions.order_by("pk").values_list("pk", "flagged", "quality_override"))
    fit = study.fit_reports.values_list("pk", flat=True).first()
    key = repr((study.pk, study.created_at, study.exclude_flagged_raters, votes, raters, fit))
    return hashlib.sha256(key.encode()).hexdigest()


def cached_for_study(
    study: Study, kind: str, compute: Callable[[Study], dict], timeout: int = 3600
) -> dict:
    """``compute(study)`` from Django's cache while nothing it depends on changed."""
    key = f"analytics:{kind}:{_state(study)}"
    result = cache.get(key)
    if result is None:
        result = compute(study)
        cache.set(key, result, timeout)
    return result


def cached_evaluation(study: Study, timeout: int = 3600) -> dict:
    """``evaluate_study(study)``, cached as ``cached_for_study`` does."""
    return cached_for_study(study, "evaluation", evaluate_study, timeout)
