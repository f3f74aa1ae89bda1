"""Fit DPL weights to a study's votes and score every metric by 2AFC agreement.

Triplets are split by source image, so no reference is both fitted and scored.
Features φ(ref, stimulus) are computed once per stimulus, not once per triplet:
d is linear in the weights (REFERENCE.md §3), so each triplet only indexes them.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.utils import timezone

from rating.selectors import rater_set, voted_triplets
from studies.models import Study
from studies.services import load_pixels

from . import dpl, fitting, lpips_format, metrics
from .models import FitReport


@dataclass
class TripletData:
    """A study's voted triplets as arrays; p0/p1 index into ``stimuli``."""

    triplet_ids: np.ndarray
    source_ids: np.ndarray
    n_p0: np.ndarray
    n_p1: np.ndarray
    p0: np.ndarray
    p1: np.ndarray
    refs: np.ndarray  # uint8 (S, H, W, 3): the reference of each stimulus
    stimuli: np.ndarray  # uint8 (S, H, W, 3)

    @property
    def judge(self) -> np.ndarray:
        return self.n_p1 / (self.n_p0 + self.n_p1)

    def subset(self, mask: np.ndarray) -> "TripletData":
        return TripletData(
            self.triplet_ids[mask], self.source_ids[mask], self.n_p0[mask], self.n_p1[mask],
            self.p0[mask], self.p1[mask], self.refs, self.stimuli,
        )  # fmt: skip


def load_triplets(study: Study) -> TripletData:
    rows = list(voted_triplets(study))
    if not rows:
        raise ValueError(f"study {study.slug!r} has no votes yet")
    stimulus_index: dict[int, int] = {}
    refs, stimuli, patch_pixels = [], [], {}
    for triplet in rows:
        for stimulus in (triplet.p0, triplet.p1):
            if stimulus.pk in stimulus_index:
                continue
            if stimulus.patch_id not in patch_pixels:
                patch_pixels[stimulus.patch_id] = load_pixels(triplet.patch.image)
            stimulus_index[stimulus.pk] = len(stimuli)
            stimuli.append(load_pixels(stimulus.image))
            refs.append(patch_pixels[stimulus.patch_id])
    return TripletData(
        triplet_ids=np.array([t.pk for t in rows]),
        source_ids=np.array([t.patch.source_id for t in rows]),
        n_p0=np.array([t.n_p0 for t in rows], dtype=np.float64),
        n_p1=np.array([t.n_p1 for t in rows], dtype=np.float64),
        p0=np.array([stimulus_index[t.p0_id] for t in rows]),
        p1=np.array([stimulus_index[t.p1_id] for t in rows]),
        refs=np.stack(refs),
        stimuli=np.stack(stimuli),
    )


def score_metrics(data: TripletData, dpl_per_stimulus: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """2AFC score of each metric on ``data``; metrics that cannot run go to the second dict."""
    scores, unavailable = {}, {}
    for name, distance in metrics.METRICS.items():
        try:
            per_stimulus = distance(data.refs, data.stimuli)
        except dpl.BackboneUnavailable as error:
            scores[name] = None
            unavailable[name] = str(error)
            continue
        scores[name] = fitting.score_2afc(per_stimulus[data.p0], per_stimulus[data.p1], data.judge)
    for name, per_stimulus in dpl_per_stimulus.items():
        scores[name] = fitting.score_2afc(per_stimulus[data.p0], per_stimulus[data.p1], data.judge)
    return scores, unavailable


def fit_dpl(
    study: Study,
    *,
    backbone: str = "stlpips-alex",
    loss: str = "rank",
    epochs: int = 30,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> FitReport:
    """Fit w ≥ 0 on the training sources' triplets, score on the held-out ones, save weights."""
    data = load_triplets(study)
    train_mask, test_mask = fitting.split_by_group(data.source_ids, seed=seed)
    net = dpl.load_dpl(backbone, seed=seed)
    phi = fitting.compute_features(net, data.refs, data.stimuli, progress=progress)
    train = data.subset(train_mask)
    initial = net.weights()
    fit = fitting.fit_weights(
        phi[train.p0], phi[train.p1], train.judge, loss=loss, epochs=epochs, seed=seed, init=initial
    )
    test = data.subset(test_mask)
    dpl_scores = {"dpl": phi @ fit.weights}
    if backbone == "stlpips-alex":
        # The trained heads the fit started from: what fitting on this study adds.
        dpl_scores["stlpips-alex"] = phi @ initial
    scores, unavailable = score_metrics(test, dpl_scores)

    weights_path = _weights_path(study, backbone)
    lpips_format.save_lpips_weights(fit.weights, weights_path)
    result = {
        "study": study.slug,
        "backbone": backbone,
        "loss": loss,
        "afc": scores,
        "unavailable": unavailable,
        "split": "test",
        "human_ceiling": fitting.human_ceiling(test.n_p0, test.n_p1),
        "triplets": int(test_mask.sum()),
        "train_triplets": int(train_mask.sum()),
        "votes": int((test.n_p0 + test.n_p1).sum()),
        "train_votes": int((train.n_p0 + train.n_p1).sum()),
        "weights": str(weights_path),
        **rater_set(study),
    }
    return FitReport.objects.create(
        study=study, backbone=backbone, loss=loss, result=result, weights_path=str(weights_path)
    )


def _weights_path(study: Study, backbone: str) -> Path:
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S-%f")
    return Path(settings.DATA_DIR) / "models" / study.slug / f"dpl-{backbone}-{stamp}.pth"
