import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from studies.access import make_researcher


class Command(BaseCommand):
    help = (
        "Make a user a researcher (the Researchers group: freeze snapshots, download them, "
        "read results). With --create, add the user with a random password, printed once."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--create", action="store_true", help="create the user if missing")
        parser.add_argument("--email", default="", help="the new user's email (with --create)")

    def handle(self, *args, username, create, email, **options):
        users = get_user_model().objects
        user = users.filter(username=username).first()
        password = ""
        if user is None:
            if not create:
                raise CommandError(f"no user {username!r} (use --create to add one)")
            password = secrets.token_urlsafe(12)
            user = users.create_user(username=username, email=email, password=password)
        elif not user.is_active:
            raise CommandError(f"user {username!r} is inactive; activate it in the admin first")
        make_researcher(user)
        line = f"{username} is a researcher"
        if password:
            line += f"; password (shown once): {password}"
        self.stdout.write(
            line
            + ". Log in at /accounts/login/; change the password at /accounts/password_change/."
        )
