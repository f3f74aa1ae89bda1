"""The rater JSON API. The rater page, the bots and the benchmarks all use it.

Every error answers ``{"detail": "..."}`` with a 4xx status.
"""

import uuid

from django.shortcuts import get_object_or_404
from ninja import Router, Schema, Status

from studies.models import Study

from . import services
from .models import RaterSession

router = Router(tags=["rating"])


class SessionIn(Schema):
    participant_id: str | None = None


class TrialOut(Schema):
    index: int
    triplet: int
    reference: str
    left: str
    right: str
    answered: bool


class SessionOut(Schema):
    session: uuid.UUID
    study: str
    trials: list[TrialOut]
    answered: int
    total: int
    finished: bool


class VoteIn(Schema):
    index: int
    triplet: int
    side: str
    client_id: uuid.UUID
    rt_ms: float


class VoteOut(Schema):
    recorded: bool
    replay: bool
    answered: int
    total: int


class CompletionOut(Schema):
    completion_code: str


class Error(Schema):
    detail: str


ERRORS = {400: Error, 403: Error, 404: Error, 409: Error, 410: Error, 422: Error}


def _session(token: uuid.UUID) -> RaterSession:
    return get_object_or_404(RaterSession.objects.select_related("study"), token=token)


def _session_out(session: RaterSession) -> dict:
    trials = session.trials.select_related(
        "triplet__patch", "triplet__p0", "triplet__p1", "vote"
    ).order_by("index")
    rows = [
        {
            "index": trial.index,
            "triplet": trial.triplet_id,
            "reference": trial.triplet.patch.image.url,
            "left": trial.stimulus_on("left").image.url,
            "right": trial.stimulus_on("right").image.url,
            "answered": hasattr(trial, "vote"),
        }
        for trial in trials
    ]
    return {
        "session": session.token,
        "study": session.study.slug,
        "trials": rows,
        "answered": sum(row["answered"] for row in rows),
        "total": len(rows),
        "finished": session.is_finished,
    }


@router.post("/studies/{slug}/sessions", response={201: SessionOut, **ERRORS})
def start_session(request, slug: str, payload: SessionIn):
    """Start a rater session, or resume the participant's session if they already have one."""
    study = get_object_or_404(Study, slug=slug)
    session = services.start_session(
        study, payload.participant_id, request.headers.get("User-Agent", "")
    )
    return Status(201, _session_out(session))


@router.get("/sessions/{token}", response={200: SessionOut, **ERRORS})
def get_session(request, token: uuid.UUID):
    """The session's trials in order, with image URLs and which are answered."""
    return _session_out(_session(token))


@router.post("/sessions/{token}/votes", response={200: VoteOut, 201: VoteOut, **ERRORS})
def post_vote(request, token: uuid.UUID, payload: VoteIn):
    """Record one vote. Replaying the same client_id answers 200 and stores nothing new."""
    session = _session(token)
    result = services.record_vote(
        session,
        index=payload.index,
        triplet_id=payload.triplet,
        side=payload.side,
        client_id=payload.client_id,
        rt_ms=payload.rt_ms,
    )
    answered = session.trials.filter(vote__isnull=False).count()
    body = {
        "recorded": result.created,
        "replay": not result.created,
        "answered": answered,
        "total": session.trials.count(),
    }
    return Status(201 if result.created else 200, body)


@router.post("/sessions/{token}/finish", response={200: CompletionOut, **ERRORS})
def finish_session(request, token: uuid.UUID):
    """Close the session once every vote is in, and return the completion code."""
    return {"completion_code": services.finish_session(_session(token))}
