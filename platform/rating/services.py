"""The rater side's logic: sessions (start, resume, tabs, markets), votes, and completion.

What a session is shown is decided by the assignment engine in ``rating.assignment``.
Votes are idempotent on the client's id, so a retried POST never makes a
second vote, and a vote that arrives after its lease ran out is kept, marked late.

Tabs. A session is held by one browser tab at a time (``active_tab``), so that two
tabs cannot answer the same trials. A tab takes the session when it starts or resumes
it while no other tab holds it, or on purpose (``take_over_session``: "continue
here"); it gives it back when it closes (``release_tab``, a beacon on pagehide).
A hold lapses when the session has not been heard from for ACTIVE_TAB_WINDOW (a
tab that crashed sends no beacon). An empty tab id never holds a session and is
never the holder: it is just another tab.
"""

import functools
import hashlib
import uuid
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from quality.services import quality_fields, session_screened_out
from studies.models import Study

from .assignment import (
    claim_triplets,
    has_open_triplets,
    lay_out_trials,
    renew_released_trials,
    sweep_expired_trials,
)
from .models import RaterSession, Trial, Vote
from .selectors import session_trials

# A tab that was heard from this recently holds its session against other tabs.
ACTIVE_TAB_WINDOW = timedelta(seconds=90)
# How stale a session's last_seen_at may get before a vote refreshes it (well under
# the tab window and the lease, so neither notices).
HEARTBEAT = timedelta(seconds=15)
# Plain values of choices the vote path compares with on every request.
SIDES = frozenset(Vote.Side.values)
JOIN_TABS = Study.DuplicatePolicy.JOIN.value


class RatingError(Exception):
    """A request the rater side refuses; ``status`` is the HTTP status, ``reason`` a stable key."""

    def __init__(self, message: str, status: int = 400, reason: str = "invalid"):
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Arrival:
    """Who is starting a session, as the rater page reports it."""

    participant_id: str | None = None
    market: dict | None = None
    tab_id: str = ""
    user_agent: str = ""
    screen_w: int | None = None
    screen_h: int | None = None
    dpr: float | None = None

    @property
    def crowd_id(self) -> str | None:
        market = self.market or {}
        return self.participant_id or market.get("PROLIFIC_PID") or market.get("workerId") or None

    @property
    def market_name(self) -> str:
        market = self.market or {}
        if market.get("PROLIFIC_PID"):
            return RaterSession.Market.PROLIFIC
        if market.get("workerId") or market.get("assignmentId"):
            return RaterSession.Market.MTURK
        return RaterSession.Market.ANONYMOUS


def rater_hash(study: Study, participant_id: str) -> str:
    return hashlib.sha256(f"{study.pk}:{participant_id}".encode()).hexdigest()


# --- sessions ------------------------------------------------------------------------


def _check_open(study: Study) -> None:
    if study.status not in (Study.Status.READY, Study.Status.COMPLETE):
        raise RatingError("This study is not open for rating.", 409, "not-open")


def _full() -> RatingError:
    return RatingError("This study has all the responses it needs. Thank you!", 410, "full")


def _existing_session(study: Study, arrival: Arrival) -> RaterSession | None:
    crowd_id = arrival.crowd_id
    if not crowd_id:
        return None
    session = RaterSession.objects.filter(
        study=study, rater_hash=rater_hash(study, crowd_id)
    ).first()
    if session is not None:
        session.study = study
    return session


def find_session(study: Study, arrival: Arrival) -> RaterSession | None:
    """The participant's session, resumed in this tab, or None when they have none.

    Writes nothing for a participant without a session: the rater page asks this
    before consent, and nothing may be claimed or stored before it. Refuses as
    ``start_session`` would (not open, full, completed, held by another tab).
    """
    _check_open(study)
    session = _existing_session(study, arrival)
    if session is not None:
        return resume_session(session, arrival)
    if study.status == Study.Status.COMPLETE:
        raise _full()
    return None


