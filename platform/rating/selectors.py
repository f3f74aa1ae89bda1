"""Reads over votes, shared by exports and analytics.

Only regular trials make a triplet's judge; practice, sentinel and repeat
trials serve quality control. Which raters count follows the study's
quality-control setting unless the caller says otherwise.

Vote counts have one vocabulary everywhere (``vote_counts``; pages, snapshot JSON,
dataset card, admin and report all show it):

- **cast**: every vote stored, of any trial kind;
- **practice**, **sentinel**, **repeat**: the cast votes on those trials (quality checks,
  never part of a judge);
- **regular**: the cast votes on regular trials, the only ones that can make a judge;
- **counted**: the regular votes of raters who count (the study's quality-control setting
  and the admin's per-rater overrides): these make the judges, ``clic.csv`` and the scores;
- **left out**: the regular votes of raters who do not count.

So cast = practice + sentinel + repeat + regular, and regular = counted + left out.
"""

from collections.abc import Iterable

from django.db.models import Count, Q, QuerySet

from quality.services import AnsweredTrial
from studies.models import Study, Triplet

from .models import RaterSession, Trial, Vote


def included_sessions(study: Study, include_flagged: bool | None = None) -> Q:
    """A filter on RaterSession for the raters whose votes count in exports and fits."""
    if include_flagged is None:
        include_flagged = not study.exclude_flagged_raters
    if include_flagged:
        return ~Q(quality_override=RaterSession.QualityOverride.EXCLUDE)
    return Q(quality_override=RaterSession.QualityOverride.INCLUDE) | Q(
        quality_override=RaterSession.QualityOverride.AUTO, flagged=False
    )


def session_trials(session: RaterSession) -> list[AnsweredTrial]:
    """Every trial of the session with its vote, if any, in one query, as
    ``quality.services`` measures them."""
    fields = ("pk", "kind", "sentinel_side", "triplet_id", "vote__side", "vote__chose_p1",
              "vote__rt_ms")  # fmt: skip
    # order_by(): the default order would join the session for its own ordering.
    return [AnsweredTrial(*row) for row in session.trials.order_by().values_list(*fields)]


def counted_sessions(study: Study, include_flagged: bool | None = None) -> QuerySet[RaterSession]:
    return study.sessions.filter(included_sessions(study, include_flagged))


def voted_triplets(study: Study, include_flagged: bool | None = None) -> QuerySet[Triplet]:
    """Triplets with at least one counted vote, annotated with ``n_p0`` and ``n_p1``."""
    counted = Q(
        trials__kind=Trial.Kind.REGULAR,
        trials__vote__isnull=False,
        trials__session__in=counted_sessions(study, include_flagged),
    )
    return (
        study.triplets.annotate(
            n_p0=Count("trials", filter=counted & Q(trials__vote__chose_p1=False)),
            n_p1=Count("trials", filter=counted & Q(trials__vote__chose_p1=True)),
        )
        .filter(Q(n_p0__gt=0) | Q(n_p1__gt=0))
        .select_related("patch__source", "p0", "p1")
        .order_by("pk")
    )


def study_votes(study: Study, include_flagged: bool | None = None) -> QuerySet[Vote]:
    """Every non-practice vote of the counted raters, in the order cast."""
    return (
        Vote.objects.filter(trial__session__in=counted_sessions(study, include_flagged))
        .exclude(trial__kind=Trial.Kind.PRACTICE)
        .select_related("trial__session", "trial__triplet__p0", "trial__triplet__p1")
        .order_by("pk")
    )


def rater_set(study: Study, include_flagged: bool | None = None) -> dict:
    """Which raters an export or fit used, for its record."""
    if include_flagged is None:
        include_flagged = not study.exclude_flagged_raters
    total = study.sessions.count()
    counted = counted_sessions(study, include_flagged).count()
    return {
        "raters": "all" if include_flagged else "unflagged",
        "counted": counted,
        "left_out": total - counted,
    }


VOTE_COUNTS = {
    "cast": ("cast", "every vote stored, of any trial kind"),
    "practice": ("practice", "votes on practice trials (never in the data)"),
    "sentinel": ("sentinel", "votes on sentinel trials (one side is the reference)"),
    "repeat": ("repeat", "votes on repeated trials (an earlier trial, sides swapped)"),
    "regular": ("regular", "votes on regular trials, the only ones that can make a judge"),
    "counted": ("counted", "regular votes of the raters who count: they make the judges"),
    "left_out": ("left out", "regular votes of raters that quality control leaves out"),
}
"""Each key of ``vote_counts``, in the order pages show them: its label and its rule."""


MAIN_COUNTS = ("cast", "regular", "counted", "left_out")
"""The counts a list or a one-line summary shows; detail pages show all of ``VOTE_COUNTS``."""


def count_rows(counts: dict, main: bool = False) -> list[tuple[str, str, str, int | None]]:
    """(key, label, rule, value) of each vote count (only ``MAIN_COUNTS`` with ``main``);
    value None where ``counts`` lacks it (a snapshot recorded before counts were kept)."""
    return [
        (key, label, rule, counts.get(key))
        for key, (label, rule) in VOTE_COUNTS.items()
        if not main or key in MAIN_COUNTS
    ]


def vote_counts(
    study: Study,
    *,
    up_to: int | None = None,
    counted: Iterable[int] | QuerySet | None = None,
    include_flagged: bool | None = None,
) -> dict[str, int]:
    """The study's votes in the shared vocabulary (see the module docstring), in one query.

    ``up_to``: only votes with id <= it (a snapshot's cutoff). ``counted``: the ids of the
    sessions that count, when the caller has already fixed them (a snapshot build reads them
    once); by default ``counted_sessions(study, include_flagged)``.
    """
    if counted is None:
        counted = counted_sessions(study, include_flagged).values("pk")
    votes = Vote.objects.filter(trial__session__study=study)
    if up_to is not None:
        votes = votes.filter(pk__lte=up_to)
    regular = Q(trial__kind=Trial.Kind.REGULAR)
    found = votes.aggregate(
        cast=Count("pk"),
        practice=Count("pk", filter=Q(trial__kind=Trial.Kind.PRACTICE)),
        sentinel=Count("pk", filter=Q(trial__kind=Trial.Kind.SENTINEL)),
        repeat=Count("pk", filter=Q(trial__kind=Trial.Kind.REPEAT)),
        regular=Count("pk", filter=regular),
        counted=Count("pk", filter=regular & Q(trial__session__in=counted)),
    )
    return {**found, "left_out": found["regular"] - found["counted"]}
