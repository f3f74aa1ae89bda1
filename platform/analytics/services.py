"""Fit DPL weights to a study's votes and score every metric by 2AFC agreement.

Triplets are split by source image, so no reference is both fitted and scored.
Features φ(ref, stimulus) are computed once per stimulus, not once per triplet, and cached
on disk (``analytics.feature_cache``): d is linear in the weights (see ``analytics.dpl``), so each
triplet only indexes them and a re-fit after new votes only computes the new stimuli.

A fit runs inline (``fit_dpl``, the command line) or as a job (``queue_fit`` → Celery task
``analytics.tasks.fit_dpl`` → ``run_fit``), whose progress lives in its ``FitJob`` row.
Each fit writes an lpips-format ``.pth`` and a model card ``.json`` beside it.
"""

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from jobs import services as jobs
from rating.selectors import rater_set, voted_triplets
from studies.models import Study
from studies.services import load_pixels

from . import dpl, feature_cache, fitting, lpips_format, metrics, scoring
from .models import FitJob, FitReport

TEST_FRACTION = 0.3
BOOTSTRAP_RESAMPLES = 1000

# progress(stage, done, total); stage is one of FitJob.Stage's values.
Progress = Callable[[str, int, int], None]


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
    stimulus_keys: list[str] | None = None  # feature-cache key of each stimulus
    references: np.ndarray | None = None  # uint8 (R, H, W, 3): each patch once
    ref_of: np.ndarray | None = None  # (S,): index into ``references``

    @property
    def judge(self) -> np.ndarray:
        return self.n_p1 / (self.n_p0 + self.n_p1)

    def subset(self, mask: np.ndarray) -> "TripletData":
        return TripletData(
            self.triplet_ids[mask], self.source_ids[mask], self.n_p0[mask], self.n_p1[mask],
            self.p0[mask], self.p1[mask], self.refs, self.stimuli,
            self.stimulus_keys, self.references, self.ref_of,
        )  # fmt: skip


def load_triplets(study: Study) -> TripletData:
    rows = list(voted_triplets(study))
    if not rows:
        raise ValueError(f"study {study.slug!r} has no votes yet")
    stimulus_index: dict[int, int] = {}
    patch_index: dict[int, int] = {}
    references, stimuli, ref_of, keys = [], [], [], []
    for triplet in rows:
        for stimulus in (triplet.p0, triplet.p1):
            if stimulus.pk in stimulus_index:
                continue
            if stimulus.patch_id not in patch_index:
                patch_index[stimulus.patch_id] = len(references)
                references.append(load_pixels(triplet.patch.image))
            r = patch_index[stimulus.patch_id]
            pixels = load_pixels(stimulus.image)
            stimulus_index[stimulus.pk] = len(stimuli)
            stimuli.append(pixels)
            ref_of.append(r)
            keys.append(feature_cache.stimulus_key(stimulus.pk, references[r], pixels))
    references_arr = np.stack(references)
    ref_of_arr = np.array(ref_of)
    return TripletData(
        triplet_ids=np.array([t.pk for t in rows]),
        source_ids=np.array([t.patch.source_id for t in rows]),
        n_p0=np.array([t.n_p0 for t in rows], dtype=np.float64),
        n_p1=np.array([t.n_p1 for t in rows], dtype=np.float64),
        p0=np.array([stimulus_index[t.p0_id] for t in rows]),
        p1=np.array([stimulus_index[t.p1_id] for t in rows]),
        refs=references_arr[ref_of_arr],
        stimuli=np.stack(stimuli),
        stimulus_keys=keys,
        references=references_arr,
        ref_of=ref_of_arr,
    )


def feature_cache_for(net: dpl.DPL) -> feature_cache.FeatureCache:
    """The on-disk φ cache of ``net``'s trunk, under ``DATA_DIR/features/``."""
    root = Path(settings.DATA_DIR) / "features"
    return feature_cache.FeatureCache(root, feature_cache.trunk_identity(net))


