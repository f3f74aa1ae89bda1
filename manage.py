#!/usr/bin/env python
"""Django's command-line utility for twoafc.

`platform/` and `codecs/` are source roots (never packages: both names are
standard-library modules), so they go on sys.path here, as pytest and the
installed package see them.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
for source_root in ("codecs", "platform"):
    path = str(ROOT / source_root)
    if path not in sys.path:
        sys.path.insert(0, path)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "twoafc.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
