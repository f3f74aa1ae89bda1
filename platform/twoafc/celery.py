"""The Celery application. Workers start with ``celery -A twoafc worker -Q cpu``."""

import os
from datetime import timedelta

from celery import Celery

# A job row marked running longer ago than this is taken to be orphaned (its worker died)
# and may be claimed again. Younger, a redelivered task (acks_late: Redis hands a task out
# again after the visibility timeout) leaves the job to the worker that is running it.
STALE_JOB = timedelta(hours=2)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "twoafc.settings")

app = Celery("twoafc")
app.config_from_object("django.conf:settings", namespace="CELERY")


def _ensure_filesystem_broker_folders() -> None:
    """kombu's filesystem transport needs its folders to exist before it polls."""
    from django.conf import settings

    for folder in getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}).values():
        if isinstance(folder, str) and folder.startswith("/"):
            os.makedirs(folder, exist_ok=True)


app.on_configure.connect(lambda **_: _ensure_filesystem_broker_folders(), weak=False)
app.autodiscover_tasks()
