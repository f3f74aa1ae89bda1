"""Researcher pages: a study's snapshots with a Freeze button, a snapshot's files and downloads.

Readers are the logged-in user, or the owner of an ``Authorization: Bearer`` API
token; a link-shared snapshot also opens with ``?key=<link token>``. Whatever a
reader may not see answers 404, as if it did not exist.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from jobs.services import QUEUE_DOWN
from rating.selectors import count_rows, vote_counts
from studies.access import is_researcher, researcher_required
from studies.models import Study

from . import services, tasks
from .downloads import Reader, archive_response, file_response, readable_snapshot
from .models import Snapshot


def reader_of(request) -> tuple[object, object]:
    """The user and API token behind a request: a Bearer token, else the session's user."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        found = services.user_for_token(header.removeprefix("Bearer ").strip())
        if found is None:
            raise Http404
        return found
    return request.user, None


def readable(request, name: str) -> tuple[Snapshot, Reader]:
    user, token = reader_of(request)
    return readable_snapshot(name, user, token, request.GET.get("key", ""))


def index(request):
    user, _ = reader_of(request)
    return render(
        request,
        "datasets/index.html",
        {"snapshots": services.readable_snapshots(user)[:200],
         "count_heads": count_rows({}, main=True)},
    )  # fmt: skip


@login_required
def studies(request):
    """The studies a user may see, with their vote counts now and where to go next."""
    rows = [
        {"study": study, "counts": count_rows(vote_counts(study), main=True),
         "snapshots": services.readable_snapshots(request.user).filter(study=study).count()}
        for study in services.readable_studies(request.user).order_by("name")[:200]
    ]  # fmt: skip
    return render(
        request,
        "datasets/studies.html",
        {"rows": rows, "researcher": is_researcher(request.user),
         "count_heads": count_rows({}, main=True)},
    )  # fmt: skip


@researcher_required
def download_page(request, slug: str):
    """A study's snapshots with their counts, the study's counts now, and the Freeze button."""
    study = get_object_or_404(Study, slug=slug)
    counts = vote_counts(study)
    try:
        services.check_freezable(study, counts)
        refusal = ""
    except services.FreezeRefused as refused:
        refusal = str(refused)
    # Another researcher's private snapshots are theirs: counted, not listed.
    snapshots = list(services.readable_snapshots(request.user).filter(study=study))
    return render(
        request,
        "datasets/download.html",
        {"study": study, "snapshots": snapshots, "access": Snapshot.Access.choices,
         "hidden": study.snapshots.count() - len(snapshots),
         "counts": count_rows(counts), "count_heads": count_rows({}, main=True),
         "refusal": refusal},
    )  # fmt: skip


@researcher_required
@require_POST
def freeze_view(request, slug: str):
    study = get_object_or_404(Study, slug=slug)
    try:
        snapshot = services.freeze(
            study,
            user=request.user,
            license=request.POST.get("license", "").strip()[:200],
            citation=request.POST.get("citation", "").strip(),
            enqueue=tasks.enqueue_build,
        )
    except services.FreezeRefused as refused:
        messages.error(request, str(refused))
        return redirect("datasets:download", slug=study.slug)
    if snapshot.enqueued is False:
        messages.warning(request, QUEUE_DOWN.format(what=f"Snapshot {snapshot.name}"))
    else:
        messages.success(request, f"Freezing {snapshot.name}: the build runs in the background.")
    return redirect(snapshot)


def snapshot_page(request, name: str):
    snapshot, reader = readable(request, name)
    # Changing access is a form post: a logged-in owner or staff (a Bearer token has no CSRF).
    manage = reader.via == "user"
    if request.method == "POST":
        if not manage:
            raise Http404
        access = request.POST.get("access", "")
        if access not in Snapshot.Access.values:
            return HttpResponseBadRequest(
                f"access must be one of {', '.join(Snapshot.Access.values)}"
            )
        Snapshot.objects.filter(pk=snapshot.pk).update(access=access)
        return redirect(snapshot)
    return render(request, "datasets/snapshot.html", {**_page(snapshot, request), "manage": manage})


def _page(snapshot: Snapshot, request) -> dict:
    key = request.GET.get("key", "")
    return {
        "snapshot": snapshot,
        "files": snapshot.files.all()[:500] if snapshot.is_ready else [],
        "query": f"?key={key}" if key else "",
        "access": Snapshot.Access.choices,
        "researcher": is_researcher(request.user),
    }


def files_json(request, name: str):
    snapshot, _ = readable(request, name)
    return JsonResponse(services.describe(snapshot, with_files=True))


def archive(request, name: str):
    snapshot, reader = readable(request, name)
    if not snapshot.is_ready:
        raise Http404
    return archive_response(request, snapshot, reader)


def single_file(request, name: str, path: str):
    snapshot, reader = readable(request, name)
    record = get_object_or_404(snapshot.files, path=path)
    record.snapshot = snapshot
    return file_response(request, record, reader)
