"""Snapshots: freeze a study's votes, build the files (a Celery task), unpack, and who may read.

``freeze`` records ``<study>-v<N>`` with the last vote id so far and hands the
build to the workers once committed. A snapshot is a job (``jobs``): building claims
it, so a done snapshot is left alone and one another worker is building is left to it;
an interrupted build (its worker died) is taken over after the stale time, and a
failed one is built again after ``requeue()``, from the same cutoff: the same votes,
and the same bytes unless an admin changed which raters count in between.
``export_bapps`` writes the same files straight into a local folder.
"""

import hmac
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Max, Q, QuerySet
from django.utils import timezone

from jobs import services as jobs
from rating.models import Vote
from rating.selectors import rater_set, vote_counts
from studies.access import is_researcher
from studies.models import Study

from .models import ApiToken, DownloadLog, Snapshot, SnapshotFile, hash_token, new_salt
from .snapshot import VOTE_COLUMNS, DirSink, Frozen, StorageSink, WrittenFile, copy_out
from .snapshot import write_snapshot as write_files

__all__ = [
    "VOTE_COLUMNS", "FreezeRefused", "build_snapshot", "check_freezable", "export_bapps",
    "freeze", "write_snapshot",
]  # fmt: skip


class FreezeRefused(Exception):
    """A snapshot that would hold no counted vote: nothing is recorded.

    ``reason`` is the stable key the API answers with (409)."""

    reason = "no-counted-votes"
    status = 409


def last_vote_id(study: Study) -> int:
    return Vote.objects.filter(trial__session__study=study).aggregate(m=Max("pk"))["m"] or 0


