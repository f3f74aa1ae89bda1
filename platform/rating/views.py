"""The rater page. All of its data comes from the JSON API in rating.api."""

from django.shortcuts import get_object_or_404, render

from studies.models import Study

# Query parameters under which crowd markets pass the participant's id.
PARTICIPANT_PARAMS = ("PROLIFIC_PID", "workerId", "participant")


def rate(request, slug: str):
    study = get_object_or_404(Study, slug=slug)
    participant_id = next(
        (request.GET[name] for name in PARTICIPANT_PARAMS if request.GET.get(name)), ""
    )
    return render(
        request,
        "rating/rate.html",
        {"study": study, "api_base": "/api", "participant_id": participant_id[:200]},
    )
