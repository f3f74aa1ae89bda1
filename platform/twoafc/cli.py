"""``twoafc-manage``: manage.py for the installed package."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "twoafc.settings")
    from django.core.management import execute_from_command_line  # deferred: after the env is set

    execute_from_command_line(sys.argv)