def start_session(study: Study, arrival: Arrival) -> RaterSession:
    """Open a session with its trials, or resume the participant's session.

    The caller has the rater's consent (the API asks for it): this claims triplets."""
    _check_open(study)
    crowd_id = arrival.crowd_id
    hashed = rater_hash(study, crowd_id or f"anonymous:{uuid.uuid4()}")
    if study.status == Study.Status.COMPLETE:
        existing = RaterSession.objects.filter(study=study, rater_hash=hashed).first()
        if existing:
            return resume_session(existing, arrival)
        raise _full()
    sweep_expired_trials(study)
    try:
        with transaction.atomic():
            # A participant who has a session already (a reload, another tab, a return)
            # is caught by the unique (study, rater_hash) constraint: a new arrival, the
            # common case, costs no lookup.
            session = RaterSession.objects.create(
                study=study, rater_hash=hashed, **_arrival_fields(arrival)
            )
            regular = claim_triplets(study, study.trials_per_session, exclude=())
            if not regular:
                raise _full()
            # Kept on the instance: the answer to the start lists them without reading back.
            session.laid_out = lay_out_trials(session, regular)
    except IntegrityError:
        return resume_session(RaterSession.objects.get(study=study, rater_hash=hashed), arrival)
    return session


def _arrival_fields(arrival: Arrival) -> dict:
    market = arrival.market or {}
    return {
        "market": arrival.market_name,
        "market_study_id": str(market.get("STUDY_ID") or market.get("hitId") or "")[:100],
        "market_session_id": str(market.get("SESSION_ID") or market.get("assignmentId") or "")[
            :100
        ],
        "turk_submit_to": _checked_turk_submit_to(market.get("turkSubmitTo", "")),
        "active_tab": arrival.tab_id[:64],
        "user_agent": arrival.user_agent[:400],
        "screen_w": arrival.screen_w,
        "screen_h": arrival.screen_h,
        "dpr": arrival.dpr,
    }


def _checked_turk_submit_to(url: str) -> str:
    """Only MTurk's own hosts may receive the completion form (no open redirect)."""
    if not url:
        return ""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    if origin not in settings.TWOAFC_MTURK_SUBMIT_ORIGINS:
        raise RatingError("turkSubmitTo is not an MTurk address.", 400, "invalid")
    return origin


def resume_session(
    session: RaterSession, arrival: Arrival, take_over: bool = False
) -> RaterSession:
    """The same participant again: refuse or join, per the study's duplicate policy.

    The arriving tab becomes the session's tab. Under the "refuse" policy a session
    another tab holds is refused (reason ``other-tab``) unless ``take_over``: the
    rater chose "continue here", and the other tab's next vote is refused instead.
    """
    study = session.study
    refuse = study.duplicate_policy == Study.DuplicatePolicy.REFUSE
    if session.is_finished and refuse:
        raise RatingError("You have already completed this study.", 409, "completed")
    if refuse and not take_over and _held_by_other_tab(session, arrival.tab_id):
        raise RatingError("This study is already open in another tab or window.", 409, "other-tab")
    RaterSession.objects.filter(pk=session.pk).update(
        active_tab=arrival.tab_id[:64], last_seen_at=timezone.now()
    )
    if not session.is_finished:
        renew_released_trials(session)
    session.refresh_from_db()
    return session


def take_over_session(study: Study, arrival: Arrival) -> RaterSession:
    """The "continue here" button: the participant's session moves to this tab, whoever holds it.

    Needs a tab id (an empty one could never hold the session). The tab that held it
    learns at its next vote (409 ``other-tab``); the rater page also tells the other
    tabs of the same browser at once."""
    _check_open(study)
    if not arrival.tab_id:
        raise RatingError("tab_id: a tab id is needed to take a session over.", 422, "invalid")
    session = _existing_session(study, arrival)
    if session is None:
        raise RatingError("There is no session to continue.", 404, "no-session")
    return resume_session(session, arrival, take_over=True)


