"""Fitting as a job: admin start → Celery task (eager, real code path) → progress, report,
lpips-format weights and model card; the command line's bars; the warm feature cache."""

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from django.core.management import call_command

from analytics import tasks
from analytics.dpl import load_dpl, to_tensor
from analytics.lpips_format import load_lpips_weights
from analytics.models import FitJob, FitReport
from rating.models import RaterSession, Trial, Vote
from tests.conftest import generate, make_study

pytestmark = pytest.mark.django_db


def cast_votes(study, raters=3, seed=0):
    """Every rater answers every triplet once; the choice follows a noisy pixel distance."""
    rng = np.random.default_rng(seed)
    for r in range(raters):
        session = RaterSession.objects.create(study=study, rater_hash=f"rater-{seed}-{r}")
        for index, triplet in enumerate(study.triplets.order_by("pk")):
            trial = Trial.objects.create(
                session=session, index=index, triplet=triplet, p1_on_left=bool(index % 2)
            )
            chose_p1 = bool(rng.random() < 0.5)
            Vote.objects.create(
                trial=trial, client_id=uuid.uuid4(), chose_p1=chose_p1, rt_ms=900.0,
                side="left" if chose_p1 == trial.p1_on_left else "right",
            )  # fmt: skip


@pytest.fixture
def voted_study(django_capture_on_commit_callbacks):
    study = make_study(patches_per_image=2)  # 2 photos × 2 patches × 3 pairs = 12 triplets
    generate(study, django_capture_on_commit_callbacks)
    cast_votes(study)
    return study


def start_in_admin(admin_client, study, **fields):
    data = {"study": study.pk, "backbone": "stlpips-alex", "loss": "rank", "epochs": 2, "seed": 0}
    return admin_client.post("/admin/analytics/fitjob/add/", {**data, **fields})


def test_admin_start_runs_the_task_and_links_the_report(
    admin_client, voted_study, eager_celery, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = start_in_admin(admin_client, voted_study)
    assert response.status_code == 302 and len(callbacks) == 1
    job = FitJob.objects.get()
    assert job.status == FitJob.Status.DONE, job.error
    assert job.progress == "Done" and job.stage == "scoring" and job.done == job.total == 1
    report = job.report
    assert report.study == voted_study and report.result["backbone"] == "stlpips-alex"
    assert report.result["triplets"] + report.result["train_triplets"] == 12
    assert report.result["features_computed"] == 12  # 4 patches × 3 conditions

    card = json.loads(Path(report.result["model_card"]).read_text())
    assert Path(report.weights_path).with_suffix(".json") == Path(report.result["model_card"])
    assert card["backbone"] == "stlpips-alex" and card["trunk"].startswith("stlpips-alex-")
    assert card["data"]["study"] == voted_study.slug and card["data"]["votes"] == 36
    assert card["data"]["snapshot"] is None
    assert card["votes_used"]["train"] + card["votes_used"]["test"] == 36
    assert card["raters"] == {"raters": "unflagged", "counted": 3, "left_out": 0}
    low, high = card["test_2afc"]["ci95"]
    assert 0 <= low <= card["test_2afc"]["dpl"] <= high <= 1
    assert card["split"]["by"] == "source image"
    assert card["split"]["train_sources"] == card["split"]["test_sources"] == 1

    page = admin_client.get("/admin/analytics/fitjob/").content.decode()
    assert "Done" in page and f"{report.result['afc']['dpl']:.3f}" in page
    assert admin_client.get(f"/admin/analytics/fitjob/{job.pk}/change/").status_code == 200

    # The task is idempotent: running a finished job again fits nothing.
    tasks.fit_dpl.delay(job.pk)
    assert FitReport.objects.count() == 1

    # A second fit of the same study reads every φ from the cache.
    with django_capture_on_commit_callbacks(execute=True):
        start_in_admin(admin_client, voted_study, loss="logistic")
    second = FitJob.objects.exclude(pk=job.pk).get()
    assert second.status == FitJob.Status.DONE, second.error
    assert second.report.result["features_computed"] == 0
    assert second.report.result["features_cached"] == 12


def test_exported_weights_give_our_distances_through_lpips(
    admin_client, voted_study, eager_celery, django_capture_on_commit_callbacks
):
    """The .pth loads with lpips.LPIPS(model_path=...) and, on the same trunk, its distances
    equal ours to 1e-5."""
    import lpips

    with django_capture_on_commit_callbacks(execute=True):
        start_in_admin(admin_client, voted_study)
    path = FitJob.objects.get().report.weights_path
    theirs = lpips.LPIPS(
        net="alex", pretrained=True, pnet_rand=True, model_path=path, verbose=False
    )
    ours = load_dpl("stlpips-alex", weights=path)
    theirs.net = ours.net  # the fitted heads belong to the stlpips trunk
    theirs.eval()
    w = torch.cat([getattr(theirs, f"lin{i}").model[1].weight.reshape(-1) for i in range(5)])
    np.testing.assert_array_equal(w.detach().numpy(), load_lpips_weights(path))
    stimulus = voted_study.triplets.first().p0
    from studies.services import load_pixels

    x = to_tensor(load_pixels(stimulus.patch.image))
    y = to_tensor(load_pixels(stimulus.image))
    with torch.no_grad():
        torch.testing.assert_close(ours(x, y), theirs(x, y).reshape(-1), atol=1e-5, rtol=1e-5)


def test_admin_refuses_a_study_without_votes(admin_client, eager_celery):
    study = make_study()
    response = start_in_admin(admin_client, study)
    assert response.status_code == 200 and "has no votes yet" in response.content.decode()
    assert not FitJob.objects.exists()


def test_a_failing_fit_marks_the_job_failed_with_its_reason(
    admin_client,
    voted_study,
    eager_celery,
    django_capture_on_commit_callbacks,
    tmp_path,
    monkeypatch,
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    with django_capture_on_commit_callbacks(execute=True):
        start_in_admin(admin_client, voted_study, backbone="alex")
    job = FitJob.objects.get()
    assert job.status == FitJob.Status.FAILED and "alexnet-owt-7be5be79.pth" in job.error
    assert job.report is None and not FitReport.objects.exists()
    assert (
        "alexnet-owt"
        in admin_client.get(f"/admin/analytics/fitjob/{job.pk}/change/").content.decode()
    )


def test_a_job_another_worker_is_running_is_left_to_it(voted_study):
    """acks_late redelivers a long fit's task: the second delivery must not fit again."""
    from django.utils import timezone

    job = FitJob.objects.create(
        study=voted_study, status=FitJob.Status.RUNNING, claimed_by="elsewhere:1",
        started_at=timezone.now(), heartbeat_at=timezone.now(),
    )  # fmt: skip
    tasks.fit_dpl(job.pk)
    job.refresh_from_db()
    assert (job.status, job.claimed_by) == (FitJob.Status.RUNNING, "elsewhere:1")
    assert not FitReport.objects.exists()


def test_command_line_shows_bars_on_stderr_and_json_on_stdout(voted_study, capsys):
    call_command("fit_dpl", voted_study.slug, "--epochs", "3", "--json", "--snapshot", "snap-7")
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert "features" in captured.err and "fitting" in captured.err and "3/3" in captured.err
    card = json.loads(Path(result["model_card"]).read_text())
    assert card["data"]["snapshot"] == "snap-7" and card["epochs"] == 3
