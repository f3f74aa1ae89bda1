"""Snapshots: what the files hold, that they load like LPIPS reads BAPPS, and that they stay frozen."""

import csv
import hashlib
import io
import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command

from datasets import services, tasks
from datasets.models import Snapshot
from datasets.snapshot import VOTE_COLUMNS
from rating.models import Vote
from tests.datasets.conftest import load_like_lpips, vote_all
from twoafc.processes import child_env

pytestmark = pytest.mark.django_db


def stored(snapshot: Snapshot, path: str) -> bytes:
    with default_storage.open(snapshot.storage_prefix + path, "rb") as handle:
        return handle.read()


def test_the_command_builds_a_snapshot_that_loads_like_bapps(voted_study, tmp_path, capsys):
    call_command(
        "snapshot", voted_study.slug, "--out", str(tmp_path / "out"), "--license", "CC-BY-4.0"
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["snapshot"] == f"{voted_study.slug}-v1"
    # 3 raters x (2 practice + 10 regular) votes, all counted.
    counts = {"cast": 36, "practice": 6, "sentinel": 0, "repeat": 0, "regular": 30, "counted": 30,
              "left_out": 0}  # fmt: skip
    assert (result["votes"], result["triplets"], result["path"]) == (
        counts,
        18,
        str(tmp_path / "out"),
    )
    root = tmp_path / "out"
    loaded = [
        row
        for split in ("train", "val")
        for row in load_like_lpips(root / split / voted_study.slug)
    ]
    assert len(loaded) == 18 and {judge for *_, judge in loaded} == {1.0}
    # MANIFEST: sha256 of every other file, and its own sha256 is the content hash.
    manifest = (root / "MANIFEST").read_bytes()
    listed = dict(line.split("  ")[::-1] for line in manifest.decode().splitlines())
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} - {"MANIFEST"}
    assert set(listed) == on_disk and len(on_disk) + 1 == result["files"]
    assert all(hashlib.sha256((root / p).read_bytes()).hexdigest() == h for p, h in listed.items())
    snapshot = Snapshot.objects.get(name=result["snapshot"])
    assert snapshot.content_hash == hashlib.sha256(manifest).hexdigest() == result["content_hash"]
    assert snapshot.files.get(path="MANIFEST").size == len(manifest)


def test_votes_stimuli_clic_and_card(voted_study, tmp_path):
    snapshot = services.build_snapshot(services.freeze(voted_study, citation="Doe et al.").pk)
    votes_text = stored(snapshot, "votes.csv").decode()
    rows = list(csv.DictReader(io.StringIO(votes_text)))
    counts = snapshot.vote_counts
    assert list(rows[0]) == VOTE_COLUMNS and len(rows) == 30 == counts["cast"] - counts["practice"]
    assert "PROLIFIC" not in votes_text
    assert not any(str(session.token) in votes_text for session in voted_study.sessions.all())
    assert len({row["observer"] for row in rows}) == 3
    assert {(row["rater_flagged"], row["counted"]) for row in rows} == {("0", "1")}
    table = pq.read_table(io.BytesIO(stored(snapshot, "votes.parquet")))
    assert table.column_names == VOTE_COLUMNS and table.num_rows == 30
    assert table.column("observer").to_pylist() == [row["observer"] for row in rows]
    assert table.column("p0_bpp").to_pylist() == [float(row["p0_bpp"]) for row in rows]
    # stimuli.csv: each image's sha256 is that of its copy in the snapshot.
    images = list(csv.DictReader(io.StringIO(stored(snapshot, "stimuli.csv").decode())))
    assert {row["kind"] for row in images} == {"reference", "stimulus"}
    for row in images:
        assert hashlib.sha256(stored(snapshot, row["path"])).hexdigest() == row["sha256"]
    assert all(
        float(row["bpp"]) > 0 and row["codec"] for row in images if row["kind"] == "stimulus"
    )
    # clic.csv: one row per counted regular vote; every vote chose p1 (B), so T=1.
    clic = list(csv.reader(io.StringIO(stored(snapshot, "clic.csv").decode())))
    assert len(clic) == 30 and {row[3] for row in clic} == {"1"}
    assert all("/ref/" in o and "/p0/" in a and "/p1/" in b for o, a, b, _ in clic)
    card = stored(snapshot, "DATASET.md").decode()
    assert "Doe et al." in card and "Human ceiling" in card and "jpeg" in card
    assert "Triplets with counted votes: 18" in card and "License: not stated" in card
    for line in ("| cast | 36 |", "| practice | 6 |", "| regular | 30 |", "| counted | 30 |",
                 "| left out | 0 |"):  # fmt: skip
        assert line in card, line


