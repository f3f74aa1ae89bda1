import json

from django.core.management.base import BaseCommand, CommandError

from analytics import dpl
from analytics.evaluation import evaluate_study
from analytics.metrics import REGISTRY
from studies.models import Study


class Command(BaseCommand):
    help = (
        "Score every metric by 2AFC agreement with a study's votes, with 95% bootstrap "
        "intervals and the human ceiling (flagged raters counted and not)."
    )

    def add_arguments(self, parser):
        parser.add_argument("study", help="study slug")
        parser.add_argument("--bootstrap", type=int, default=1000, help="replicates (default 1000)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--metric",
            action="append",
            dest="metrics",
            help=f"score only this metric (repeatable): {', '.join(REGISTRY)}, dpl",
        )
        parser.add_argument(
            "--dpl-weights", help="lpips-format .pth for 'dpl' (default: newest fit)"
        )
        parser.add_argument("--dpl-backbone", choices=dpl.BACKBONES, help="trunk of --dpl-weights")
        flagged = parser.add_mutually_exclusive_group()
        flagged.add_argument(
            "--include-flagged", dest="include_flagged", action="store_true", default=None,
            help="headline scores count flagged raters",
        )  # fmt: skip
        flagged.add_argument(
            "--exclude-flagged", dest="include_flagged", action="store_false",
            help="headline scores leave flagged raters out (default: the study's setting)",
        )  # fmt: skip
        parser.add_argument("--json", action="store_true", help="print the result as one JSON line")

    def handle(self, *args, **options):
        study = Study.objects.filter(slug=options["study"]).first()
        if study is None:
            raise CommandError(f"no study with slug {options['study']!r}")
        if options["bootstrap"] < 1:
            raise CommandError("--bootstrap must be at least 1")
        if options["dpl_backbone"] and not options["dpl_weights"]:
            raise CommandError("--dpl-backbone needs --dpl-weights")
        try:
            result = evaluate_study(
                study,
                bootstrap=options["bootstrap"],
                seed=options["seed"],
                metrics=options["metrics"],
                dpl_weights=options["dpl_weights"],
                dpl_backbone=options["dpl_backbone"],
                include_flagged=options["include_flagged"],
            )
        except (ValueError, dpl.BackboneUnavailable) as error:
            raise CommandError(str(error)) from None
        if options["json"]:
            self.stdout.write(json.dumps(result))
            return
        table = result["sets"][result["headline"]]
        self.stdout.write(
            f"2AFC on {table['triplets']} triplets, {table['votes']} votes of {study.slug} "
            f"({table['raters']} raters: {table['counted']} counted, {table['left_out']} left out), "
            f"95% bootstrap intervals over {result['bootstrap']} resamples:"
        )
        for name, info in result["metrics"].items():
            if info["unavailable"]:
                self.stdout.write(f"  {name:14s} unavailable: {info['unavailable']}")
            else:
                self.stdout.write(f"  {name:14s} {_estimate(table['metrics'][name])}")
        self.stdout.write(f"  {'human ceiling':14s} {_estimate(table['human_ceiling'])}")


def _estimate(value: dict) -> str:
    if value["score"] is None:
        return "undefined"
    if value["low"] is None:
        return f"{value['score']:.3f}"
    return f"{value['score']:.3f} [{value['low']:.3f}, {value['high']:.3f}]"
