"""The rater JSON API. The rater page, the bots and the benchmarks all use it.

Every error answers ``{"detail": "...", "reason": "..."}`` with a 4xx status;
``reason`` is a stable key the page acts on (other-tab, completed, full, …).
"""

import uuid

import pydantic
from django.conf import settings
from django.core.files.storage import default_storage
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from ninja import Router, Schema

from studies.models import Study

from . import services
from .assignment import triplets_shown
from .models import RaterSession, Trial

router = Router(tags=["rating"])


class SessionIn(Schema):
    participant_id: str | None = None
    market: dict[str, str] = {}
    tab_id: str = ""
    screen_w: int | None = None
    screen_h: int | None = None
    dpr: float | None = None
    # The rater agreed to take part. Without it a start only resumes an existing session:
    # nothing is claimed or stored for someone who has not consented.
    consent: bool = False


class TabIn(Schema):
    tab_id: str = ""


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
    # A response counts only once the three images have been shown this long.
    min_display_ms: int


class SessionOut(Schema):
    session: uuid.UUID
    study: str
    display: DisplayOut
    break_every: int
    trials: list[TrialOut]
    answered: int
    total: int
    finished: bool


class VoteIn(pydantic.BaseModel):
    """The body of a vote (``post_vote``)."""

    model_config = pydantic.ConfigDict(extra="ignore")

    index: int
    triplet: int
    side: str
    client_id: uuid.UUID
    rt_ms: float
    display_mode: str = ""
    tab_id: str = ""


class VoteOut(pydantic.BaseModel):
    recorded: bool
    replay: bool


def vote_openapi_path() -> dict:
    """The OpenAPI entry of ``post_vote``, which is not an API operation (see there)."""

    def body(model) -> dict:
        return {"content": {"application/json": {"schema": model.model_json_schema()}}}

    error = body(Error)
    return {
        "post": {
            "operationId": "rating_api_post_vote",
            "summary": "Post Vote",
            "description": "Record one vote. Replaying a client_id answers 200 and stores "
            "nothing new.",
            "tags": ["rating"],
            "parameters": [
                {
                    "in": "path",
                    "name": "token",
                    "required": True,
                    "schema": {"type": "string", "format": "uuid"},
                },
            ],  # fmt: skip
            "requestBody": {"required": True, **body(VoteIn)},
            "responses": {
                "201": {"description": "Recorded", **body(VoteOut)},
                "200": {"description": "A replay: already recorded", **body(VoteOut)},
                **{str(code): {"description": "Refused", **error} for code in sorted(ERRORS)},
            },
        }
    }


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


# What the trial list reads of each trial, as plain values: model instances would cost more
# than the query.
SESSION_TRIAL_FIELDS = ("index", "kind", "triplet_id", "p1_on_left", "sentinel_side", "vote__id")


def _session(token: uuid.UUID) -> RaterSession:
    return get_object_or_404(RaterSession.objects.select_related("study"), token=token)


# Media URLs by file name, for storages whose URL of a name does not change (local files,
# a bucket without signed URLs): a session lists some 80 images, and asking the storage
# for each URL was a tenth of a session start. Signed URLs expire and are made each time.
_media_urls: dict[str, str] = {}
MEDIA_URLS_KEPT = 50_000


def _media_url(name: str) -> str:
    url = _media_urls.get(name)
    if url is None:
        url = default_storage.url(name)
        if not settings.STORAGES["default"].get("OPTIONS", {}).get("querystring_auth"):
            if len(_media_urls) >= MEDIA_URLS_KEPT:
                _media_urls.clear()
            _media_urls[name] = url
    return url


@receiver(setting_changed)
def _forget_media_urls(setting, **kwargs):
    if setting in ("MEDIA_URL", "STORAGES"):
        _media_urls.clear()


def _session_out(session: RaterSession) -> dict:
    """The session as ``SessionOut`` describes it. Returned as it is, not validated against
    the schema on every start (a few dozen trials each): the tests hold it to the schema.

    A session just started lists the trials it laid out; otherwise they are read back,
    with which are answered."""
    if session.laid_out is not None:
        trials = [(index, t.kind, t.triplet_id, t.p1_on_left, t.sentinel_side, None)
                  for index, t in enumerate(session.laid_out)]  # fmt: skip
    else:
        trials = list(session.trials.order_by("index").values_list(*SESSION_TRIAL_FIELDS))
    study = session.study
    shown = triplets_shown(study, {trial[2] for trial in trials})
    url = _media_url
    rows = []
    for index, kind, triplet_id, p1_on_left, sentinel_side, vote_id in trials:
        ref, p0, p0_bpp, p1, p1_bpp = shown[triplet_id]
        images = {"ref": ref, "p0": p0, "p1": p1}
        left, right = Trial.shown(kind, p1_on_left, sentinel_side, p0_bpp, p1_bpp)
        rows.append({
            "index": index,
            "practice": kind == Trial.Kind.PRACTICE,
            "triplet": triplet_id,
            "reference": url(ref),
            "left": url(images[left]),
            "right": url(images[right]),
            "answered": vote_id is not None,
        })  # fmt: skip
    return {
        "session": session.token,
        "study": study.slug,
        "display": {
            "mode": study.display_mode,
            "flicker_hz": study.flicker_hz,
            "zoom": study.zoom,
            "min_display_ms": study.min_display_ms,
        },
        "break_every": study.break_every,
        "trials": rows,
        "answered": sum(row["answered"] for row in rows),
        "total": len(rows),
        "finished": session.is_finished,
    }


