"""The rater page in a real browser: Debian's Chromium driven by Playwright, against live_server."""

import os
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in this thread; ORM calls after it are still synchronous.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Press a mix of keys: arrows and letters, both sides.
KEYS = ["ArrowLeft", "ArrowRight", "KeyA", "KeyL", "ArrowRight",
        "ArrowLeft", "KeyL", "KeyA", "ArrowLeft", "ArrowRight"]  # fmt: skip
SIDE = {"ArrowLeft": "left", "KeyA": "left", "ArrowRight": "right", "KeyL": "right"}

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser):
    """Open a page at a viewport size; fails the test on any JavaScript or console error."""
    contexts, errors = [], []

    def open_(url, width=1280, height=800):
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
        page.on(
            "response",
            lambda response: (
                response.status >= 400 and errors.append(f"HTTP {response.status}: {response.url}")
            ),
        )
        page.on(
            "console",
            lambda message: message.type == "error" and errors.append(f"console: {message.text}"),
        )
        page.goto(url)
        return page

    open_.errors = errors
    yield open_
    for context in contexts:
        context.close()
    assert not errors, errors


def rate_url(live_server, study, participant):
    return f"{live_server.url}/rate/{study.slug}/?PROLIFIC_PID={participant}"


def wait_for_trial(page, index):
    page.wait_for_selector(f'body[data-state="trial"] #trial[data-index="{index}"]')


def start_by_keyboard(page):
    page.wait_for_selector('body[data-state="instructions"]')
    assert page.evaluate("document.activeElement.id") == "start"
    page.keyboard.press("Enter")


def test_ten_trials_by_keyboard(live_server, ready_study, open_page):
    from rating.models import RaterSession, Vote

    page = open_page(rate_url(live_server, ready_study, "test-rater-1"))
    start_by_keyboard(page)
    for index, key in enumerate(KEYS):
        wait_for_trial(page, index)
        assert page.get_attribute("#progressbar", "aria-valuenow") == str(index + 1)
        page.keyboard.press(key)
    page.wait_for_selector('body[data-state="done"]')
    code = page.inner_text("#completion-code").strip()

    session = RaterSession.objects.get(study=ready_study)
    votes = list(Vote.objects.filter(trial__session=session).order_by("trial__index"))
    assert [vote.trial.index for vote in votes] == list(range(10))
    assert [vote.side for vote in votes] == [SIDE[key] for key in KEYS]
    assert all(vote.rt_ms > 0 for vote in votes)
    session.refresh_from_db()
    assert session.is_finished
    ready_study.refresh_from_db()
    assert code == ready_study.completion_code


def test_double_press_records_one_vote(live_server, ready_study, open_page):
    from rating.models import RaterSession, Vote

    page = open_page(rate_url(live_server, ready_study, "test-rater-2"))
    start_by_keyboard(page)
    wait_for_trial(page, 0)
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    wait_for_trial(page, 1)
    page.wait_for_selector('body[data-pending="0"]')

    session = RaterSession.objects.get(study=ready_study)
    votes = list(Vote.objects.filter(trial__session=session))
    assert [(vote.trial.index, vote.side) for vote in votes] == [(0, "left")]
    assert page.get_attribute("#trial", "data-index") == "1"


@pytest.mark.parametrize(
    ("width", "height", "stacked"), [(1280, 800, False), (390, 844, True)], ids=["desktop", "phone"]
)
def test_trial_fits_the_screen(
    live_server, ready_study, open_page, tmp_path, width, height, stacked
):
    page = open_page(rate_url(live_server, ready_study, f"test-layout-{width}"), width, height)
    start_by_keyboard(page)
    wait_for_trial(page, 0)
    # Left, reference, right: the images as painted.
    boxes = page.evaluate(
        """Array.from(document.querySelectorAll("#trial .patch > img"), (img) => {
            const r = img.getBoundingClientRect();
            return {x: r.x, y: r.y, width: r.width, height: r.height};
        })"""
    )
    assert len(boxes) == 3
    size = ready_study.patch_size
    for box in boxes:
        assert box["width"] == box["height"]
        assert box["width"] % size == 0  # an integer zoom
        assert 0 <= box["x"] and box["x"] + box["width"] <= width
        assert 0 <= box["y"] and box["y"] + box["height"] <= height
    left, reference, right = boxes
    if stacked:
        assert left["y"] < reference["y"] < right["y"]
    else:
        assert left["x"] < reference["x"] < right["x"]
        assert boxes[0]["width"] == 4 * size  # the default zoom where there is room
    shots = Path(os.environ.get("TWOAFC_SCREENSHOT_DIR", tmp_path))
    page.screenshot(path=str(shots / f"rater_{'phone' if stacked else 'desktop'}.png"))


def test_failed_sends_survive_a_reload(live_server, ready_study, open_page):
    """Votes the server never acknowledged stay queued in localStorage, across a reload, until sent."""
    from rating.models import RaterSession, Vote

    url = rate_url(live_server, ready_study, "test-rater-3")
    page = open_page(url)
    start_by_keyboard(page)
    for index in range(2):
        wait_for_trial(page, index)
        page.keyboard.press("ArrowLeft")
    page.wait_for_selector('body[data-pending="0"]')

    page.route("**/votes", lambda route: route.abort())  # the network drops every vote
    for index in range(2, 4):
        wait_for_trial(page, index)
        page.keyboard.press("ArrowRight")
    wait_for_trial(page, 4)
    page.wait_for_selector("#offline:not([hidden])")
    assert page.get_attribute("body", "data-pending") == "2"

    page.reload()  # same participant, same session; the queue comes back from localStorage
    page.wait_for_selector('body[data-state="instructions"]')
    assert "4 of 10" in page.inner_text("#start")
    page.unroute("**/votes")
    page.wait_for_selector('body[data-pending="0"]', timeout=20_000)
    page.wait_for_selector("#offline", state="hidden")
    page.keyboard.press("Enter")
    for index in range(4, 10):
        wait_for_trial(page, index)
        page.keyboard.press("KeyL")
    page.wait_for_selector('body[data-state="done"]')

    session = RaterSession.objects.get(study=ready_study)
    sides = list(
        Vote.objects.filter(trial__session=session)
        .order_by("trial__index")
        .values_list("side", flat=True)
    )
    assert sides == ["left"] * 2 + ["right"] * 8
    assert session.trials.count() == 10
    # The dropped requests were logged by the browser; nothing else may be.
    open_page.errors[:] = [e for e in open_page.errors if "ERR_FAILED" not in e]


def test_closed_study_shows_the_reason(live_server, open_page):
    from studies.models import Study

    study = Study.objects.create(name="Not ready yet")  # a draft: no triplets
    page = open_page(rate_url(live_server, study, "test-rater-4"))
    page.wait_for_selector('body[data-state="error"]')
    assert "not open for rating" in page.inner_text("#error-text")
    # The refused session start is the only failed request.
    assert all("409" in e or "sessions" in e for e in open_page.errors), open_page.errors
    open_page.errors.clear()
