"""Every job kind's admin shows its progress, its error with the traceback folded, its times."""

import pytest
from django.utils import timezone

from analytics.models import FitJob
from datasets.models import Snapshot
from studies.models import GenerationJob, Study

pytestmark = pytest.mark.django_db


def failed_with_traceback(job) -> None:
    def build():
        raise KeyError("ref_3.png")

    assert job.claim()
    try:
        build()
    except KeyError as error:
        assert job.fail(error)


@pytest.mark.parametrize(
    "model, path",
    [
        (GenerationJob, "studies/generationjob"),
        (FitJob, "analytics/fitjob"),
        (Snapshot, "datasets/snapshot"),
    ],
)
def test_the_admin_shows_progress_error_traceback_and_times(admin_client, model, path):
    study = Study.objects.create(name="s")
    extra = {"number": 1, "name": "s-v1"} if model is Snapshot else {}
    job = model.objects.create(study=study, **extra)
    failed_with_traceback(job)
    running = model.objects.create(study=study, **({"number": 2, "name": "s-v2"} if extra else {}))
    assert running.claim()
    running.set_progress(120, 400, stage="features" if model is FitJob else "encoding")

    listing = admin_client.get(f"/admin/{path}/").content.decode()
    assert "120/400" in listing and "KeyError: &#x27;ref_3.png&#x27;" in listing
    page = admin_client.get(f"/admin/{path}/{job.pk}/change/").content.decode()
    assert "<details>" in page and "in build" in page  # the traceback, folded
    assert f"started {timezone.localtime(job.started_at):%Y-%m-%d %H:%M:%S}" in page
