"""twoafc's settings, unchanged but for the urlconf, which adds ``POST /ceiling/``.

Run with ``DJANGO_SETTINGS_MODULE=ceiling.settings`` and ``bench`` on PYTHONPATH.
The table is created by ``bench/serve.py`` (raw SQL, once), not by a migration.
"""

from twoafc.settings import *  # noqa: F403

ROOT_URLCONF = "ceiling.urls"
