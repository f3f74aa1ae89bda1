"""The rater JSON API. The rater page, the bots and the benchmarks all use it.

Every error answers ``{"detail": "...", "reason": "..."}`` with a 4xx status;
``reason`` is a stable key the page acts on (other-tab, completed, full, …).
"""

import uuid

from django.core.files.storage import default_storage
from django.shortcuts import get_object_or_404
from ninja import Router, Schema, Status

from studies.models import Study

from . import services
from .models import RaterSession, Trial

router = Router(tags=["rating"])


class SessionIn(Schema):
    participant_id: str | None = None
    market: dict[str, str] = {}
    tab_id: str = ""
    screen_w: int | None = None
    screen_h: int | None = None
    dpr: float | None = None


class TrialOut(Schema):
    index: int
    practice: bool
    triplet: int
    reference: str
    left: str
    right: str
    answered: bool


class DisplayOut(Schema):
    mode: str
    flicker_hz: float
    zoom: int


class SessionOut(Schema):
    session: uuid.UUID
    study: str
    display: DisplayOut
    break_every: int
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
    display_mode: str = ""
    tab_id: str = ""


class VoteOut(Schema):
    recorded: bool
    replay: bool


class MTurkOut(Schema):
    submit_url: str
    assignment_id: str


class CompletionOut(Schema):
    completion_code: str
    screened_out: bool
    redirect_url: str | None
    mturk: MTurkOut | None


class Error(Schema):
    detail: str
    reason: str = ""


ERRORS = {400: Error, 403: Error, 404: Error, 409: Error, 410: Error, 422: Error}


# What the trial list shows, read as plain values: model instances would cost more than the query.
SESSION_TRIAL_FIELDS = (
    "index", "kind", "triplet_id", "p1_on_left", "sentinel_side",
    "triplet__patch__image", "triplet__p0__image", "triplet__p0__bpp",
    "triplet__p1__image", "triplet__p1__bpp", "vote__id",
)  # fmt: skip


def _session(token: uuid.UUID) -> RaterSession:
    return get_object_or_404(RaterSession.objects.select_related("study"), token=token)


def _session_out(session: RaterSession) -> dict:
    url = default_storage.url
    rows = []
    for trial in session.trials.order_by("index").values_list(*SESSION_TRIAL_FIELDS, named=True):
        images = {"ref": trial.triplet__patch__image, "p0": trial.triplet__p0__image,
                  "p1": trial.triplet__p1__image}  # fmt: skip
        left, right = Trial.shown(
            trial.kind, trial.p1_on_left, trial.sentinel_side,
            trial.triplet__p0__bpp, trial.triplet__p1__bpp,
        )  # fmt: skip
        rows.append({
            "index": trial.index,
            "practice": trial.kind == Trial.Kind.PRACTICE,
            "triplet": trial.triplet_id,
            "reference": url(trial.triplet__patch__image),
            "left": url(images[left]),
            "right": url(images[right]),
            "answered": trial.vote__id is not None,
        })  # fmt: skip
    study = session.study
    return {
        "session": session.token,
        "study": study.slug,
        "display": {"mode": study.display_mode, "flicker_hz": study.flicker_hz, "zoom": study.zoom},
        "break_every": study.break_every,
        "trials": rows,
        "answered": sum(row["answered"] for row in rows),
        "total": len(rows),
        "finished": session.is_finished,
    }


@router.post("/studies/{slug}/sessions", response={201: SessionOut, **ERRORS})
def start_session(request, slug: str, payload: SessionIn):
    """Start a rater session, or resume the participant's session if they already have one."""
    study = get_object_or_404(Study, slug=slug)
    arrival = services.Arrival(
        participant_id=payload.participant_id,
        market=payload.market,
        tab_id=payload.tab_id,
        user_agent=request.headers.get("User-Agent", ""),
        screen_w=payload.screen_w,
        screen_h=payload.screen_h,
        dpr=payload.dpr,
    )
    return Status(201, _session_out(services.start_session(study, arrival)))


@router.get("/sessions/{token}", response={200: SessionOut, **ERRORS})
def get_session(request, token: uuid.UUID):
    """The session's trials in order, with image URLs and which are answered."""
    return _session_out(_session(token))


@router.post("/sessions/{token}/votes", response={200: VoteOut, 201: VoteOut, **ERRORS})
def post_vote(request, token: uuid.UUID, payload: VoteIn):
    """Record one vote. Replaying the same client_id answers 200 and stores nothing new."""
    result = services.record_vote(
        token,
        index=payload.index,
        triplet_id=payload.triplet,
        side=payload.side,
        client_id=payload.client_id,
        rt_ms=payload.rt_ms,
        display_mode=payload.display_mode,
        tab_id=payload.tab_id,
    )
    return Status(
        201 if result.created else 200, {"recorded": result.created, "replay": not result.created}
    )


@router.post("/sessions/{token}/finish", response={200: CompletionOut, **ERRORS})
def finish_session(request, token: uuid.UUID):
    """Close the session once every vote is in; return the code and where to send the rater."""
    done = services.finish_session(_session(token))
    mturk = {"submit_url": done.mturk_submit_url, "assignment_id": done.assignment_id}
    return {
        "completion_code": done.code,
        "screened_out": done.screened_out,
        "redirect_url": done.redirect_url,
        "mturk": mturk if done.mturk_submit_url else None,
    }
