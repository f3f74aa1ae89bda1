"""manage.py import_bapps: a BAPPS-layout folder becomes an imported study."""

import json

from django.core.management.base import BaseCommand, CommandError

from datasets.imports import ImportRejected, import_bapps


class Command(BaseCommand):
    help = (
        "Import a BAPPS-layout folder (<split>/<category>/{ref,p0,p1,judge}/ and "
        "{p0,p1,same}/) as a study with imported votes. Last line: one JSON object."
    )

    def add_arguments(self, parser):
        parser.add_argument("folder", help="the BAPPS root (holding the split folders)")
        parser.add_argument("--slug", required=True, help="slug of the new study")
        parser.add_argument("--name", default="", help="its name (default: the slug)")
        parser.add_argument("--split", default="", help="comma-separated splits (default: all)")
        parser.add_argument(
            "--votes-per-triplet",
            type=int,
            default=None,
            help="votes each judge stands for (default: train 2, val 5, or n of a k/n judge)",
        )

    def handle(self, *args, folder, slug, name, split, votes_per_triplet, **options):
        splits = [s.strip() for s in split.split(",") if s.strip()] or None
        try:
            counts = import_bapps(
                folder, slug, name=name, splits=splits, votes_per_triplet=votes_per_triplet
            )
        except ImportRejected as error:
            raise CommandError(str(error)) from None
        self.stdout.write(json.dumps(counts))
