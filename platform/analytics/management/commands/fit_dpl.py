"""``manage.py fit_dpl STUDY``: fit DPL weights inline, with tqdm bars on stderr (features,
fitting, scoring); ``--json`` ends stdout with the result object."""

import json

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from analytics import dpl, services
from studies.models import Study


class Command(BaseCommand):
    help = "Fit DPL weights (w ≥ 0) on a study's votes and print 2AFC scores on held-out triplets."

    def add_arguments(self, parser):
        parser.add_argument("study", help="study slug")
        parser.add_argument("--backbone", default="stlpips-alex", choices=dpl.BACKBONES)
        parser.add_argument("--loss", default="rank", choices=["rank", "logistic"])
        parser.add_argument("--epochs", type=int, default=30)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--snapshot", help="id of the dataset snapshot the votes come from")
        parser.add_argument("--json", action="store_true", help="end with one JSON line")

    def handle(self, *args, **options):
        study = Study.objects.filter(slug=options["study"]).first()
        if study is None:
            raise CommandError(f"no study with slug {options['study']!r}")
        bars: dict[str, tqdm] = {}

        def progress(stage: str, done: int, total: int) -> None:
            bar = bars.get(stage)
            if bar is None:
                for other in bars.values():
                    other.close()
                unit = {"features": "stimulus", "fitting": "epoch"}.get(stage, "step")
                bar = bars[stage] = tqdm(desc=stage, unit=unit, total=total, file=self.stderr)
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            report = services.fit_dpl(
                study,
                backbone=options["backbone"],
                loss=options["loss"],
                epochs=options["epochs"],
                seed=options["seed"],
                snapshot=options["snapshot"],
                progress=progress,
            )
        except (ValueError, dpl.BackboneUnavailable) as error:
            raise CommandError(str(error)) from None
        finally:
            for bar in bars.values():
                bar.close()
        result = report.result
        if options["json"]:
            self.stdout.write(json.dumps(result))
            return
        self.stdout.write(f"2AFC on {result['triplets']} held-out triplets of {study.slug}:")
        for name, score in result["afc"].items():
            shown = (
                f"{score:.3f}"
                if score is not None
                else "unavailable: " + result["unavailable"][name]
            )
            self.stdout.write(f"  {name:14s} {shown}")
        self.stdout.write(f"  {'human ceiling':14s} {result['human_ceiling']:.3f}")
        self.stdout.write(f"weights: {result['weights']}")
        self.stdout.write(f"model card: {result['model_card']}")