def _arrival(request, payload: SessionIn) -> services.Arrival:
    return services.Arrival(
        participant_id=payload.participant_id,
        market=payload.market,
        tab_id=payload.tab_id,
        user_agent=request.headers.get("User-Agent", ""),
        screen_w=payload.screen_w,
        screen_h=payload.screen_h,
        dpr=payload.dpr,
    )


@router.post("/studies/{slug}/sessions", response={201: SessionOut, **ERRORS})
def start_session(request, slug: str, payload: SessionIn):
    """Start a rater session once the rater has consented (``"consent": true``), or resume
    the participant's session if they already have one.

    Without consent and without a session: 403 ``no-consent``, and nothing is stored."""
    study = get_object_or_404(Study, slug=slug)
    arrival = _arrival(request, payload)
    if payload.consent:
        session = services.start_session(study, arrival)
    else:
        session = services.find_session(study, arrival)
        if session is None:
            raise services.RatingError(
                "consent: a session starts only once the rater agrees to take part.",
                403,
                "no-consent",
            )
    return JsonResponse(_session_out(session), status=201)


@router.post("/studies/{slug}/sessions/resume", response={200: SessionOut, 204: None, **ERRORS})
def resume_session(request, slug: str, payload: SessionIn):
    """The participant's session if they have one (a reload, a return), taken by this tab;
    204 and nothing stored if they have none. The rater page asks this before consent.

    Refused like a start: 409 not open, other tab (``other-tab``) or completed, 410 full."""
    study = get_object_or_404(Study, slug=slug)
    session = services.find_session(study, _arrival(request, payload))
    if session is None:
        return HttpResponse(status=204)
    return JsonResponse(_session_out(session))


@router.post("/studies/{slug}/sessions/takeover", response={200: SessionOut, **ERRORS})
def take_over_session(request, slug: str, payload: SessionIn):
    """The "continue here" button: the participant's session moves to this tab (``tab_id`` required).

    The tab that held it gets 409 ``other-tab`` on its next vote. 404 ``no-session``
    when the participant has no session (start one instead), 409 ``completed``."""
    study = get_object_or_404(Study, slug=slug)
    return JsonResponse(_session_out(services.take_over_session(study, _arrival(request, payload))))


@router.post("/sessions/{token}/release", response={204: None, **ERRORS})
def release_tab(request, token: uuid.UUID, payload: TabIn):
    """The tab is closing (a beacon on pagehide): it gives up its hold on the session, so
    the rater can open the study again at once. Only the holding tab's release counts."""
    services.release_tab(token, payload.tab_id)
    return HttpResponse(status=204)


@router.post("/studies/{slug}/declines", response={204: None, **ERRORS})
def decline(request, slug: str):
    """Someone declined on the consent screen: one is added to the study's count, and
    nothing else is stored."""
    services.record_decline(get_object_or_404(Study, slug=slug))
    return HttpResponse(status=204)


@router.get("/sessions/{token}", response={200: SessionOut, **ERRORS})
def get_session(request, token: uuid.UUID):
    """The session's trials in order, with image URLs and which are answered."""
    return JsonResponse(_session_out(_session(token)))


@csrf_exempt
@require_POST
def post_vote(request, token: uuid.UUID):
    """``POST /api/sessions/{token}/votes``: record one vote; a replayed client_id answers 200.

    201 ``{"recorded": true, "replay": false}`` for a new vote, 200 with the reverse
    for a replay, 4xx ``{"detail", "reason"}`` otherwise (422 for a malformed body).
    The platform's hottest request is a plain view rather than an API operation:
    the body is checked by ``VoteIn`` all the same, without the framework's
    per-request parsing and response validation, which cost a third of a vote.
    """
    try:
        payload = VoteIn.model_validate_json(request.body)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        return _error(f"{where}: {first['msg']}", 422, "invalid")
    try:
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
    except services.RatingError as error:
        return _error(str(error), error.status, error.reason)
    return JsonResponse(
        {"recorded": result.created, "replay": not result.created},
        status=201 if result.created else 200,
    )


def _error(detail: str, status: int, reason: str) -> JsonResponse:
    return JsonResponse({"detail": detail, "reason": reason}, status=status)


@router.post("/sessions/{token}/finish", response={200: CompletionOut, **ERRORS})
def finish_session(request, token: uuid.UUID):
    """Close the session once every vote is in; return the code and where to send the rater."""
    done = services.finish_session(_session(token))
    mturk = {"submit_url": done.mturk_submit_url, "assignment_id": done.assignment_id}
    return JsonResponse(  # the shape of CompletionOut, held to it by the tests
        {
            "completion_code": done.code,
            "screened_out": done.screened_out,
            "redirect_url": done.redirect_url,
            "mturk": mturk if done.mturk_submit_url else None,
        }
    )
