"""Reads over votes, shared by exports and analytics.

Only regular trials make a triplet's judge; practice, sentinel and repeat
trials serve quality control. Which raters count follows the study's
quality-control setting unless the caller says otherwise.
"""

from django.db.models import Count, Q, QuerySet

from quality.services import included_sessions
from studies.models import Study, Triplet

from .models import RaterSession, Trial, Vote


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
