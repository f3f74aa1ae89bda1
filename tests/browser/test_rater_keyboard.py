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
    wait_released,
    wait_state,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Press a mix of keys: arrows and letters, both sides.
KEYS = ["ArrowLeft", "ArrowRight", "KeyA", "KeyL", "ArrowRight", "ArrowLeft"]
SIDE = {"ArrowLeft": "left", "KeyA": "left", "ArrowRight": "right", "KeyL": "right"}


def test_full_session_by_keyboard(live_server, ready_study, open_page, tmp_path, screenshot):
    """consent → instructions → 2 practice → practice done → 5 trials → break → 5 trials → debrief → code."""
    from rating.models import Trial, Vote
    from studies.models import Study

    Study.objects.filter(pk=ready_study.pk).update(practice_trials=2, break_every=5)
    page = open_page(rate_url(live_server, ready_study, "participant=kb-1"))
    wait_state(page, "consent")
    # The instructions show a real triplet: reference, the better and the worse version.
    example = page.eval_on_selector_all("#example img", "els => els.map((e) => e.naturalWidth)")
    assert example == [ready_study.patch_size] * 3
    screenshot(page, "consent")
    page.keyboard.press("Enter")
    wait_state(page, "instructions")
    screenshot(page, "instructions", full_page=False)  # as seen: Start stays in view
    assert page.evaluate("document.activeElement.id") == "start"
    page.keyboard.press("Enter")

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
            screenshot(page, "break")
            page.keyboard.press("Enter")
        wait_for_trial(page, index)
        assert not page.is_visible("#practice-badge")
        assert page.get_attribute("#progressbar", "aria-valuenow") == str(index - 1)
        assert page.inner_text("#progress-text") == f"Trial {index - 1} of 10"
        if index == 2:
            check_desktop_layout(page, ready_study.patch_size, tmp_path)
            screenshot(page, "trial")
        pressed[index] = next(keys)
        page.keyboard.press(pressed[index])

    wait_state(page, "debrief")
    assert page.evaluate("document.activeElement.id") == "submit"
    page.keyboard.press("Enter")
    wait_state(page, "done")
    screenshot(page, "done")
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


def test_presses_before_the_images_were_shown_long_enough_are_ignored(
    live_server, ready_study, open_page, screenshot
):
    """Issue #11, item 7: a second press 300 ms after the first answered the next trial, whose
    images had been on screen for 73 ms. Now a response counts only once the three images have
    been painted and shown for the study's minimum time (200 ms); earlier presses are ignored,
    and the page says why."""
    from rating.models import Vote
    from studies.models import Study

    assert Study._meta.get_field("min_display_ms").default == 200
    plain(ready_study, min_display_ms=200)
    page = open_page(rate_url(live_server, ready_study, "participant=kb-2"))
    agree_and_start(page)
    wait_for_trial(page, 0)
    # The double press of the issue, 300 ms apart by the page's own clock.
    page.evaluate(
        """() => new Promise((resolve) => {
            const press = () => document.dispatchEvent(new KeyboardEvent(
                "keydown", {key: "ArrowLeft", code: "ArrowLeft", bubbles: true}));
            press();
            setTimeout(() => { press(); resolve(); }, 300);
        })"""
    )
    page.wait_for_timeout(100)
    page.wait_for_selector('body[data-pending="0"]')
    session = session_of(ready_study)
    assert votes_per_index(session) == {0: 1}
    # The next trial is shown, still waits for its answer, and the page says why.
    page.wait_for_selector('body[data-state="trial"] #trial[data-index="1"]')
    assert page.get_attribute("body", "data-ignored") == "1"
    assert page.is_visible("#too-soon")
    screenshot(page, "too-soon")

    # Keys hammered every 40 ms through the rest of the session: each trial takes one answer,
    # and only once its images were on screen for 200 ms.
    for _ in range(400):
        if page.get_attribute("body", "data-state") == "debrief":
            break
        page.keyboard.press("ArrowRight")
        page.wait_for_timeout(40)
    wait_state(page, "debrief")
    page.wait_for_selector('body[data-pending="0"]')
    assert votes_per_index(session) == {index: 1 for index in range(10)}
    rts = list(Vote.objects.filter(trial__session=session).values_list("rt_ms", flat=True))
    assert min(rts) >= 200, sorted(rts)
    assert int(page.get_attribute("body", "data-ignored")) > 10


