"""manage.py import_clic: a CLIC-style O,A,B,T CSV and its images become an imported study."""

import json

from django.core.management.base import BaseCommand, CommandError

from datasets.imports import ImportRejected, import_clic


class Command(BaseCommand):
    help = (
        "Import a CLIC-style CSV (rows O,A,B,T; T=0: A preferred) with its image folder as a "
        "study with one imported vote per row. Last line: one JSON object."
    )

    def add_arguments(self, parser):
        parser.add_argument("csv", help="the O,A,B,T file")
        parser.add_argument("--images", required=True, help="folder the file names are under")
        parser.add_argument("--slug", required=True, help="slug of the new study")
        parser.add_argument("--name", default="", help="its name (default: the slug)")

    def handle(self, *args, csv, images, slug, name, **options):
        try:
            counts = import_clic(csv, images, slug, name=name)
        except ImportRejected as error:
            raise CommandError(str(error)) from None
        self.stdout.write(json.dumps(counts))
