import json

from django.core.management.base import BaseCommand, CommandError

from datasets.services import export_bapps
from studies.models import Study


class Command(BaseCommand):
    help = "Export a study's voted triplets in the BAPPS layout, plus votes.csv."

    def add_arguments(self, parser):
        parser.add_argument("study", help="study slug")
        parser.add_argument("out_dir", help="folder to create (must not exist or be empty)")

    def handle(self, *args, study, out_dir, **options):
        found = Study.objects.filter(slug=study).first()
        if found is None:
            raise CommandError(f"no study with slug {study!r}")
        try:
            info = export_bapps(found, out_dir)
        except FileExistsError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(json.dumps({**info, "path": str(out_dir)}))
