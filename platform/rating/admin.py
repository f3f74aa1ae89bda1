"""Raters in the admin: their quality measures, the flags with reasons, and the include/exclude call."""

from django.contrib import admin
from django.db.models import Count

from .models import RaterSession
from .services import refresh_quality


@admin.register(RaterSession)
class RaterSessionAdmin(admin.ModelAdmin):
    list_display = [
        "rater",
        "study",
        "market",
        "started_at",
        "finished_at",
        "votes",
        "flag_reasons",
        "quality_override",
    ]
    list_filter = ["study", "market", "flagged", "quality_override", "screened_out"]
    list_editable = ["quality_override"]
    readonly_fields = [
        "study", "token", "rater", "market", "market_study_id", "market_session_id", "started_at",
        "last_seen_at", "finished_at", "screen_w", "screen_h", "dpr", "user_agent", "screened_out",
        "quality", "flags",
    ]  # fmt: skip
    fields = readonly_fields + ["quality_override"]
    actions = ["recompute_quality"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("study")
            .annotate(vote_count=Count("trials__vote"))
        )

    @admin.display(description="votes", ordering="vote_count")
    def votes(self, session):
        return session.vote_count

    @admin.display(description="flags")
    def flag_reasons(self, session):
        return "; ".join(session.quality.get("reasons", {}).values()) or "-"

    @admin.action(description="Recompute quality measures and flags")
    def recompute_quality(self, request, queryset):
        for session in queryset:
            refresh_quality(session)
        self.message_user(request, f"Recomputed {queryset.count()} rater(s).")

    def has_add_permission(self, request):
        return False
