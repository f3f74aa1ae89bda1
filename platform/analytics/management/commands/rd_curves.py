import json

from django.core.management.base import BaseCommand, CommandError

from analytics import rd
from studies.models import Study


def _number(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


class Command(BaseCommand):
    help = (
        "Rate–distortion curves of a study's codecs (bpp against PSNR, MS-SSIM, DPL) beside "
        "people's and each metric's win-rate at matched bitrate."
    )

    def add_arguments(self, parser):
        parser.add_argument("study", help="study slug")
        parser.add_argument(
            "--tolerance",
            type=float,
            default=rd.MATCH_LOG2,
            help="matched bitrate: |log2(bpp0/bpp1)| at most this (default %(default)s)",
        )
        flagged = parser.add_mutually_exclusive_group()
        flagged.add_argument(
            "--include-flagged", dest="include_flagged", action="store_true", default=None
        )
        flagged.add_argument("--exclude-flagged", dest="include_flagged", action="store_false")
        parser.add_argument("--no-dpl", action="store_true", help="leave DPL out (faster)")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args, **options):
        study = Study.objects.filter(slug=options["study"]).first()
        if study is None:
            raise CommandError(f"no study with slug {options['study']!r}")
        try:
            result = rd.rd_curves(
                study,
                tolerance=options["tolerance"],
                include_flagged=options["include_flagged"],
                with_dpl=not options["no_dpl"],
            )
        except ValueError as error:
            raise CommandError(str(error)) from None
        if options["json"]:
            self.stdout.write(json.dumps(result))
            return
        self._print(result)

    def _print(self, result: dict) -> None:
        names = result["metrics"]
        digits = {"psnr": 2, "msssim": 4, "dpl": 4}
        self.stdout.write(f"Mean rate–distortion points of {result['study']}:")
        header = f"  {'condition':24s} {'images':>6s} {'bpp':>7s}" + "".join(
            f" {name:>8s}" for name in names
        )
        self.stdout.write(header)
        for points in result["curves"].values():
            for p in points:
                values = "".join(f" {_number(p[n], digits[n]):>8s}" for n in names)
                self.stdout.write(
                    f"  {p['condition']:24s} {p['images']:6d} {p['bpp']:7.3f}{values}"
                )
        for name, reason in result["unavailable"].items():
            self.stdout.write(f"  {name} unavailable: {reason}")
        if result["dpl"]:
            self.stdout.write(f"  DPL: {result['dpl']['model']}")
        matched = result["matched"]
        self.stdout.write(
            f"Win-rate at matched bitrate ({matched['rule']}; {matched['raters']} raters): "
            f"{matched['votes']} votes on {matched['triplets']} triplets"
        )
        for codec, w in matched["win_rate"].items():
            low, high = w["interval"]
            metric = ", ".join(f"{n} {_number(w['metric_rate'][n], 2)}" for n in names)
            self.stdout.write(
                f"  {codec:24s} {w['wins']}/{w['votes']} = {w['rate']:.2f} "
                f"[{low:.2f}, {high:.2f}]   metrics: {metric}"
            )
        for who, order in result["ranking"].items():
            self.stdout.write(f"  ranking by {who}: {' > '.join(order) or '—'}")
