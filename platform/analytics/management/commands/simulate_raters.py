import json
from contextlib import nullcontext

from django.core.management.base import BaseCommand, CommandError

from analytics.simulation import local_server, simulate_raters
from studies.models import Study


class Command(BaseCommand):
    help = "Drive simulated raters through the HTTP API until N sessions are done or the study is full."

    def add_arguments(self, parser):
        parser.add_argument("study", help="study slug")
        parser.add_argument("--raters", type=int, default=10)
        parser.add_argument(
            "--base-url", help="a running server; default: serve the app on a free local port"
        )
        parser.add_argument("--sharpness", type=float, default=8.0, help="lower = noisier observer")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, study, raters, base_url, sharpness, seed, **options):
        if not Study.objects.filter(slug=study).exists():
            raise CommandError(f"no study with slug {study!r}")
        with nullcontext(base_url) if base_url else local_server() as url:
            result = simulate_raters(url, study, raters, sharpness=sharpness, seed=seed)
        self.stdout.write(
            json.dumps({"study": study, "sessions": result.sessions, "votes": result.votes})
        )
