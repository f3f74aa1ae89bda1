import json

from django.core.management.base import BaseCommand

from jobs import services


class Command(BaseCommand):
    help = (
        "Re-send lost jobs of every kind (queued and never taken, or running on a worker that "
        "died) and fail those that keep dying; for cron, where celery beat does not run."
    )

    def handle(self, *args, **options):
        self.stdout.write(json.dumps(services.sweep()))
