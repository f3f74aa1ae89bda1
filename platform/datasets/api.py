"""Datasets JSON API: list studies and snapshots, freeze one, and download, with a Bearer token.

    curl -H "Authorization: Bearer $TOKEN" https://HOST/api/datasets/snapshots
    curl -H "Authorization: Bearer $TOKEN" -OJ https://HOST/api/datasets/snapshots/NAME/archive.tar

A snapshot the token's user may not read answers 404, like one that does not exist.
"""

from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404
from ninja import Router, Schema, Status
from ninja.security import HttpBearer

from jobs.services import QUEUE_DOWN
from studies.models import Study

from . import services, tasks
from .downloads import Reader, archive_response, file_response, readable_snapshot
from .models import Snapshot


class TokenAuth(HttpBearer):
    def authenticate(self, request, token: str):
        found = services.user_for_token(token)
        if found is None:
            return None
        request.api_user, request.api_token = found
        return found[0]


router = Router(tags=["datasets"], auth=TokenAuth())


class StudyOut(Schema):
    slug: str
    name: str
    status: str
    snapshots: list[str]


class FreezeIn(Schema):
    license: str = ""
    citation: str = ""


def _readable(request, name: str) -> tuple[Snapshot, Reader]:
    return readable_snapshot(name, request.api_user, request.api_token)


@router.get("/studies", response=list[StudyOut])
def list_studies(request):
    readable = services.readable_snapshots(request.api_user)
    return [
        {"slug": study.slug, "name": study.name, "status": study.status,
         "snapshots": list(readable.filter(study=study).values_list("name", flat=True))}
        for study in services.readable_studies(request.api_user)
    ]  # fmt: skip


class Refused(Schema):
    detail: str
    reason: str


@router.post("/studies/{slug}/snapshots", response={202: dict, 409: Refused, 503: Refused})
def freeze(request, slug: str, body: FreezeIn, response: HttpResponse):
    """Freeze the study's votes so far into its next snapshot; its build runs in the background
    (202). 409 when none of the votes counts. If the task queue is unreachable the snapshot is
    still recorded, queued, and built once the queue is back (503, reason "queue-unavailable")."""
    if not services.can_freeze(request.api_user):
        raise Http404
    study = get_object_or_404(Study, slug=slug)
    try:
        snapshot = services.freeze(
            study, user=request.api_user, license=body.license, citation=body.citation,
            enqueue=tasks.enqueue_build,
        )  # fmt: skip
    except services.FreezeRefused as refused:
        return Status(refused.status, {"detail": str(refused), "reason": refused.reason})
    if snapshot.enqueued is False:
        response["Retry-After"] = "60"
        return Status(503, {
            "detail": QUEUE_DOWN.format(what=f"Snapshot {snapshot.name}"),
            "reason": "queue-unavailable",
        })  # fmt: skip
    return Status(202, services.describe(snapshot))


@router.get("/snapshots", response=list[dict])
def list_snapshots(request, study: str = ""):
    snapshots = services.readable_snapshots(request.api_user)
    if study:
        snapshots = snapshots.filter(study__slug=study)
    return [services.describe(snapshot) for snapshot in snapshots]


@router.get("/snapshots/{name}", response=dict)
def snapshot_detail(request, name: str):
    snapshot, _ = _readable(request, name)
    return services.describe(snapshot, with_files=True)


@router.get("/snapshots/{name}/archive.tar")
def download_archive(request, name: str):
    snapshot, reader = _readable(request, name)
    if not snapshot.is_ready:
        raise Http404
    return archive_response(request, snapshot, reader)


@router.get("/snapshots/{name}/files/{path:path}")
def download_file(request, name: str, path: str):
    snapshot, reader = _readable(request, name)
    record = get_object_or_404(snapshot.files, path=path)
    record.snapshot = snapshot
    return file_response(request, record, reader)
