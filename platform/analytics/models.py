from django.db import models

from jobs.models import Job
from studies.models import Study


class FitReport(models.Model):
    """One run of fit_dpl: the 2AFC table on held-out triplets and the fitted weights file."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="fit_reports")
    backbone = models.CharField(max_length=40)
    loss = models.CharField(max_length=16)
    result = models.JSONField(help_text="The fit_dpl --json object.")
    weights_path = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.study} · {self.backbone} · {self.created_at:%Y-%m-%d %H:%M}"


class FitJob(Job):
    """One requested DPL fit: its settings, and the progress its task writes (``jobs`` life cycle)."""

    class Stage(models.TextChoices):
        WAITING = "waiting", "Waiting"
        FEATURES = "features", "Features"
        FITTING = "fitting", "Fitting"
        SCORING = "scoring", "Scoring"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="fit_jobs")
    backbone = models.CharField(max_length=40, default="stlpips-alex")
    loss = models.CharField(
        max_length=16, default="rank", choices=[("rank", "rank"), ("logistic", "logistic")]
    )
    epochs = models.PositiveIntegerField(default=30)
    seed = models.IntegerField(default=0)
    stage = models.CharField(max_length=40, choices=Stage.choices, default=Stage.WAITING)
    report = models.OneToOneField(
        FitReport, null=True, blank=True, on_delete=models.SET_NULL, related_name="job"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.study} fit ({self.backbone}, {self.loss}): {self.status}"

    @property
    def progress(self) -> str:
        if self.status in (self.Status.QUEUED, self.Status.DONE, self.Status.FAILED):
            return self.get_status_display()
        return f"{self.get_stage_display()} {self.done}/{self.total}"