def export_bapps(study: Study, out_dir: str | Path) -> dict:
    """Write the dataset files of a study's votes so far into ``out_dir`` (new or empty).

    Nothing is recorded: this is a snapshot's content without the snapshot, plus
    ``export.json`` with the counts and which raters were counted. The files are
    written to a temporary folder and moved, so a failure leaves nothing.
    """
    frozen = Frozen(study=study, name=f"{study.slug}-export", cutoff=last_vote_id(study),
                    salt=new_salt(), created_at=timezone.now())  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="twoafc-export-") as tmp:
        info = write_files(frozen, DirSink(Path(tmp)))
        copy_out(info["files"], lambda path: open(Path(tmp) / path, "rb"), Path(out_dir))
    summary = {key: value for key, value in info.items() if key != "files"}
    # Which raters counted: "raters" ("all" or "unflagged"), "counted" and "left_out" raters.
    summary.update(rater_set(study))
    (Path(out_dir) / "export.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def can_freeze(user) -> bool:
    """Staff and researchers (``studies.access``) freeze snapshots of any study."""
    return is_researcher(user)


def check_freezable(study: Study, counts: dict | None = None) -> dict:
    """The study's vote counts now; raises FreezeRefused when none of its votes counts.

    A snapshot without a counted vote would have no triplet, no judge and an empty
    ``clic.csv``: refusing it says why instead of building an empty dataset."""
    if counts is None:
        counts = vote_counts(study)
    if counts["counted"]:
        return counts
    if not counts["regular"]:
        detail = (
            f"{study.name} has no votes yet" if not counts["cast"]
            else f"{study.name} has no votes on regular trials yet ({counts['cast']} cast, on "
            "practice and quality-check trials only)"
        )  # fmt: skip
    else:
        detail = (
            f"none of the {counts['regular']} regular votes of {study.name} counts: quality "
            "control leaves out every rater who cast them (see Rater sessions in the admin)"
        )
    raise FreezeRefused(f"Nothing to freeze: {detail}.")


def freeze(
    study: Study,
    *,
    user=None,
    license: str = "",
    citation: str = "",
    enqueue: Callable[[int], None] | None = None,
) -> Snapshot:
    """Record the next snapshot of ``study`` and enqueue its build after the commit.

    Raises FreezeRefused, recording nothing, when no vote up to now counts. The snapshot's
    vote counts are those at its cutoff; the build records them again with the raters
    that count then (the same, unless an admin changes a rater in between).

    With ``enqueue``, ``snapshot.enqueued`` is False afterwards if the broker could not be
    reached: the snapshot then stays queued until the sweeper sends it.
    """
    for _attempt in range(5):
        try:
            with transaction.atomic():
                Study.objects.select_for_update().filter(pk=study.pk).first()
                cutoff = last_vote_id(study)
                counts = check_freezable(study, vote_counts(study, up_to=cutoff))
                number = (study.snapshots.aggregate(m=Max("number"))["m"] or 0) + 1
                snapshot = Snapshot.objects.create(
                    study=study, number=number, name=f"{study.slug}-v{number}",
                    vote_cutoff=cutoff, vote_counts=counts, license=license,
                    citation=citation,
                    created_by=user if user is not None and user.is_authenticated else None,
                )  # fmt: skip
                if enqueue is not None:
                    jobs.enqueue_on_commit(snapshot, enqueue)
            return snapshot
        except IntegrityError:
            continue  # a concurrent freeze took the number; take the next
    raise IntegrityError(f"could not number a new snapshot of {study.slug}")


def build_snapshot(snapshot_id: int) -> Snapshot:
    """Build a snapshot in this process (the ``snapshot`` command): claim it, write its files,
    mark it done. One that is done, or that another worker is building, is left alone; an
    error fails the snapshot (message and traceback) and is raised."""
    snapshot = Snapshot.objects.select_related("study").get(pk=snapshot_id)
    jobs.run(snapshot, write_snapshot)
    snapshot.refresh_from_db()
    return snapshot


def write_snapshot(snapshot: Snapshot) -> None:
    """The build of a claimed snapshot: write its files into storage, then record them and
    mark the snapshot done in one transaction."""
    frozen = Frozen(study=snapshot.study, name=snapshot.name, cutoff=snapshot.vote_cutoff,
                    salt=snapshot.salt, created_at=snapshot.created_at,
                    license=snapshot.license, citation=snapshot.citation)  # fmt: skip
    snapshot.set_progress(0, 0, stage="writing files")

    def report(done: int, total: int) -> None:
        snapshot.set_progress(done, total)

    info = write_files(frozen, StorageSink(snapshot.storage_prefix), report)
    files: list[WrittenFile] = info["files"]
    with transaction.atomic():
        snapshot.files.all().delete()
        SnapshotFile.objects.bulk_create(
            [SnapshotFile(snapshot=snapshot, path=f.path, size=f.size, sha256=f.sha256)
             for f in files],
            batch_size=2000,
        )  # fmt: skip
        if not snapshot.finish(
            content_hash=info["content_hash"], files_count=len(files),
            bytes_total=sum(f.size for f in files), vote_counts=info["votes"],
            triplets=info["triplets"], done=len(files), total=len(files), stage="",
        ):  # fmt: skip
            # Taken over meanwhile: the file rows are the other build's to write.
            transaction.set_rollback(True)


def open_file(snapshot: Snapshot, path: str):
    return default_storage.open(snapshot.storage_prefix + path, "rb")


def unpack(snapshot: Snapshot, out_dir: str | Path) -> None:
    """Copy a built snapshot's files from storage into the new folder ``out_dir``."""
    files = [WrittenFile(f.path, f.size, f.sha256) for f in snapshot.files.all()]
    copy_out(files, lambda path: open_file(snapshot, path), Path(out_dir))


# --- who may read ---------------------------------------------------------------------


def user_for_token(raw: str) -> tuple[object, ApiToken] | None:
    """The active user behind a raw API token, and the token row; None if unknown or revoked."""
    token = (
        ApiToken.objects.select_related("user")
        .filter(digest=hash_token(raw), revoked=False, user__is_active=True)
        .first()
    )
    if token is None:
        return None
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token.user, token


def readable_snapshots(user) -> QuerySet[Snapshot]:
    """Snapshots ``user`` may list: all for staff, else public ones and their own."""
    snapshots = Snapshot.objects.select_related("study")
    if user is not None and user.is_authenticated and user.is_staff:
        return snapshots
    visible = Q(access=Snapshot.Access.PUBLIC)
    if user is not None and user.is_authenticated:
        visible |= Q(created_by=user)
    return snapshots.filter(visible)


def readable_studies(user) -> QuerySet[Study]:
    """Studies ``user`` may see: all for staff and researchers who may freeze, else those with a
    snapshot they can read."""
    if user is not None and user.is_authenticated and can_freeze(user):
        return Study.objects.all()
    return Study.objects.filter(snapshots__in=readable_snapshots(user)).distinct()


def access_via(snapshot: Snapshot, user, key: str = "", token: ApiToken | None = None) -> str:
    """How ``user`` (or a link ``key``) may read ``snapshot``: a DownloadLog.Via value.

    Raises PermissionDenied when it may not; callers answer 404 then, so a wrong link
    token and a private snapshot look the same as one that does not exist.
    """
    authenticated = user is not None and user.is_authenticated
    if authenticated and (user.is_staff or snapshot.created_by_id == user.pk):
        return DownloadLog.Via.TOKEN if token else DownloadLog.Via.USER
    if snapshot.access == Snapshot.Access.PUBLIC:
        return DownloadLog.Via.PUBLIC
    if (
        snapshot.access == Snapshot.Access.LINK
        and key
        and hmac.compare_digest(key.encode(), snapshot.link_token.encode())
    ):
        return DownloadLog.Via.LINK
    raise PermissionDenied


def describe(snapshot: Snapshot, *, with_files: bool = False) -> dict:
    """A snapshot as JSON: its state, counts, hash and (optionally) every file's size and sha256."""
    data = {
        "name": snapshot.name, "study": snapshot.study.slug, "number": snapshot.number,
        "status": snapshot.status, "progress": snapshot.progress, "error": snapshot.error,
        "access": snapshot.access, "created_at": snapshot.created_at.isoformat(),
        "content_hash": snapshot.content_hash, "files": snapshot.files_count,
        "bytes": snapshot.bytes_total, "votes": snapshot.vote_counts,
        "triplets": snapshot.triplets,
        "license": snapshot.license, "citation": snapshot.citation,
    }  # fmt: skip
    if with_files:
        data["file_list"] = [
            {"path": path, "size": size, "sha256": sha}
            for path, size, sha in snapshot.files.values_list("path", "size", "sha256")
        ]
    return data
