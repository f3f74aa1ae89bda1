"""Helpers the browser tests share (fixtures are in conftest.py)."""

PHONE = {
    "width": 390,
    "height": 844,
    "has_touch": True,
    "is_mobile": True,
    "device_scale_factor": 3,
}


def rate_url(live_server, study, query=""):
    return f"{live_server.url}/rate/{study.slug}/" + (f"?{query}" if query else "")


def wait_state(page, state, timeout=15_000):
    page.wait_for_selector(f'body[data-state="{state}"]', timeout=timeout)


def wait_for_trial(page, index):
    page.wait_for_selector(f'body[data-state="trial"] #trial[data-index="{index}"]')


def agree_and_start(page):
    """Consent and instructions, by keyboard: each screen's button has the focus."""
    wait_state(page, "consent")
    assert page.evaluate("document.activeElement.id") == "consent-agree"
    page.keyboard.press("Enter")
    wait_state(page, "instructions")
    assert page.evaluate("document.activeElement.id") == "start"
    page.keyboard.press("Enter")


def answer(page, indexes, key="ArrowLeft"):
    for index in indexes:
        wait_for_trial(page, index)
        page.keyboard.press(key)


def session_of(study, **filters):
    from rating.models import RaterSession

    return RaterSession.objects.get(study=study, **filters)


def votes_per_index(session):
    from django.db.models import Count

    from rating.models import Vote

    rows = (
        Vote.objects.filter(trial__session=session)
        .values("trial__index")
        .annotate(n=Count("pk"))
        .order_by("trial__index")
    )
    return {row["trial__index"]: row["n"] for row in rows}


def plain(study, **fields):
    """No practice trials and no breaks (unless given): trial i is the i-th real trial."""
    from studies.models import Study

    Study.objects.filter(pk=study.pk).update(**{"practice_trials": 0, "break_every": 0, **fields})
    study.refresh_from_db()
    return study