def test_new_votes_never_change_an_old_snapshot(voted_study):
    first = services.build_snapshot(services.freeze(voted_study).pk)
    before = {f.path: stored(first, f.path) for f in first.files.all()}
    vote_all(voted_study, ("PROLIFIC-DDD",), chose_p1=False)
    second = services.build_snapshot(services.freeze(voted_study).pk)
    assert second.name.endswith("-v2") and first.vote_counts["regular"] == 30
    assert second.vote_counts["cast"] == Vote.objects.count() > 36
    first.refresh_from_db()
    assert (
        first.vote_counts["cast"] == 36
        and {f.path: stored(first, f.path) for f in first.files.all()} == before
    )
    # Rebuilding the old snapshot (say after a crash) still takes only its votes: same bytes.
    Snapshot.objects.filter(pk=first.pk).update(status=Snapshot.Status.FAILED)
    assert services.build_snapshot(first.pk).status == Snapshot.Status.FAILED  # not by itself
    assert first.requeue()
    rebuilt = services.build_snapshot(first.pk)
    assert rebuilt.content_hash == first.content_hash and rebuilt.vote_counts["counted"] == 30


def test_the_celery_task_builds_and_is_idempotent(
    voted_study, eager_celery, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        snapshot = services.freeze(voted_study, enqueue=tasks.enqueue_build)
    snapshot.refresh_from_db()
    assert (
        snapshot.status == Snapshot.Status.DONE
        and snapshot.done == snapshot.total == snapshot.files_count
    )
    finished = snapshot.finished_at
    tasks.build_snapshot.delay(snapshot.pk)  # a redelivered task leaves a built snapshot alone
    snapshot.refresh_from_db()
    assert snapshot.finished_at == finished


def test_a_failed_build_records_its_error(
    voted_study, eager_celery, django_capture_on_commit_callbacks
):
    patch = voted_study.sources.first().patches.first()
    default_storage.delete(patch.image.name)  # the build cannot read a reference image
    with django_capture_on_commit_callbacks(execute=True):
        snapshot = services.freeze(voted_study, enqueue=tasks.enqueue_build)
    snapshot.refresh_from_db()
    assert (
        snapshot.status == Snapshot.Status.FAILED
        and patch.image.name.split("/")[-1] in snapshot.error
    )


def test_the_command_names_bad_input(voted_study, tmp_path):
    with pytest.raises(CommandError, match="^no study with slug 'nope'$"):
        call_command("snapshot", "nope")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("x")
    with pytest.raises(CommandError, match="is built, but .* not empty"):
        call_command("snapshot", voted_study.slug, "--out", str(tmp_path / "full"))


def test_researchers_freeze_from_their_page_through_celery(
    client, voted_study, django_user_model, eager_celery, django_capture_on_commit_callbacks
):
    from django.contrib.auth.models import Permission

    researcher = django_user_model.objects.create_user("ada", password="pw")
    client.force_login(researcher)
    page = f"/studies/{voted_study.slug}/download/"
    refused = client.get(page)  # not a researcher yet: a page that says how to become one
    assert refused.status_code == 403 and "python manage.py researcher ada" in refused.text
    researcher.user_permissions.add(Permission.objects.get(codename="add_snapshot"))
    assert "Freeze snapshot" in client.get(page).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/studies/{voted_study.slug}/freeze/", {"license": "CC0"})
    snapshot = Snapshot.objects.get()
    assert response["Location"] == snapshot.get_absolute_url()
    assert snapshot.created_by == researcher and snapshot.license == "CC0"
    text = client.get(snapshot.get_absolute_url()).content.decode()
    assert snapshot.content_hash in text and "DATASET.md" in text


def test_the_admin_freezes_a_snapshot(
    admin_client, voted_study, eager_celery, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/datasets/snapshot/add/",
            {"study": voted_study.pk, "license": "CC-BY-4.0", "citation": "", "access": "public"},
        )
    assert response.status_code == 302
    snapshot = Snapshot.objects.get()
    assert (snapshot.name, snapshot.access, snapshot.status) == (
        f"{voted_study.slug}-v1",
        "public",
        "done",
    )
    listing = admin_client.get("/admin/datasets/snapshot/").content.decode()
    assert f"Ready · {snapshot.files_count}/{snapshot.files_count}" in listing
    snapshot.delete()
    assert not default_storage.exists(snapshot.storage_prefix + "MANIFEST")


def test_web_and_worker_processes_do_not_load_torch(tmp_path):
    """torch adds ~600 MB to every gunicorn and Celery process: nothing a web or worker
    process imports at start-up (apps, admin, URLconf, tasks) may pull it in; fits, reports
    and learned codecs import it when they run."""
    code = ("import sys, django; django.setup(); "
            "import twoafc.urls, twoafc.celery, datasets.tasks, studies.tasks, analytics.tasks; "
            "print('torch' in sys.modules)")  # fmt: skip
    env = child_env(TWOAFC_DATA_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_the_build_reads_the_same_number_of_queries_however_many_raters(ready_study, tmp_path):
    """Votes and sessions are read in bulk: no query per rater or per vote."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from datasets.snapshot import DirSink, Frozen, write_snapshot

    def queries(folder: str) -> int:
        frozen = Frozen(study=ready_study, name="q", cutoff=services.last_vote_id(ready_study),
                        salt="salt", created_at=timezone.now())  # fmt: skip
        with CaptureQueriesContext(connection) as captured:
            write_snapshot(frozen, DirSink(tmp_path / folder))
        return len(captured.captured_queries)

    vote_all(ready_study, ("PROLIFIC-AAA",))
    one = queries("one")
    vote_all(ready_study, ("PROLIFIC-BBB", "PROLIFIC-CCC"))
    assert queries("three") == one