def score_metrics(data: TripletData, dpl_per_stimulus: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """2AFC score of each metric on ``data``; metrics that cannot run go to the second dict.

    Registry metrics run only on the stimuli that ``data``'s triplets use; one that
    ``dpl_per_stimulus`` already holds (the fit's starting heads) is not run again."""
    used = np.unique(np.concatenate([data.p0, data.p1]))
    position = np.full(len(data.stimuli), -1)
    position[used] = np.arange(len(used))
    p0, p1 = position[data.p0], position[data.p1]
    scores, unavailable = {}, {}
    for name, distance in metrics.METRICS.items():
        if name in dpl_per_stimulus:
            continue
        try:
            d = np.asarray(distance(data.refs[used], data.stimuli[used]))
        except dpl.BackboneUnavailable as error:
            scores[name] = None
            unavailable[name] = str(error)
            continue
        scores[name] = scoring.score_2afc(d[p0], d[p1], data.judge)
    for name, per_stimulus in dpl_per_stimulus.items():
        scores[name] = scoring.score_2afc(per_stimulus[data.p0], per_stimulus[data.p1], data.judge)
    return scores, unavailable


def fit_dpl(
    study: Study,
    *,
    backbone: str = "stlpips-alex",
    loss: str = "rank",
    epochs: int = 30,
    seed: int = 0,
    snapshot: str | None = None,
    progress: Progress | None = None,
) -> FitReport:
    """Fit w ≥ 0 on the training sources' triplets, score on the held-out ones, save weights.

    Writes ``DATA_DIR/models/<study>/dpl-<backbone>-<time>.pth`` (lpips format) and the model
    card ``.json`` beside it; ``snapshot`` names the dataset snapshot the votes came from, if
    any. ``progress(stage, done, total)`` reports "features" (stimuli computed, the cached ones
    are skipped), "fitting" (epochs) and "scoring". Raises ValueError for a study without
    votes or bad settings, ``dpl.BackboneUnavailable`` for a trunk that is not on disk.
    """
    if loss not in ("rank", "logistic"):
        raise ValueError(f"loss must be 'rank' or 'logistic', got {loss!r}")
    if epochs < 1:
        raise ValueError("epochs must be >= 1")

    def stage_progress(stage: str) -> Callable[[int, int], None] | None:
        return None if progress is None else (lambda done, total: progress(stage, done, total))

    data = load_triplets(study)
    train_mask, test_mask = fitting.split_by_group(
        data.source_ids, test_fraction=TEST_FRACTION, seed=seed
    )
    net = dpl.load_dpl(backbone, seed=seed)
    features = feature_cache.features_for(
        net, feature_cache_for(net), data.stimulus_keys, data.references, data.stimuli,
        data.ref_of, progress=stage_progress(FitJob.Stage.FEATURES),
    )  # fmt: skip
    phi = features.phi
    train = data.subset(train_mask)
    initial = net.weights()
    fit = fitting.fit_weights(
        phi[train.p0], phi[train.p1], train.judge, loss=loss, epochs=epochs, seed=seed,
        init=initial, progress=stage_progress(FitJob.Stage.FITTING),
    )  # fmt: skip
    if progress is not None:
        progress(FitJob.Stage.SCORING, 0, 1)
    test = data.subset(test_mask)
    dpl_scores = {"dpl": phi @ fit.weights}
    if backbone == "stlpips-alex":
        # The trained heads the fit started from: what fitting on this study adds.
        dpl_scores["stlpips-alex"] = phi @ initial
    scores, unavailable = score_metrics(test, dpl_scores)
    d = dpl_scores["dpl"]
    interval = scoring.bootstrap_2afc(
        d[test.p0], d[test.p1], test.judge, bootstrap=BOOTSTRAP_RESAMPLES, seed=seed
    )
    raters = rater_set(study)
    weights_path = _weights_path(study, backbone)
    result = {
        "study": study.slug,
        "backbone": backbone,
        "loss": loss,
        "afc": scores,
        "afc_ci95": list(interval),
        "unavailable": unavailable,
        "split": "test",
        "human_ceiling": scoring.human_ceiling(test.n_p0, test.n_p1),
        "triplets": int(test_mask.sum()),
        "train_triplets": int(train_mask.sum()),
        "votes": int((test.n_p0 + test.n_p1).sum()),
        "train_votes": int((train.n_p0 + train.n_p1).sum()),
        "features_computed": features.computed,
        "features_cached": len(phi) - features.computed,
        "weights": str(weights_path),
        "model_card": str(weights_path.with_suffix(".json")),
        **raters,
    }
    card = model_card(
        study, data, train_mask, test_mask, result, trunk=feature_cache.trunk_identity(net),
        epochs=epochs, seed=seed, snapshot=snapshot,
    )  # fmt: skip
    _write_atomically(weights_path, lambda tmp: lpips_format.save_lpips_weights(fit.weights, tmp))
    _write_atomically(
        weights_path.with_suffix(".json"),
        lambda tmp: tmp.write_text(json.dumps(card, indent=2) + "\n"),
    )
    if progress is not None:
        progress(FitJob.Stage.SCORING, 1, 1)
    return FitReport.objects.create(
        study=study, backbone=backbone, loss=loss, result=result, weights_path=str(weights_path)
    )


def model_card(
    study: Study,
    data: TripletData,
    train_mask: np.ndarray,
    test_mask: np.ndarray,
    result: dict,
    *,
    trunk: str,
    epochs: int,
    seed: int,
    snapshot: str | None,
) -> dict:
    """The JSON written beside a fitted ``.pth``: what it is, what data made it, how good."""
    votes = int((data.n_p0 + data.n_p1).sum())
    return {
        "kind": "twoafc DPL weights (lpips format)",
        "weights_file": Path(result["weights"]).name,
        "load_with": (
            "lpips.LPIPS(net='alex', model_path=FILE) reads the heads; distances match ours "
            "only on the same trunk (see 'backbone' and 'trunk')"
        ),
        "backbone": result["backbone"],
        "trunk": trunk,
        "loss": result["loss"],
        "epochs": epochs,
        "seed": seed,
        "data": {
            "snapshot": snapshot,
            "study": study.slug,
            "votes": votes,
            "triplets": len(data.triplet_ids),
            "taken_at": timezone.now().isoformat(),
        },
        "votes_used": {"train": result["train_votes"], "test": result["votes"]},
        "raters": {k: result[k] for k in ("raters", "counted", "left_out")},
        "split": {
            "by": "source image",
            "test_fraction": TEST_FRACTION,
            "seed": seed,
            "train_sources": int(np.unique(data.source_ids[train_mask]).size),
            "test_sources": int(np.unique(data.source_ids[test_mask]).size),
            "train_triplets": result["train_triplets"],
            "test_triplets": result["triplets"],
        },
        "test_2afc": {
            "dpl": result["afc"]["dpl"],
            "ci95": result["afc_ci95"],
            "bootstrap": f"{BOOTSTRAP_RESAMPLES} resamples of test triplets, percentile",
            "human_ceiling": result["human_ceiling"],
            "others": {k: v for k, v in result["afc"].items() if k != "dpl"},
        },
    }


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` then rename to ``path``, so a crash leaves no half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _weights_path(study: Study, backbone: str) -> Path:
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S-%f")
    return Path(settings.DATA_DIR) / "models" / study.slug / f"dpl-{backbone}-{stamp}.pth"


# --- fit jobs (admin → Celery) ----------------------------------------------------------


def check_fit_settings(study: Study, backbone: str, loss: str, epochs: int) -> None:
    """ValidationError unless ``study`` has votes and the settings are known."""
    errors = []
    if backbone not in dpl.BACKBONES:
        errors.append(f"unknown backbone {backbone!r}; choose one of {', '.join(dpl.BACKBONES)}")
    if loss not in ("rank", "logistic"):
        errors.append(f"loss must be 'rank' or 'logistic', got {loss!r}")
    if epochs < 1:
        errors.append("epochs must be >= 1")
    if not voted_triplets(study).exists():
        errors.append(f"study {study.slug!r} has no votes yet")
    if errors:
        raise ValidationError(errors)


def queue_fit(job: FitJob, enqueue: Callable[[int], object]) -> FitJob:
    """Check and save a new ``job``; ``enqueue(job.pk)`` runs once the row is committed
    (``job.enqueued`` is False afterwards if the broker could not be reached)."""
    check_fit_settings(job.study, job.backbone, job.loss, job.epochs)
    with transaction.atomic():
        job.status, job.stage = FitJob.Status.QUEUED, FitJob.Stage.WAITING
        job.save()
        jobs.enqueue_on_commit(job, enqueue)
    return job


PROGRESS_EVERY_S = 0.5


def run_fit(job: FitJob) -> dict:
    """The body of a claimed fit job: fit, with progress in its row (at most every 0.5 s and at
    each stage's end). Returns what the job finishes with: its report."""
    last = {"t": 0.0, "stage": None}

    def progress(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage == last["stage"] and done < total and now - last["t"] < PROGRESS_EVERY_S:
            return
        last.update(t=now, stage=stage)
        job.set_progress(done, total, stage=stage)

    report = fit_dpl(
        job.study, backbone=job.backbone, loss=job.loss, epochs=job.epochs, seed=job.seed,
        progress=progress,
    )  # fmt: skip
    return {"report": report}
