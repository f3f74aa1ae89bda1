"""The job life cycle every job kind shares: claim, progress, finish, fail, release, requeue,
the stale rule, the retry policy, the heartbeat thread and the log lines (here on snapshots,
the smallest job kind to create)."""

import errno
import logging
import threading
import time
from datetime import timedelta

import pytest
from django.db import OperationalError, connections
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError
from PIL import UnidentifiedImageError

from datasets.models import Snapshot
from jobs import policy
from jobs import services as jobs
from jobs.heartbeat import Heartbeat
from jobs.models import ClaimLost, worker_name
from studies.models import Study

pytestmark = pytest.mark.django_db


def new_job(**fields) -> Snapshot:
    study = Study.objects.create(name=f"study {Study.objects.count() + 1}")
    return Snapshot.objects.create(study=study, number=1, name=f"{study.slug}-v1", **fields)


def fresh(job: Snapshot) -> Snapshot:
    """Another process's view of the same row (no claim of its own)."""
    return Snapshot.objects.get(pk=job.pk)


def age(job: Snapshot, seconds: float, field: str = "heartbeat_at") -> None:
    Snapshot.objects.filter(pk=job.pk).update(
        **{field: timezone.now() - timedelta(seconds=seconds)}
    )


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "twoafc.jobs"]


def test_claim_takes_a_queued_job_once_and_says_so(caplog):
    caplog.set_level(logging.INFO, logger="twoafc.jobs")
    job = new_job()
    assert job.claim()
    assert (job.status, job.attempts, job.claimed_by) == ("running", 1, worker_name())
    assert job.heartbeat_at is not None and job.started_at is not None
    assert not fresh(job).claim(worker="other-host:7")  # a redelivered message does nothing
    assert messages(caplog) == [
        f"snapshot {job.pk} claimed by {worker_name()} (attempt 1)",
        f"snapshot {job.pk} not claimed: it is running on {worker_name()}",
    ]


def test_done_and_failed_jobs_are_never_claimed_a_failed_one_only_after_requeue():
    done = new_job()
    assert done.claim() and done.finish(triplets=7)
    assert fresh(done).triplets == 7 and not fresh(done).claim()
    assert not fresh(done).requeue()  # a done job stays done

    failed = new_job()
    assert failed.claim() and failed.fail("ValueError: no")
    age(failed, 3600)
    assert not fresh(failed).claim()
    again = fresh(failed)
    assert again.requeue()
    assert (again.status, again.attempts, again.error) == ("queued", 0, "")
    assert again.claim() and again.attempts == 1


def test_a_running_job_whose_heartbeat_is_stale_is_taken_over(settings):
    settings.TWOAFC_JOB_STALE_S = 120
    job = new_job()
    assert job.claim(worker="dead-host:1")
    age(job, 60)
    assert not fresh(job).is_stale and not fresh(job).claim(worker="b:2")
    age(job, 121)
    assert fresh(job).is_stale
    taker = fresh(job)
    assert taker.claim(worker="b:2") and taker.attempts == 2
    # The first holder, if it was only slow, can no longer change anything.
    with pytest.raises(ClaimLost):
        job.set_progress(5, 10)
    assert not job.finish() and not job.fail("too late") and not job.beat()
    assert taker.set_progress(3, 10, stage="writing") and taker.finish()
    row = fresh(job)
    assert (row.status, row.done, row.claimed_by, row.error) == ("done", 3, "b:2", "")


def test_a_queued_job_not_taken_within_the_stale_time_is_stale(settings):
    settings.TWOAFC_JOB_STALE_S = 120
    job = new_job()
    assert not job.is_stale
    age(job, 121, "queued_at")
    assert fresh(job).is_stale


def test_fail_keeps_a_one_line_message_and_the_traceback_and_logs_them(caplog):
    def read_votes():
        raise ValueError("vote 12 has\nno trial")

    job = new_job()
    assert job.claim()
    try:
        read_votes()
    except ValueError as error:
        assert job.fail(error)
    row = fresh(job)
    assert (row.status, row.error) == ("failed", "ValueError: vote 12 has no trial")
    assert row.traceback.startswith("Traceback") and "in read_votes" in row.traceback
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert record.getMessage() == f"snapshot {job.pk} failed: ValueError: vote 12 has no trial"
    assert record.exc_info and record.exc_info[0] is ValueError


@pytest.mark.parametrize(
    "error, transient",
    [
        (OperationalError("connection to server was lost"), True),
        (BrokerError("Error 111 connecting to 127.0.0.1:6399. Connection refused."), True),
        (ConnectionResetError(errno.ECONNRESET, "reset"), True),
        (TimeoutError("timed out"), True),
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (FileNotFoundError(errno.ENOENT, "No such file", "ref_1.png"), False),
        (PermissionError(errno.EACCES, "Permission denied"), False),
        (IsADirectoryError(errno.EISDIR, "Is a directory"), False),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory"), False),
        (UnidentifiedImageError("cannot identify image file"), False),  # bad data, no errno
        (OSError("image file is truncated"), False),
        (ValueError("bad level"), False),
        (RuntimeError("no GPU"), False),
    ],
)
def test_the_retry_policy(error, transient):
    assert policy.is_transient(error) is transient