def release_tab(token: uuid.UUID, tab_id: str) -> bool:
    """The tab is closing: it no longer holds its session, so another can start at once.

    Only the holding tab can release (anything else changes nothing). Returns whether
    the hold was released; raises 404 for an unknown session."""
    if tab_id and RaterSession.objects.filter(token=token, active_tab=tab_id[:64]).update(
        active_tab=""
    ):
        return True
    if not RaterSession.objects.filter(token=token).exists():
        raise RatingError("No such session.", 404, "no-session")
    return False


def record_decline(study: Study) -> None:
    """Someone saw the consent screen and declined: counted, and nothing else is stored."""
    Study.objects.filter(pk=study.pk).update(declined_count=F("declined_count") + 1)


def _held_by_other_tab(session: RaterSession, tab_id: str) -> bool:
    """Whether a tab other than ``tab_id`` holds the session (heard from recently).

    An empty ``tab_id`` is never the holder: it is just another tab."""
    recent = timezone.now() - session.last_seen_at < ACTIVE_TAB_WINDOW
    return bool(session.active_tab) and tab_id[:64] != session.active_tab and recent


# --- votes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedVote:
    vote_id: int
    created: bool  # False: a replay of a vote already stored
    late: bool  # the trial's lease had run out

    @classmethod
    def of(cls, vote: Vote, created: bool) -> "RecordedVote":
        return cls(vote.pk, created, vote.late)


def _insert_vote_fast(
    token: uuid.UUID,
    index: int,
    triplet_id: int,
    side: str,
    client_id: uuid.UUID,
    rt_ms: float,
    display_mode: str,
    tab_id: str,
) -> RecordedVote | None:
    """The common case in one statement: INSERT … SELECT from the trial, its session and study.

    The SELECT carries every check of the slow path (the trial exists at that index
    with that triplet, the session is open, no other tab holds it: ``_held_by_other_tab``,
    where an empty tab id is never the holder), and ON CONFLICT DO NOTHING leaves
    replays and second answers to the slow path. Returns None whenever the fast path
    stored nothing; ``record_vote`` then finds out why. RETURNING also says whether
    the session's heartbeat is due (``_touch_session``), so a vote needs a second
    statement only every HEARTBEAT or when it moves a lapsed hold to its own tab.
    The ORM path costs several times the database work here, and voting is the
    platform's hottest request.
    """
    now = timezone.now()
    # Adapted as the fields would (UUIDs as text where the database has no uuid type),
    # without the fields' per-call checks: this runs on every vote.
    as_uuid = (lambda u: u) if connection.features.has_native_uuid_field else (lambda u: u.hex)
    as_time = connection.ops.adapt_datetimefield_value
    token_value = as_uuid(token)
    tab = tab_id[:64]
    params = [
        as_uuid(client_id), side, side == "left", max(0.0, float(rt_ms)), display_mode[:16],
        display_mode[:16], as_time(now), token_value, index, triplet_id, JOIN_TABS, tab,
        as_time(now - ACTIVE_TAB_WINDOW), as_time(now - HEARTBEAT), tab, token_value,
    ]  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(_fast_vote_sql(), params)
        row = cursor.fetchone()
    if row is None:
        return None
    vote_id, late, heartbeat_due = row
    if heartbeat_due:
        _touch_session(token, tab_id, now)
    return RecordedVote(vote_id, created=True, late=bool(late))


