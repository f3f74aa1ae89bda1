"""What a rater sees on every kind of trial: three painted images, each the right file, pixel for pixel."""

import pytest
from rater_helpers import (
    agree_and_start,
    check_trial_images,
    plain,
    rate_url,
    session_of,
    votes_per_index,
    wait_for_trial,
    wait_state,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def every_kind(study):
    """A short session with each kind of trial: 1 practice, 4 regular, 2 sentinels, 2 repeats."""
    return plain(study, practice_trials=1, trials_per_session=4, sentinel_rate=0.5, repeat_rate=0.5)


def test_every_kind_of_trial_shows_three_painted_images(
    live_server, ready_study, open_page, screenshot
):
    """Issue #11, item 1: a sentinel (the reference on one side) left one slot blank, because
    the page put the one <img> of that URL in two places."""
    from rating.models import Trial

    every_kind(ready_study)
    page = open_page(rate_url(live_server, ready_study, "participant=kinds-1"))
    agree_and_start(page)
    wait_for_trial(page, 0)
    session = session_of(ready_study)
    trials = list(session.trials.order_by("index").values_list("kind", "sentinel_side"))
    kinds = [kind for kind, _ in trials]
    assert sorted(set(kinds)) == sorted(Trial.Kind.values)  # practice, regular, sentinel, repeat

    for index, (kind, sentinel_side) in enumerate(trials):
        if index == 1:  # after the practice trial
            wait_state(page, "practice-done")
            page.keyboard.press("Enter")
        wait_for_trial(page, index)
        check_trial_images(page, session, index)
        if kind == Trial.Kind.SENTINEL:
            screenshot(page, f"sentinel-trial-{index}")
        # Sentinels answered right (the reference), so the session ends as a plain one.
        side = sentinel_side or ("left" if index % 2 else "right")
        page.keyboard.press("ArrowLeft" if side == "left" else "ArrowRight")

    wait_state(page, "debrief")
    page.keyboard.press("Enter")
    wait_state(page, "done")
    assert votes_per_index(session) == {index: 1 for index in range(len(kinds))}
