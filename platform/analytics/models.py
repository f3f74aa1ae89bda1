from django.db import models

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
