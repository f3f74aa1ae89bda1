import json

from django.core.management.base import BaseCommand, CommandError

from datasets import services
from studies.models import Study


class Command(BaseCommand):
    help = "Freeze a study's votes into the next snapshot <study>-v<N> and build it in-process."

    def add_arguments(self, parser):
        parser.add_argument("study", help="study slug")
        parser.add_argument("--out", help="also write the snapshot unpacked into this new folder")
        parser.add_argument("--license", default="", help="license of the dataset, e.g. CC-BY-4.0")
        parser.add_argument("--citation", default="", help="how to cite the dataset")

    def handle(self, *args, study, out, license, citation, **options):
        found = Study.objects.filter(slug=study).first()
        if found is None:
            raise CommandError(f"no study with slug {study!r}")
        try:
            snapshot = services.freeze(found, license=license, citation=citation)
        except services.FreezeRefused as refused:
            raise CommandError(str(refused)) from None
        try:
            snapshot = services.build_snapshot(snapshot.pk)  # a failure is recorded in its row
        except Exception as error:
            raise CommandError(f"building {snapshot.name} failed: {error}") from None
        path = snapshot.storage_prefix
        if out:
            try:
                services.unpack(snapshot, out)
            except FileExistsError as error:
                raise CommandError(f"{snapshot.name} is built, but {error}") from None
            path = out
        self.stdout.write(json.dumps({
            "snapshot": snapshot.name, "path": str(path), "files": snapshot.files_count,
            "votes": snapshot.vote_counts, "triplets": snapshot.triplets,
            "content_hash": snapshot.content_hash,
        }))  # fmt: skip
