"""The rater page. Its data comes from the JSON API in rating.api."""

from django.conf import settings
from django.shortcuts import get_object_or_404, render

from studies.models import Study

# Query parameters the crowd markets append to the study URL (Prolific's and MTurk ExternalQuestion's documentation).
MARKET_PARAMS = (
    "PROLIFIC_PID",
    "STUDY_ID",
    "SESSION_ID",
    "assignmentId",
    "hitId",
    "workerId",
    "turkSubmitTo",
)
MTURK_PREVIEW = "ASSIGNMENT_ID_NOT_AVAILABLE"


def rate(request, slug: str):
    study = get_object_or_404(Study, slug=slug)
    market = {name: request.GET[name][:200] for name in MARKET_PARAMS if request.GET.get(name)}
    participant_id = (
        market.get("PROLIFIC_PID") or market.get("workerId") or request.GET.get("participant", "")
    )
    return render(
        request,
        "rating/rate.html",
        {
            "study": study,
            "api_base": "/api",
            "participant_id": participant_id[:200],
            "market": market,
            "preview": market.get("assignmentId") == MTURK_PREVIEW,
            "example": example_triplet(study),
            # Before a session exists (the MTurk preview) only promise breaks that surely
            # come: the regular trials alone outnumber break_every. The page corrects
            # it once it knows the session's real trials.
            "promise_breaks": 0 < study.break_every < study.trials_per_session,
            "preload_ahead": settings.TWOAFC_PRELOAD_TRIALS,
        },
    )


def example_triplet(study: Study) -> dict | None:
    """One real triplet for the instructions: the reference, its better and its worse version."""
    triplet = study.triplets.select_related("patch", "p0", "p1").first()
    if triplet is None:
        return None
    better, worse = sorted((triplet.p0, triplet.p1), key=lambda stimulus: -stimulus.bpp)
    return {
        "reference": triplet.patch.image.url,
        "better": better.image.url,
        "worse": worse.image.url,
    }
