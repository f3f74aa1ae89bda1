"""The Celery application. Workers start with ``celery -A twoafc worker -Q cpu``; one
``celery -A twoafc beat`` (or one worker started with ``-B``) runs the job sweeper.

Job state and its stale rule live in the ``jobs`` app, not here.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "twoafc.settings")

app = Celery("twoafc")
app.config_from_object("django.conf:settings", namespace="CELERY")


def _ensure_filesystem_broker_folders() -> None:
    """kombu's filesystem transport needs its folders to exist before it polls."""
    from django.conf import settings  # deferred: the Celery app loads before Django's settings

    for folder in getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}).values():
        if isinstance(folder, str) and folder.startswith("/"):
            os.makedirs(folder, exist_ok=True)


app.on_configure.connect(lambda **_: _ensure_filesystem_broker_folders(), weak=False)
app.autodiscover_tasks()
