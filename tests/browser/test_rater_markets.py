"""Crowd markets: Prolific's redirect only after confirmation, MTurk preview and submit, a second tab."""

import re
from datetime import timedelta
from urllib.parse import parse_qs

import pytest
from django.utils import timezone
from rater_helpers import (
    agree_and_start,
    answer,
    plain,
    rate_url,
    session_of,
    votes_per_index,
    wait_for_trial,
    wait_state,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PROLIFIC = "PROLIFIC_PID=pp-1&STUDY_ID=st-1&SESSION_ID=se-1"
LANDED = "<!doctype html><title>landed</title><p>landed</p>"


def test_the_prolific_redirect_waits_for_confirmation(live_server, ready_study, open_page):
    from rating.models import RaterSession
    from studies.models import Study

    plain(ready_study)
    page = open_page(rate_url(live_server, ready_study, PROLIFIC))
    at_prolific = []

    def prolific(route):
        at_prolific.append(route.request.url)
        route.fulfill(body=LANDED, content_type="text/html")

    page.route("https://app.prolific.com/**", prolific)
    finishes = []

    def drop_finish(route):
        finishes.append(route.request.url)
        route.abort()

    page.route("**/finish", drop_finish)
    agree_and_start(page)
    answer(page, range(10))
    wait_state(page, "debrief")
    page.keyboard.press("Enter")

    # Four failed tries (the first and 3 retries): a notice, no code, no redirect.
    wait_state(page, "unconfirmed")
    assert len(finishes) >= 4
    assert "We could not confirm your answers yet" in page.inner_text("#confirm-notice")
    assert not page.is_visible("#completion-code")
    page.wait_for_timeout(1600)  # longer than the redirect delay
    assert page.url.startswith(live_server.url)
    assert at_prolific == []
    session = session_of(ready_study)
    assert not session.is_finished
    assert votes_per_index(session) == {index: 1 for index in range(10)}

    page.unroute("**/finish")
    code = Study.objects.get(pk=ready_study.pk).completion_code
    with page.expect_navigation(url=f"https://app.prolific.com/submissions/complete?cc={code}"):
        page.click("#retry-now")
        wait_state(page, "done")
        assert page.inner_text("#completion-code").strip() == code  # shown before leaving
    assert page.inner_text("body") == "landed"
    assert at_prolific == [f"https://app.prolific.com/submissions/complete?cc={code}"]

    session.refresh_from_db()
    assert session.is_finished
    assert session.market == RaterSession.Market.PROLIFIC
    assert (session.market_study_id, session.market_session_id) == ("st-1", "se-1")

    # Coming back to the study link: told so, with the code this browser was given.
    again = open_page.new_tab(page.context, rate_url(live_server, ready_study, PROLIFIC))
    wait_state(again, "completed")
    assert "You have already completed this study." in again.inner_text("#screen-completed")
    assert again.inner_text("#completed-code-value").strip() == code
    assert RaterSession.objects.count() == 1
    open_page.expect("ERR_FAILED", "409")  # the dropped finish calls; the refused second start


def test_mturk_preview_shows_the_example_and_starts_nothing(live_server, ready_study, open_page):
    from rating.models import RaterSession

    query = "assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE&hitId=h-1&turkSubmitTo=https://workersandbox.mturk.com"
    page = open_page(None)
    api_calls = []
    page.on("request", lambda request: "/api/" in request.url and api_calls.append(request.url))
    page.goto(rate_url(live_server, ready_study, query))
    wait_state(page, "preview")
    assert "Accept the HIT to start" in page.inner_text("#preview-notice")
    assert not page.is_visible("#start")
    sizes = page.eval_on_selector_all("#example img", "els => els.map((e) => e.naturalWidth)")
    assert sizes == [ready_study.patch_size] * 3
    page.keyboard.press("Enter")
    page.keyboard.press("ArrowLeft")
    page.wait_for_timeout(300)
    assert page.get_attribute("body", "data-state") == "preview"
    assert api_calls == []
    assert not RaterSession.objects.exists()


def test_an_accepted_hit_posts_the_form_to_mturk(live_server, ready_study, open_page):
    plain(ready_study)
    query = "assignmentId=as-1&hitId=h-1&workerId=w-1&turkSubmitTo=https://workersandbox.mturk.com"
    page = open_page(rate_url(live_server, ready_study, query))
    posted = []

    def mturk(route):
        posted.append((route.request.method, route.request.post_data))
        route.fulfill(body=LANDED, content_type="text/html")

    page.route("https://workersandbox.mturk.com/**", mturk)
    agree_and_start(page)
    answer(page, range(10), key="KeyL")
    wait_state(page, "debrief")
    with page.expect_navigation(
        url=re.compile(r"^https://workersandbox\.mturk\.com/mturk/externalSubmit")
    ):
        page.keyboard.press("Enter")
    session = session_of(ready_study)
    assert session.is_finished
    [(method, body)] = posted
    assert method == "POST"
    assert parse_qs(body) == {
        "assignmentId": ["as-1"],
        "completion_code": [ready_study.completion_code],
    }


def test_a_second_tab_is_refused(live_server, ready_study, open_page):
    from rating.models import RaterSession, Vote

    plain(ready_study)  # duplicate_policy "refuse" is the default
    url = rate_url(live_server, ready_study, "PROLIFIC_PID=pp-2&STUDY_ID=st-1&SESSION_ID=se-2")
    first = open_page(url)
    agree_and_start(first)
    wait_for_trial(first, 0)
    second = open_page.new_tab(first.context, url)
    wait_state(second, "other-tab")
    assert "open in another tab or window" in second.inner_text("#screen-other-tab")
    assert second.is_visible("#continue-here")
    second.keyboard.press("ArrowLeft")

    answer(first, range(1))  # the first tab carries on
    first.wait_for_selector('body[data-pending="0"]')
    session = RaterSession.objects.get(study=ready_study)
    assert list(
        Vote.objects.filter(trial__session=session).values_list("trial__index", flat=True)
    ) == [0]

    # Idle for long enough, the session passes to a tab that opens it; the first tab, in the
    # same browser, stops at once and says where to go on.
    RaterSession.objects.filter(pk=session.pk).update(
        last_seen_at=timezone.now() - timedelta(minutes=5)
    )
    third = open_page.new_tab(first.context, url)
    wait_state(third, "resume")
    wait_state(first, "other-tab")
    first.keyboard.press("ArrowLeft")
    third.keyboard.press("Enter")
    answer(third, [1], key="ArrowRight")
    third.wait_for_selector('body[data-pending="0"]')
    votes = Vote.objects.filter(trial__session=session).order_by("trial__index")
    assert list(votes.values_list("trial__index", "side")) == [(0, "left"), (1, "right")]
    assert RaterSession.objects.count() == 1
    open_page.expect("409")  # the refused second start and the first tab's refused vote


def test_a_screened_out_rater_is_told_plainly(live_server, ready_study, open_page, screenshot):
    """Issue #11, item 8: a rater screened out for failing the sentinels was thanked with "All
    your answers were received". Every sentinel (8 of them) is answered wrongly here, so any
    sensible screen-out rule applies."""
    from rating.models import RaterSession, Trial
    from studies.models import Study

    plain(ready_study, trials_per_session=16, sentinel_rate=0.5)  # 16 regular, 8 sentinels
    query = "PROLIFIC_PID=pp-careless&STUDY_ID=st-1&SESSION_ID=se-3"
    open_page.expect("409")  # the refused return
    page = open_page(rate_url(live_server, ready_study, query))
    agree_and_start(page)
    wait_state(page, "trial")
    session = session_of(ready_study)
    trials = list(session.trials.order_by("index").values_list("kind", "sentinel_side"))
    assert sum(kind == Trial.Kind.SENTINEL for kind, _ in trials) >= 8
    wrong = {"left": "ArrowRight", "right": "ArrowLeft"}
    for index, (_, sentinel_side) in enumerate(trials):
        wait_for_trial(page, index)
        page.keyboard.press(wrong[sentinel_side] if sentinel_side else "ArrowLeft")
    wait_state(page, "debrief")

    code = Study.objects.get(pk=ready_study.pk).screened_out_code
    page.keyboard.press("Enter")
    wait_state(page, "screened-out")
    screenshot(page, "screened-out")
    text = page.inner_text("#screen-done")
    assert "All your answers were received" not in text
    assert "screened out" in text and "Prolific expects the screened-out code" in text
    assert page.inner_text("#completion-code").strip() == code
    # The page goes on to Prolific with that code (after a few seconds to read; the redirect
    # itself is the one test_the_prolific_redirect_waits_for_confirmation follows).
    redirect = f"https://app.prolific.com/submissions/complete?cc={code}"
    assert page.get_attribute("#redirect-link", "href") == redirect
    assert RaterSession.objects.get().screened_out

    # Back at the study link later: told again, with the screened-out code.
    again = open_page.new_tab(page.context, rate_url(live_server, ready_study, query))
    wait_state(again, "completed")
    assert "screened out" in again.inner_text("#screen-completed")
    assert again.inner_text("#completed-code-value").strip() == code
