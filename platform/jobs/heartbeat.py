"""A thread that keeps a job's heartbeat fresh while a long step runs without progress calls.

Encoding one large image, or fitting one epoch, can take longer than the stale time with
nothing to report; without a beat the sweeper would take such a job for dead.
"""

import logging
import threading

from django.conf import settings
from django.db import DatabaseError, connections

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
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
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
