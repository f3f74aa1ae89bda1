"""Who may use the researcher pages: staff, and researchers.

A **researcher** is an active user, staff or not, with the ``datasets.add_snapshot``
permission; the "Researchers" group (made by a data migration, and again by
``researchers_group`` wherever it is missing) holds it with ``datasets.view_snapshot``.
Researchers freeze snapshots of any study, download what they froze (and what is shared
with them), and read every study's results report. They never see the admin.

``python manage.py researcher <username> [--create]`` makes one.
"""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group, Permission
from django.shortcuts import render

RESEARCHERS = "Researchers"
RESEARCHER_PERMISSIONS = ("add_snapshot", "view_snapshot")  # of the datasets app


def is_researcher(user) -> bool:
    """Staff, or an active user with the ``datasets.add_snapshot`` permission."""
    return (
        user is not None
        and user.is_authenticated
        and user.is_active
        and (user.is_staff or user.has_perm("datasets.add_snapshot"))
    )


def role(user) -> str:
    """How the header names the user: "staff", "researcher" or "" (anyone else)."""
    if user is None or not user.is_authenticated:
        return ""
    if user.is_staff:
        return "staff"
    return "researcher" if is_researcher(user) else ""


def researchers_group() -> Group:
    """The "Researchers" group with its permissions, made if it is missing."""
    group, _ = Group.objects.get_or_create(name=RESEARCHERS)
    group.permissions.add(
        *Permission.objects.filter(
            content_type__app_label="datasets", codename__in=RESEARCHER_PERMISSIONS
        )
    )
    return group


def make_researcher(user) -> None:
    """Put ``user`` in the "Researchers" group."""
    user.groups.add(researchers_group())


def researcher_required(view):
    """Log in first; then a user who is not a researcher gets a 403 page saying why."""

    @wraps(view)
    def checked(request, *args, **kwargs):
        if not is_researcher(request.user):
            return render(request, "registration/not_researcher.html", status=403)
        return view(request, *args, **kwargs)

    return login_required(checked)
