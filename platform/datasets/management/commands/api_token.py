from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from datasets.models import ApiToken
from studies.access import make_researcher


class Command(BaseCommand):
    help = "Issue an API token for a user (printed once; only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="what the token is for")
        parser.add_argument(
            "--create", action="store_true", help="create the user, a researcher, if missing"
        )

    def handle(self, *args, username, name, create, **options):
        users = get_user_model().objects
        user = users.filter(username=username).first()
        if user is None:
            if not create:
                raise CommandError(f"no user {username!r} (use --create to add one)")
            user = users.create_user(username=username)
            make_researcher(user)
        _, raw = ApiToken.issue(user, name=name)
        self.stdout.write(raw)
