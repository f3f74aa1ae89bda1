"""One session, several tabs: a closed tab lets go at once; "Continue here" takes a session over."""

import pytest
from rater_helpers import (
    agree_and_start,
    answer,
    plain,
    rate_url,
    session_of,
    votes_per_index,
    wait_for_trial,
    wait_released,
    wait_state,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PROLIFIC = "PROLIFIC_PID=pp-tabs&STUDY_ID=st-1&SESSION_ID=se-1"


def test_a_closed_tab_lets_go_of_the_session_at_once(live_server, ready_study, open_page):
    """Issue #11, item 3: a closed tab held its session for about 90 s ("Already open")."""
    from rating.models import RaterSession

    plain(ready_study, trials_per_session=8)
    url = rate_url(live_server, ready_study, PROLIFIC)
    page = open_page(url)
    context = page.context
    agree_and_start(page)
    answer(page, range(2))
    wait_for_trial(page, 2)
    page.wait_for_selector('body[data-pending="0"]')
    assert RaterSession.objects.get().active_tab
    page.close()  # the tab is closed: a beacon gives the session back on pagehide

    wait_released(seconds=5)  # within seconds, not 90

    reopened = open_page.new_tab(context, url)
    wait_state(reopened, "resume")  # not "Already open"
    assert reopened.inner_text("#resume-done") == "2"
    reopened.keyboard.press("Enter")
    answer(reopened, range(2, 8), key="ArrowRight")
    wait_state(reopened, "debrief")
    reopened.wait_for_selector('body[data-pending="0"]')
    assert votes_per_index(session_of(ready_study)) == {index: 1 for index in range(8)}


def test_continue_here_takes_the_session_over(live_server, ready_study, open_page, screenshot):
    """Issue #11, item 3: "Already open" had no way forward. "Continue here" takes the session
    over: the other tab stops taking answers, and every vote is stored exactly once, those the
    other tab still had queued included."""
    from rating.models import Vote

    plain(ready_study, trials_per_session=8)
    url = rate_url(live_server, ready_study, PROLIFIC)
    first = open_page(url)
    open_page.expect("ERR_FAILED", "409")  # the dropped sends; the refused start and vote
    context = first.context
    agree_and_start(first)
    answer(first, range(2))
    first.wait_for_selector('body[data-pending="0"]')
    # Two answers the first tab cannot send: they wait in localStorage.
    first.route("**/votes", lambda route: route.abort())
    answer(first, range(2, 4), key="ArrowRight")
    wait_for_trial(first, 4)
    first.wait_for_selector('body[data-pending="2"]')

    second = open_page.new_tab(context, url)
    wait_state(second, "other-tab")
    screenshot(second, "already-open")
    assert second.is_visible("#continue-here")
    second.click("#continue-here")
    wait_state(first, "other-tab")  # told at once, in the same browser
    first.keyboard.press("ArrowLeft")  # it takes no answers
    wait_state(second, "resume")
    assert second.inner_text("#resume-done") == "4"  # the queued answers count as given
    second.wait_for_selector('body[data-pending="0"]')  # and the second tab sent them
    session = session_of(ready_study)
    assert votes_per_index(session) == {index: 1 for index in range(4)}
    second.keyboard.press("Enter")
    answer(second, range(4, 6), key="KeyA")
    second.wait_for_selector('body[data-pending="0"]')

    # The same rater on another device: "Continue here" there too. The second tab learns it
    # when its next answer is refused; that answer is given again on the device that continues.
    elsewhere = open_page(url, width=1024, height=700)
    wait_state(elsewhere, "other-tab")
    elsewhere.click("#continue-here")
    wait_state(elsewhere, "resume")
    assert elsewhere.inner_text("#resume-done") == "6"
    answer(second, [6], key="KeyA")
    wait_state(second, "other-tab")
    elsewhere.keyboard.press("Enter")
    answer(elsewhere, range(6, 8), key="KeyL")
    wait_state(elsewhere, "debrief")
    elsewhere.keyboard.press("Enter")
    wait_state(elsewhere, "done")

    assert votes_per_index(session) == {index: 1 for index in range(8)}
    sides = Vote.objects.filter(trial__session=session).order_by("trial__index")
    assert "".join(side[0] for side in sides.values_list("side", flat=True)) == "llrrllrr"
