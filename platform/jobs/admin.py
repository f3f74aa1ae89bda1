"""What every job's admin shows: where it stands, why it failed (traceback folded), its times.

A job model's ModelAdmin inherits ``JobAdminMixin`` and lists ``JOB_COLUMNS`` in
``list_display``, ``JOB_FIELDS`` in its read-only fields and ``JOB_FILTERS`` in its filters.
"""

from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html

from .models import Job


def _clock(moment) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


class JobAdminMixin:
    JOB_COLUMNS = ("job_state", "job_error")
    JOB_FIELDS = ("job_state", "job_error", "job_times", "attempts", "claimed_by")
    JOB_FILTERS = ("status",)

    @admin.display(description="Progress", ordering="status")
    def job_state(self, job: Job) -> str:
        """Like "Running · Features · 120/400", "Queued (attempt 2 next)", "Done · 6/6"."""
        stage = job.get_stage_display() if hasattr(job, "get_stage_display") else job.stage
        parts = [job.get_status_display()]
        if job.status == Job.Status.QUEUED and job.attempts:
            parts[0] += f" (attempt {job.attempts + 1} next)"
        if job.status == Job.Status.RUNNING and stage:
            parts.append(str(stage))
        if job.total:
            parts.append(f"{job.done}/{job.total}")
        if job.status == Job.Status.RUNNING and job.is_stale:
            parts.append("no heartbeat: its worker may have died")
        return " · ".join(parts)

    @admin.display(description="Error")
    def job_error(self, job: Job) -> str:
        if not job.error:
            return "-"
        if not job.traceback:
            return format_html("<span style='color:#b00'>{}</span>", job.error)
        return format_html(
            "<details><summary style='color:#b00;cursor:pointer'>{}</summary>"
            "<pre style='white-space:pre-wrap;font-size:11px'>{}</pre></details>",
            job.error,
            job.traceback,
        )

    @admin.display(description="Times")
    def job_times(self, job: Job) -> str:
        took = ""
        if job.started_at and job.finished_at:
            took = f" ({(job.finished_at - job.started_at).total_seconds():.1f} s)"
        return (
            f"created {_clock(job.created_at)} · queued {_clock(job.queued_at)} · "
            f"started {_clock(job.started_at)} · heartbeat {_clock(job.heartbeat_at)} · "
            f"finished {_clock(job.finished_at)}{took}"
        )
