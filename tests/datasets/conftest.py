"""Fixtures for dataset tests: a study with votes, and LPIPS's way of reading the BAPPS layout."""

import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rating import services as rating


def vote_all(study, participants, *, chose_p1=True, rt_ms=500, finish=False):
    """Each participant starts a session and answers every trial: p1 (or p0) every time, and
    the reference on sentinels, as a careful rater does.

    ``finish`` ends each session too, which is when quality control flags a rater."""
    for participant in participants:
        session = rating.start_session(study, rating.Arrival(participant_id=participant))
        for trial in session.trials.all():
            side = "left" if trial.p1_on_left == chose_p1 else "right"
            if trial.kind == "sentinel":
                side = trial.sentinel_side
            rating.record_vote(session.token, index=trial.index, triplet_id=trial.triplet_id,
                               side=side, client_id=uuid.uuid4(), rt_ms=rt_ms)  # fmt: skip
        if finish:
            rating.finish_session(session)


def make_counted_study(django_capture_on_commit_callbacks):
    """A small study whose vote counts all differ: 2 photos x 2 patches x 3 conditions = 12
    triplets; practice, sentinel and repeat trials; three careful raters and one too fast
    (flagged, so left out: sessions are long enough for the fast-response flag). Votes go
    through the rating services."""
    from tests.conftest import generate, make_study

    study = make_study(
        name="Counted study", patches_per_image=2, trials_per_session=10, votes_per_triplet=4,
        practice_trials=1,
        sentinel_rate=0.2, repeat_rate=0.2,
    )  # fmt: skip
    generate(study, django_capture_on_commit_callbacks)
    vote_all(study, ("careful-1", "careful-2", "careful-3"), rt_ms=900, finish=True)
    vote_all(study, ("too-fast",), rt_ms=100, finish=True)
    return study


@pytest.fixture
def counted_study(db, django_capture_on_commit_callbacks):
    study = make_counted_study(django_capture_on_commit_callbacks)
    assert study.sessions.filter(flagged=True).count() == 1
    return study


@pytest.fixture
def voted_study(ready_study):
    """Three raters (ids a real market would send) answer every trial, always choosing p1."""
    vote_all(ready_study, ("PROLIFIC-AAA", "PROLIFIC-BBB", "PROLIFIC-CCC"))
    return ready_study


def load_like_lpips(root: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """What LPIPS's TwoAFCDataset does: sorted files per folder, paired by position."""
    folders = {name: sorted((root / name).iterdir()) for name in ("ref", "p0", "p1", "judge")}
    assert len({len(files) for files in folders.values()}) == 1
    rows = []
    for ref, p0, p1, judge in zip(*folders.values(), strict=False):
        assert ref.name == p0.name == p1.name and judge.stem == ref.stem
        value = np.load(judge).reshape((1, 1, 1))
        rows.append(
            tuple(np.asarray(Image.open(f).convert("RGB")) for f in (ref, p0, p1))
            + (float(value[0, 0, 0]),)
        )
    return rows