def test_nothing_is_stored_before_consent_and_declining_only_counts(
    live_server, ready_study, open_page, screenshot
):
    """Issue #11, item 6: the page started a session (claiming triplets) before consent."""
    from rating.models import RaterSession, Trial
    from studies.models import Study, Triplet

    def nothing_stored():
        assert not RaterSession.objects.exists() and not Trial.objects.exists()
        assert sum(Triplet.objects.values_list("assigned", flat=True)) == 0

    page = open_page(rate_url(live_server, ready_study))  # an anonymous link
    wait_state(page, "consent")
    screenshot(page, "consent")
    nothing_stored()
    page.click("#consent-decline")
    wait_state(page, "declined")
    page.keyboard.press("ArrowLeft")  # no trial behind the polite goodbye
    assert page.get_attribute("body", "data-state") == "declined"
    page.wait_for_function(
        "() => performance.getEntriesByType('resource').some((e) => e.name.endsWith('/declines'))"
    )
    nothing_stored()
    assert Study.objects.get(pk=ready_study.pk).declined_count == 1
    assert not page.evaluate(
        "Object.keys(localStorage).some((k) => k.startsWith('twoafc:participant'))"
    )


def test_consent_starts_the_session_and_a_return_resumes_it(live_server, ready_study, open_page):
    from rating.models import RaterSession

    plain(ready_study)
    url = rate_url(live_server, ready_study, "PROLIFIC_PID=pp-back&STUDY_ID=s&SESSION_ID=x")
    page = open_page(url)
    wait_state(page, "consent")
    page.keyboard.press("Enter")
    wait_state(page, "instructions")
    assert RaterSession.objects.count() == 1  # started on "I agree"
    page.reload()  # consented already: straight to the instructions
    wait_state(page, "instructions")
    page.keyboard.press("Enter")
    for index in range(3):
        wait_for_trial(page, index)
        page.keyboard.press("KeyL")
    wait_for_trial(page, 3)
    page.wait_for_selector('body[data-pending="0"]')
    page.close(run_before_unload=True)
    wait_released()  # the closed tab let go of the session
    # The same Prolific id in another browser later: welcome back, at the first unanswered trial.
    again = open_page(url, width=1024, height=700)
    wait_state(again, "resume")
    assert again.inner_text("#resume-done") == "3"
    again.keyboard.press("Enter")
    wait_for_trial(again, 3)
    assert RaterSession.objects.count() == 1
    assert votes_per_index(session_of(ready_study)) == {0: 1, 1: 1, 2: 1}


@pytest.mark.parametrize(("break_every", "promised"), [(40, False), (10, False), (5, True)])
def test_the_instructions_promise_only_breaks_that_come(
    live_server, ready_study, open_page, break_every, promised
):
    """Issue #11, item 12: "a break every 40" in a session of fewer trials."""
    plain(ready_study, break_every=break_every)  # 10 real trials
    page = open_page(rate_url(live_server, ready_study, f"participant=kb-break-{break_every}"))
    wait_state(page, "consent")
    page.keyboard.press("Enter")
    wait_state(page, "instructions")
    text = page.inner_text("#screen-instructions")
    assert ("break" in text) == promised, text
    if promised:
        assert f"You get a short break after every {break_every}." in text


def test_closed_study_shows_the_reason(live_server, open_page):
    from rating.models import RaterSession
    from studies.models import Study

    study = Study.objects.create(name="Not ready yet")  # a draft: no triplets
    page = open_page(rate_url(live_server, study, "participant=kb-4"))
    wait_state(page, "error")
    assert "not open for rating" in page.inner_text("#error-text")
    assert not RaterSession.objects.exists()
    open_page.expect("409", "/sessions")  # the refused session start