def test_backoff_doubles_from_the_setting(settings):
    settings.TWOAFC_JOB_RETRY_S = 10
    assert [policy.backoff_s(n) for n in (1, 2, 3, 10)] == [10, 20, 40, 300]


def test_run_retries_a_transient_error_then_finishes(caplog, settings):
    caplog.set_level(logging.INFO, logger="twoafc.jobs")
    settings.TWOAFC_JOB_RETRY_S = 10
    job = new_job()
    calls, retries = [], []

    def body(claimed):
        calls.append(claimed.attempts)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        claimed.set_progress(4, 4, stage="writing")
        return {"triplets": 30}

    assert jobs.run(job, body, retry=lambda error, delay: retries.append(delay)) is False
    row = fresh(job)
    assert (row.status, row.attempts, row.claimed_by) == ("queued", 1, "")
    assert row.error == "OSError: [Errno 28] No space left on device" and retries == [10]
    # The retried message arrives: a new claim, attempt 2.
    assert jobs.run(row, body, retry=lambda error, delay: retries.append(delay)) is True
    row = fresh(job)
    assert (row.status, row.attempts, row.triplets, row.done, row.error) == ("done", 2, 30, 4, "")
    lines = messages(caplog)
    assert (
        f"snapshot {job.pk}: attempt 1 failed with OSError: [Errno 28] No space left on device; retrying in 10 s"
        in lines
    )
    assert any(
        line.startswith(f"snapshot {job.pk} done in ") and line.endswith("(attempt 2)")
        for line in lines
    )


def test_run_gives_up_after_the_attempt_limit(settings):
    settings.TWOAFC_JOB_MAX_ATTEMPTS = 2
    job = new_job()

    def body(claimed):
        raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")

    assert not jobs.run(job, body, retry=lambda error, delay: None)
    with pytest.raises(ConnectionRefusedError):
        jobs.run(fresh(job), body, retry=lambda error, delay: None)
    row = fresh(job)
    assert (row.status, row.attempts) == ("failed", 2)
    assert "ConnectionRefusedError" in row.error and "Traceback" in row.traceback


def test_run_fails_a_permanent_error_at_once():
    job = new_job()

    def body(claimed):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "ref_1.png")

    retried = []
    assert not jobs.run(job, body, retry=lambda e, d: retried.append(d), reraise=False)
    row = fresh(job)
    assert (row.status, row.attempts, retried) == ("failed", 1, [])
    assert row.error == "FileNotFoundError: [Errno 2] No such file or directory: 'ref_1.png'"


def test_a_commit_hook_that_cannot_send_never_raises(django_capture_on_commit_callbacks, caplog):
    job = new_job()

    def broker_down(job_id):
        raise BrokerError("Error 111 connecting to 127.0.0.1:6399. Connection refused.")

    with django_capture_on_commit_callbacks(execute=True):
        jobs.enqueue_on_commit(job, broker_down)
    assert job.enqueued is False and fresh(job).status == "queued"
    with django_capture_on_commit_callbacks(execute=True):
        jobs.enqueue_on_commit(job, lambda job_id: None)
    assert job.enqueued is True


@pytest.mark.django_db(transaction=True)
def test_two_workers_claiming_at_once_one_wins():
    """Exclusive under real concurrency: each thread has its own database connection."""
    for _round in range(5):
        job = new_job()
        start = threading.Barrier(4)
        won = []

        def claim(worker, job_id=job.pk, start=start, won=won):
            try:
                mine = Snapshot.objects.get(pk=job_id)
                start.wait()
                if mine.claim(worker=worker):
                    won.append(worker)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=claim, args=(f"w{n}:1",)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        row = fresh(job)
        assert len(won) == 1 and (row.claimed_by, row.attempts) == (won[0], 1)


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_thread_beats_and_stops_once_the_job_is_taken():
    job = new_job()
    assert job.claim()
    claimed_at = fresh(job).heartbeat_at
    with Heartbeat(job, every_s=0.05) as heart:
        time.sleep(0.4)
        beaten = fresh(job).heartbeat_at
        assert heart.beats >= 2 and beaten > claimed_at and not heart.lost
        # Taken over (a beat may land between aging the row and claiming it: try again).
        for _try in range(50):
            age(job, 3600)
            if fresh(job).claim(worker="b:2"):
                break
        time.sleep(0.3)
        assert heart.lost
    assert fresh(job).claimed_by == "b:2"


def test_no_heartbeat_thread_inside_a_transaction():
    """A job claimed in an open transaction (an eager task in a test or a request) is locked by
    it: a beat from another connection would wait on that lock until the step ends."""
    job = new_job()
    assert job.claim()
    started = time.monotonic()
    with Heartbeat(job, every_s=0.01) as heart:
        time.sleep(0.1)
    assert heart.beats == 0 and time.monotonic() - started < 5
