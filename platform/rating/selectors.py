"""Reads over votes, shared by exports and analytics."""

from django.db.models import Count, Q, QuerySet

from studies.models import Study, Triplet

from .models import Vote


def voted_triplets(study: Study) -> QuerySet[Triplet]:
    """Triplets with at least one vote, annotated with ``n_p0`` and ``n_p1``."""
    return (
        study.triplets.annotate(
            n_p0=Count("trials__vote", filter=Q(trials__vote__chose_p1=False)),
            n_p1=Count("trials__vote", filter=Q(trials__vote__chose_p1=True)),
        )
        .filter(Q(n_p0__gt=0) | Q(n_p1__gt=0))
        .select_related("patch__source", "p0", "p1")
        .order_by("pk")
    )


def study_votes(study: Study) -> QuerySet[Vote]:
    return (
        Vote.objects.filter(trial__triplet__study=study)
        .select_related("trial__session", "trial__triplet__p0", "trial__triplet__p1")
        .order_by("pk")
    )
