"""The rater side's logic: handing out trials and recording votes.

The assignment engine gives each triplet at most ``votes_per_triplet`` trials,
each from a different session, under a row lock (``SELECT … FOR UPDATE SKIP
LOCKED`` on PostgreSQL; SQLite serialises writers). Votes are idempotent on the
client's id, so a retried POST never makes a second vote.
"""

import hashlib
import random
import uuid
from dataclasses import dataclass

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from studies.models import Study, Triplet

from .models import RaterSession, Trial, Vote


class RatingError(Exception):
    """A request the rater side refuses; ``status`` is the HTTP status to answer with."""

    status = 400

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status


def rater_hash(study: Study, participant_id: str) -> str:
    return hashlib.sha256(f"{study.pk}:{participant_id}".encode()).hexdigest()


def start_session(
    study: Study, participant_id: str | None = None, user_agent: str = ""
) -> RaterSession:
    """Open a session (or resume the participant's open one) with its trials assigned."""
    if study.status != Study.Status.READY:
        raise RatingError("This study is not open for rating.", status=409)
    if participant_id:
        existing = RaterSession.objects.filter(
            study=study, rater_hash=rater_hash(study, participant_id)
        ).first()
        if existing:
            return existing
    participant_id = participant_id or f"anonymous:{uuid.uuid4()}"
    with transaction.atomic():
        session = RaterSession.objects.create(
            study=study, rater_hash=rater_hash(study, participant_id), user_agent=user_agent[:400]
        )
        chosen = _claim_triplets(study, study.trials_per_session)
        if not chosen:
            raise RatingError("This study has all the votes it needs. Thank you!", status=410)
        rng = random.Random(session.token.int)
        Trial.objects.bulk_create(
            Trial(session=session, index=i, triplet_id=t, p1_on_left=rng.random() < 0.5)
            for i, t in enumerate(chosen)
        )
    return session


def _claim_triplets(study: Study, count: int) -> list[int]:
    """Lock the least-assigned open triplets, prefer distinct reference patches, and count them out."""
    open_triplets = Triplet.objects.filter(study=study, assigned__lt=study.votes_per_triplet)
    if connection.features.has_select_for_update_skip_locked:
        open_triplets = open_triplets.select_for_update(skip_locked=True)
    candidates = list(
        open_triplets.order_by("assigned", "?").values_list("pk", "patch_id")[: count * 4]
    )
    chosen, seen_patches, rest = [], set(), []
    for triplet_id, patch_id in candidates:
        if patch_id in seen_patches:
            rest.append(triplet_id)
        else:
            seen_patches.add(patch_id)
            chosen.append(triplet_id)
    chosen = (chosen + rest)[:count]
    Triplet.objects.filter(pk__in=chosen).update(assigned=F("assigned") + 1)
    random.shuffle(chosen)
    return chosen


@dataclass(frozen=True)
class RecordedVote:
    vote: Vote
    created: bool


def record_vote(
    session: RaterSession,
    *,
    index: int,
    triplet_id: int,
    side: str,
    client_id: uuid.UUID,
    rt_ms: float,
) -> RecordedVote:
    """Store one vote. A replay of the same client id returns the stored vote unchanged."""
    replay = _replayed(session, client_id, index)
    if replay:
        return RecordedVote(replay, created=False)
    if session.is_finished:
        raise RatingError("This session has ended; no more votes are taken.", status=409)
    if side not in Vote.Side.values:
        raise RatingError("side must be 'left' or 'right'.", status=422)
    trial = session.trials.select_related("triplet").filter(index=index).first()
    if trial is None or trial.triplet_id != triplet_id:
        raise RatingError("That triplet is not assigned to this session at that index.", status=403)
    try:
        with transaction.atomic():
            vote = Vote.objects.create(
                trial=trial,
                client_id=client_id,
                side=side,
                chose_p1=trial.stimulus_on(side).pk == trial.triplet.p1_id,
                rt_ms=max(0.0, float(rt_ms)),
            )
    except IntegrityError:
        replay = _replayed(session, client_id, index)
        if replay:
            return RecordedVote(replay, created=False)
        raise RatingError("This trial has already been answered.", status=409) from None
    return RecordedVote(vote, created=True)


def _replayed(session: RaterSession, client_id: uuid.UUID, index: int) -> Vote | None:
    vote = Vote.objects.select_related("trial").filter(client_id=client_id).first()
    if vote is None:
        return None
    if vote.trial.session_id != session.pk or vote.trial.index != index:
        raise RatingError("That client id was already used for another vote.", status=409)
    return vote


def finish_session(session: RaterSession) -> str:
    """Close a session once every trial has its vote; returns the completion code."""
    missing = session.trials.filter(vote__isnull=True).count()
    if missing:
        raise RatingError(f"{missing} trial(s) still have no vote.", status=409)
    if not session.is_finished:
        RaterSession.objects.filter(pk=session.pk, finished_at__isnull=True).update(
            finished_at=timezone.now()
        )
    return session.study.completion_code
