from django.contrib.admin.views.decorators import staff_member_required
from django.shortcuts import get_object_or_404, render

from studies.models import Study
from studies.services import study_counts


@staff_member_required
def results(request, slug: str):
    study = get_object_or_404(Study, slug=slug)
    report = study.fit_reports.first()
    rows = []
    if report:
        afc = report.result["afc"]
        rows = [
            {"metric": name, "score": score, "reason": report.result["unavailable"].get(name, "")}
            for name, score in afc.items()
        ]
    return render(
        request,
        "analytics/results.html",
        {"study": study, "report": report, "rows": rows, "counts": study_counts(study)},
    )
