"""A thread that keeps a job's heartbeat fresh while a long step runs without progress calls.

Encoding one large image, or fitting one epoch, can take longer than the stale time with
nothing to report; without a beat the sweeper would take such a job for dead.
"""

import logging
import threading

from django.conf import settings
from django.db import DatabaseError, connections, transaction

from .models import Job

logger = logging.getLogger("twoafc.jobs")


class Heartbeat:
    """``with Heartbeat(job):`` beats ``job`` every ``TWOAFC_JOB_HEARTBEAT_S`` until the block ends.

    The thread has its own database connection (Django's are per thread) and closes it when
    it stops. It stops beating once the job is no longer running (under ``job``'s claim,
    when it has one): ``lost`` then says so.
    """

    def __init__(self, job: Job, every_s: float | None = None):
        self.job = job
        self.every_s = every_s if every_s is not None else settings.TWOAFC_JOB_HEARTBEAT_S
        self.beats = 0
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat {job.label}", daemon=True
        )

    def __enter__(self) -> "Heartbeat":
        # Inside a transaction (a task run eagerly in a test or a request), the job's row may
        # be written but not committed: another connection's beat would wait on our own lock.
        # Workers run tasks in autocommit, where the thread runs.
        if not transaction.get_connection().in_atomic_block:
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.every_s):
                try:
                    alive = self.job.beat()
                except DatabaseError as error:  # the database is away: try again next beat
                    logger.warning("%s: heartbeat not recorded: %s", self.job.label, error)
                    continue
                if not alive:
                    self.lost = True
                    logger.info("%s: no longer running here; heartbeat stopped", self.job.label)
                    return
                self.beats += 1
        finally:
            connections.close_all()  # this thread's connections only
