"""Researcher pages: a study's results report, on the page and as one downloadable HTML file.

Staff and researchers (``studies.access``) read the report of every study; anyone else who
is logged in gets a 403 page that says how to become a researcher.
"""

from django.http import HttpResponse
from django.shortcuts import get_object_or_404, render

from studies.access import researcher_required
from studies.models import Study


def study_report(study: Study):
    # Imported here: reports load matplotlib and torch, which rater-serving workers never need.
    from .report import study_report as build

    return build(study)


@researcher_required
def results(request, slug: str):
    study = get_object_or_404(Study, slug=slug)
    return render(
        request, "analytics/results.html", {"study": study, "report": study_report(study)}
    )


@researcher_required
def report_file(request, slug: str):
    """The same report as a self-contained HTML file (figures and styles inline)."""
    study = get_object_or_404(Study, slug=slug)
    response = HttpResponse(study_report(study).html(), content_type="text/html; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{study.slug}-report.html"'
    return response
