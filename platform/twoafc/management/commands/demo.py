import json
import signal
import sys
import time

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from analytics.services import fit_dpl
from analytics.simulation import local_server, simulate_raters
from rating.selectors import vote_counts
from studies.services import study_counts
from twoafc import demo, processes


class Command(BaseCommand):
    help = "Build the demo study (worker + bots + export + fit) and serve it; --no-serve prints JSON and exits."

    def add_arguments(self, parser):
        parser.add_argument("--no-serve", action="store_true", help="do everything except serve")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, no_serve, port, **options):
        # SIGTERM (a supervisor, `kill`) ends the demo like Ctrl-C: the worker and server stop too.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        call_command("migrate", verbosity=0)
        demo.ensure_admin()
        study = demo.ensure_study()
        worker = demo.start_worker()
        server = None
        try:
            started = time.monotonic()
            job = demo.generate(study, worker)
            if job.status != job.Status.DONE:
                raise CommandError(f"generation failed: {job.error}")
            self.stderr.write(
                f"generation: {job.progress} chunks, {time.monotonic() - started:.1f} s"
            )
            study.refresh_from_db()
            started = time.monotonic()
            with local_server() as url:
                bots = simulate_raters(url, study.slug, raters=demo.bot_sessions_needed(study))
            self.stderr.write(
                f"simulated raters: {bots.sessions} sessions, {bots.votes} new votes, "
                f"{time.monotonic() - started:.1f} s"
            )
            started = time.monotonic()
            export = demo.fresh_export(study)
            self.stderr.write(f"export: {export}, {time.monotonic() - started:.1f} s")
            started = time.monotonic()
            report = fit_dpl(study)
            self.stderr.write(
                f"fit: {report.result['weights']}, {time.monotonic() - started:.1f} s"
            )
            summary = {
                "study": study.slug,
                **study_counts(study),
                "votes": vote_counts(study)["cast"],
                "export": str(export),
                "fit": report.result,
            }
            if no_serve:
                self.stdout.write(json.dumps(summary))
                return
            # Computed once here, the results page is served from the shared cache.
            from analytics.report import study_report

            started = time.monotonic()
            study_report(study)
            self.stderr.write(f"results report: {time.monotonic() - started:.1f} s")
            server = demo.start_server(port)
            base = f"http://127.0.0.1:{port}"
            self.stdout.write(
                f"\ntwoafc demo is up (Ctrl-C stops the server and the worker).\n"
                f"  rater:   {base}{study.get_absolute_url()}\n"
                f"  admin:   {base}/admin/   login {demo.ADMIN_USER} / {demo.admin_password()}\n"
                f"  results: {base}/studies/{study.slug}/results/\n"
            )
            self._wait(server, worker)
        finally:
            processes.stop(server)
            processes.stop(worker)

    @staticmethod
    def _wait(server, worker) -> None:
        try:
            while server.poll() is None and worker.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
