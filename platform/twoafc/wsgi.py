"""WSGI entry point: ``gunicorn twoafc.wsgi``."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "twoafc.settings")
application = get_wsgi_application()
