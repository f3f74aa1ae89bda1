"""The rater page by keyboard, in a real browser: the whole flow, one answer per trial, layout."""

import os
from pathlib import Path

import pytest
from rater_helpers import (
    agree_and_start,
    plain,
    rate_url,
    session_of,
    votes_per_index,
    wait_for_trial,
    wait_state,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Press a mix of keys: arrows and letters, both sides.
KEYS = ["ArrowLeft", "ArrowRight", "KeyA", "KeyL", "ArrowRight", "ArrowLeft"]
SIDE = {"ArrowLeft": "left", "KeyA": "left", "ArrowRight": "right", "KeyL": "right"}


def test_full_session_by_keyboard(live_server, ready_study, open_page, tmp_path):
    """consent → instructions → 2 practice → practice done → 5 trials → break → 5 trials → debrief → code."""
    from rating.models import Trial, Vote
    from studies.models import Study

    Study.objects.filter(pk=ready_study.pk).update(practice_trials=2, break_every=5)
    page = open_page(rate_url(live_server, ready_study, "participant=kb-1"))
    wait_state(page, "consent")
    # The instructions show a real triplet: reference, the better and the worse version.
    example = page.eval_on_selector_all("#example img", "els => els.map((e) => e.naturalWidth)")
    assert example == [ready_study.patch_size] * 3
    agree_and_start(page)

    keys = iter(KEYS * 2)
    pressed = {}
    for index in range(2):  # practice, with its badge
        wait_for_trial(page, index)
        assert page.is_visible("#practice-badge")
        assert page.get_attribute("#trial", "data-practice") == "true"
        assert page.inner_text("#progress-text") == f"Practice {index + 1} of 2"
        pressed[index] = next(keys)
        page.keyboard.press(pressed[index])
    wait_state(page, "practice-done")
    assert "the real trials start now" in page.inner_text("#screen-practice-done")
    page.keyboard.press("Enter")

    for index in range(2, 12):
        if index == 7:  # a break after 5 real trials; progress counts real trials only
            wait_state(page, "break")
            assert page.inner_text("#break-done") == "5"
            assert page.inner_text("#break-total") == "10"
            page.keyboard.press("Enter")
        wait_for_trial(page, index)
        assert not page.is_visible("#practice-badge")
        assert page.get_attribute("#progressbar", "aria-valuenow") == str(index - 1)
        assert page.inner_text("#progress-text") == f"Trial {index - 1} of 10"
        if index == 2:
            check_desktop_layout(page, ready_study.patch_size, tmp_path)
        pressed[index] = next(keys)
        page.keyboard.press(pressed[index])

    wait_state(page, "debrief")
    assert page.evaluate("document.activeElement.id") == "submit"
    page.keyboard.press("Enter")
    wait_state(page, "done")
    code = page.inner_text("#completion-code").strip()

    session = session_of(ready_study)
    assert session.is_finished
    assert code == Study.objects.get(pk=ready_study.pk).completion_code
    assert votes_per_index(session) == {index: 1 for index in range(12)}
    votes = (
        Vote.objects.filter(trial__session=session).select_related("trial").order_by("trial__index")
    )
    assert [vote.side for vote in votes] == [SIDE[pressed[i]] for i in range(12)]
    assert [vote.trial.kind == Trial.Kind.PRACTICE for vote in votes] == [True] * 2 + [False] * 10
    assert all(vote.rt_ms > 0 and vote.display_mode == "side-by-side" for vote in votes)
    # The page reported the screen: Playwright's default is the viewport at DPR 1.
    assert (session.screen_w, session.screen_h, session.dpr) == (1280, 800, 1.0)
    assert session.active_tab


def check_desktop_layout(page, size, shots_dir):
    """Left, reference, right in a row, at the study's zoom (4), inside the window."""
    boxes = page.evaluate(
        """Array.from(document.querySelectorAll("#trial .patch > img"), (img) => {
            const r = img.getBoundingClientRect();
            return {x: r.x, y: r.y, width: r.width, height: r.height};
        })"""
    )
    assert len(boxes) == 3
    for box in boxes:
        assert box["width"] == box["height"] == 4 * size
        assert 0 <= box["x"] and box["x"] + box["width"] <= 1280
        assert 0 <= box["y"] and box["y"] + box["height"] <= 800
    left, reference, right = boxes
    assert left["x"] < reference["x"] < right["x"]
    shots = Path(os.environ.get("TWOAFC_SCREENSHOT_DIR", shots_dir))
    page.screenshot(path=str(shots / "rater_desktop.png"))


def test_double_press_records_one_vote(live_server, ready_study, open_page):
    from rating.models import Vote

    plain(ready_study)
    page = open_page(rate_url(live_server, ready_study, "participant=kb-2"))
    agree_and_start(page)
    wait_for_trial(page, 0)
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    wait_for_trial(page, 1)
    page.wait_for_selector('body[data-pending="0"]')

    session = session_of(ready_study)
    votes = list(Vote.objects.filter(trial__session=session))
    assert [(vote.trial.index, vote.side) for vote in votes] == [(0, "left")]
    assert page.get_attribute("#trial", "data-index") == "1"


def test_declining_consent_records_nothing_more(live_server, ready_study, open_page):
    from rating.models import Vote

    page = open_page(rate_url(live_server, ready_study, "participant=kb-3"))
    wait_state(page, "consent")
    page.click("#consent-decline")
    wait_state(page, "declined")
    assert not Vote.objects.exists()
    page.keyboard.press("ArrowLeft")  # no trial behind the polite goodbye
    assert page.get_attribute("body", "data-state") == "declined"


def test_closed_study_shows_the_reason(live_server, open_page):
    from rating.models import RaterSession
    from studies.models import Study

    study = Study.objects.create(name="Not ready yet")  # a draft: no triplets
    page = open_page(rate_url(live_server, study, "participant=kb-4"))
    wait_state(page, "error")
    assert "not open for rating" in page.inner_text("#error-text")
    assert not RaterSession.objects.exists()
    open_page.expect("409", "/sessions")  # the refused session start