@functools.cache
def _fast_vote_sql() -> str:
    quote = connection.ops.quote_name
    vote, trial = quote(Vote._meta.db_table), quote(Trial._meta.db_table)
    session, study = quote(RaterSession._meta.db_table), quote(Study._meta.db_table)
    return f"""
        INSERT INTO {vote} (trial_id, client_id, side, chose_p1, rt_ms, display_mode, late, created_at)
        SELECT t.id, %s, %s, CASE WHEN t.p1_on_left = %s THEN TRUE ELSE FALSE END, %s,
               CASE WHEN %s = '' THEN st.display_mode ELSE %s END, t.released, %s
        FROM {trial} t
        JOIN {session} s ON s.id = t.session_id
        JOIN {study} st ON st.id = s.study_id
        WHERE s.token = %s AND t.{quote("index")} = %s AND t.triplet_id = %s
          AND s.finished_at IS NULL
          AND (st.duplicate_policy = %s OR s.active_tab = '' OR s.active_tab = %s
               OR s.last_seen_at < %s)
        ON CONFLICT DO NOTHING
        RETURNING id, late,
            (SELECT s.last_seen_at < %s OR (s.active_tab <> '' AND s.active_tab <> %s)
             FROM {session} s WHERE s.token = %s)
    """  # noqa: S608 (table names come from the models, values are parameters)


def _touch_session(token: uuid.UUID, tab_id: str, now: datetime) -> None:
    """Heartbeat: note the session (and which tab) is alive.

    The UPDATE touches the row only when it is stale (older than HEARTBEAT) or held
    by another tab, whose hold had lapsed (or the study joins tabs) since the vote
    was taken: the hold moves to the voting tab. A released session (no tab) stays
    released, so a vote a closing tab sent after its release does not lock others out.
    """
    when = RaterSession._meta.get_field("last_seen_at")
    token_value = RaterSession._meta.get_field("token").get_db_prep_value(token, connection)
    tab = tab_id[:64]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {RaterSession._meta.db_table} "
            f"SET last_seen_at = %s, active_tab = CASE WHEN active_tab = '' THEN '' ELSE %s END "
            f"WHERE token = %s AND (last_seen_at < %s OR (active_tab <> '' AND active_tab <> %s))",
            [when.get_db_prep_value(now, connection), tab, token_value,
             when.get_db_prep_value(now - HEARTBEAT, connection), tab],
        )  # fmt: skip


def record_vote(
    token: uuid.UUID,
    *,
    index: int,
    triplet_id: int,
    side: str,
    client_id: uuid.UUID,
    rt_ms: float,
    display_mode: str = "",
    tab_id: str = "",
) -> RecordedVote:
    """Store one vote. A replay of the same client id returns the stored vote unchanged.

    A new vote takes the fast path (one INSERT … SELECT). When that stores
    nothing, the vote is most often a replay (a retry whose answer was lost), found
    with one lookup that also refuses a client id reused for another trial.
    Otherwise this slower path reads the trial, its session and study to answer
    precisely: a refusal, or a vote the fast path could not take.
    """
    if side not in SIDES:
        raise RatingError("side must be 'left' or 'right'.", 422, "invalid")
    fast = _insert_vote_fast(token, index, triplet_id, side, client_id, rt_ms, display_mode, tab_id)
    if fast is not None:
        return fast
    replay = _replayed(token, client_id, index)
    if replay is not None:
        return RecordedVote.of(replay, created=False)
    session = RaterSession.objects.select_related("study").filter(token=token).first()
    if session is None:
        raise RatingError("No such session.", 404, "no-session")
    if session.is_finished:
        raise RatingError("This session has ended; no more votes are taken.", 409, "ended")
    study = session.study
    if study.duplicate_policy == Study.DuplicatePolicy.REFUSE and _held_by_other_tab(
        session, tab_id
    ):
        raise RatingError("This session continues in another tab.", 409, "other-tab")
    trial = session.trials.filter(index=index).only("triplet_id", "p1_on_left", "released").first()
    if trial is None or trial.triplet_id != triplet_id:
        raise RatingError(
            "That triplet is not assigned to this session at that index.", 403, "not-assigned"
        )
    # Outside a transaction the INSERT commits on its own (one round trip); inside one
    # (a test, a caller's atomic block) a savepoint keeps a refused INSERT from breaking it.
    guard = transaction.atomic() if connection.in_atomic_block else nullcontext()
    try:
        with guard:
            vote = Vote.objects.create(
                trial=trial,
                client_id=client_id,
                side=side,
                chose_p1=(side == "left") == trial.p1_on_left,
                rt_ms=max(0.0, float(rt_ms)),
                display_mode=display_mode[:16] or study.display_mode,
                late=trial.released,
            )
    except IntegrityError:
        # The same vote may have landed from a concurrent retry since the lookup above.
        replay = _replayed(token, client_id, index)
        if replay is None:
            raise RatingError("This trial has already been answered.", 409, "answered") from None
        return RecordedVote.of(replay, created=False)
    _touch_session(token, tab_id, timezone.now())
    return RecordedVote.of(vote, created=True)


