"""Lost connections and reloads: every vote arrives exactly once, and a reload resumes."""

import pytest
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


def test_votes_made_offline_arrive_once(live_server, ready_study, open_page):
    plain(ready_study)
    page = open_page(rate_url(live_server, ready_study, "participant=net-1"))
    context = page.context
    agree_and_start(page)
    answer(page, range(2))
    page.wait_for_selector('body[data-pending="0"]')

    context.set_offline(True)
    answer(page, range(2, 5), key="KeyL")  # their images were preloaded before the cut
    wait_for_trial(page, 5)
    page.wait_for_selector("#offline:not([hidden])")
    assert page.get_attribute("body", "data-pending") == "3"
    assert sorted(votes_per_index(session_of(ready_study))) == [0, 1]

    context.set_offline(False)
    page.wait_for_selector('body[data-pending="0"]')
    page.wait_for_selector("#offline", state="hidden")
    answer(page, range(5, 10))
    wait_state(page, "debrief")
    page.keyboard.press("Enter")
    wait_state(page, "done")

    session = session_of(ready_study)
    assert session.is_finished
    assert votes_per_index(session) == {index: 1 for index in range(10)}
    open_page.expect("ERR_INTERNET_DISCONNECTED")  # the sends that failed while offline


def test_a_reload_resumes_at_the_first_unanswered_trial(live_server, ready_study, open_page):
    """Three votes acknowledged, two still queued (the server unreachable), then a reload."""
    from rating.models import Vote

    plain(ready_study)

    page = open_page(rate_url(live_server, ready_study, "participant=net-2"))
    # Every trial that gets painted, in order, across the reload.
    page.add_init_script(
        """new MutationObserver(() => {
            const trial = document.getElementById("trial");
            if (document.body.dataset.state === "trial" && trial && trial.dataset.index !== undefined) {
                const shown = JSON.parse(sessionStorage.getItem("test:shown") || "[]");
                if (shown[shown.length - 1] !== trial.dataset.index) {
                    shown.push(trial.dataset.index);
                    sessionStorage.setItem("test:shown", JSON.stringify(shown));
                }
            }
        }).observe(document, {attributes: true, subtree: true, attributeFilter: ["data-state", "data-index"]});"""
    )
    page.reload()
    agree_and_start(page)
    answer(page, range(3))
    page.wait_for_selector('body[data-pending="0"]')
    page.route("**/votes", lambda route: route.abort())
    answer(page, range(3, 5), key="ArrowRight")
    wait_for_trial(page, 5)
    page.wait_for_selector('body[data-pending="2"]')

    page.reload()  # same tab, same participant: the same session, the queue from localStorage
    wait_state(page, "resume")  # no consent or instructions again
    assert page.inner_text("#resume-done") == "5"
    page.unroute("**/votes")
    page.wait_for_selector('body[data-pending="0"]')
    page.keyboard.press("Enter")
    wait_for_trial(page, 5)
    answer(page, range(5, 10), key="KeyA")
    wait_state(page, "debrief")
    page.keyboard.press("Enter")
    wait_state(page, "done")

    shown = page.evaluate("JSON.parse(sessionStorage.getItem('test:shown'))")
    assert shown == [str(index) for index in range(10)]  # nothing shown twice
    session = session_of(ready_study)
    assert votes_per_index(session) == {index: 1 for index in range(10)}
    sides = Vote.objects.filter(trial__session=session).order_by("trial__index")
    assert list(sides.values_list("side", flat=True)) == ["left"] * 3 + ["right"] * 2 + ["left"] * 5
    open_page.expect("ERR_FAILED")  # the sends the route dropped