def _replayed(token: uuid.UUID, client_id: uuid.UUID, index: int) -> Vote | None:
    """The vote stored under ``client_id``, if any; refused when it was for another trial."""
    vote = Vote.objects.select_related("trial__session").filter(client_id=client_id).first()
    if vote is None:
        return None
    if vote.trial.session.token != token or vote.trial.index != index:
        raise RatingError("That client id was already used for another vote.", 409, "reused-id")
    return vote


# --- the end of a session -------------------------------------------------------------


@dataclass(frozen=True)
class Completion:
    code: str
    screened_out: bool
    redirect_url: str | None
    mturk_submit_url: str | None
    assignment_id: str


def finish_session(session: RaterSession) -> Completion:
    """Close a session once every trial has its vote, and say how the rater is paid."""
    trials = session_trials(session)
    missing = sum(trial.side is None for trial in trials)
    if missing:
        raise RatingError(f"{missing} trial(s) still have no vote.", 409, "missing-votes")
    if not session.is_finished:
        fields = quality_fields(session.study, trials)
        screened_out = session_screened_out(session.study, fields["quality"])
        closed = RaterSession.objects.filter(pk=session.pk, finished_at__isnull=True).update(
            finished_at=timezone.now(), screened_out=screened_out, **fields
        )
        if closed:
            session.screened_out = screened_out
        else:  # a concurrent finish of the same session got there first
            session.refresh_from_db()
        close_if_complete(session.study)
    study = session.study
    code = study.screened_out_code if session.screened_out else study.completion_code
    is_prolific = session.market == RaterSession.Market.PROLIFIC
    return Completion(
        code=code,
        screened_out=session.screened_out,
        redirect_url=settings.PROLIFIC_COMPLETE_URL.format(code=code) if is_prolific else None,
        mturk_submit_url=f"{session.turk_submit_to}/mturk/externalSubmit"
        if session.turk_submit_to
        else None,
        assignment_id=session.market_session_id,
    )


def close_if_complete(study: Study) -> bool:
    """A study whose every triplet has its regular votes closes to new raters."""
    if has_open_triplets(study):
        return False  # trials still to hand out: the cheap, common answer
    regular_votes = Q(trials__kind=Trial.Kind.REGULAR, trials__vote__isnull=False)
    short = (
        study.triplets.annotate(votes=Count("trials", filter=regular_votes))
        .filter(votes__lt=study.votes_per_triplet)
        .exists()
    )
    if short:
        return False
    Study.objects.filter(pk=study.pk, status=Study.Status.READY).update(
        status=Study.Status.COMPLETE
    )
    return True


def refresh_quality(session: RaterSession) -> dict[str, str]:
    """Recompute a session's measures and flags and store them; returns the flags' reasons."""
    fields = quality_fields(session.study, session_trials(session))
    RaterSession.objects.filter(pk=session.pk).update(**fields)
    return fields["quality"]["reasons"]


def refresh_study_quality(study: Study) -> int:
    """``refresh_quality`` for every session of the study; returns how many."""
    sessions = list(study.sessions.all())
    for session in sessions:
        refresh_quality(session)
    return len(sessions)
