"""The rater page on a phone: stacked layout, answered by tap."""

import pytest
from rater_helpers import (
    PHONE,
    check_trial_images,
    plain,
    rate_url,
    session_of,
    votes_per_index,
    wait_for_trial,
    wait_state,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


# How each side looks: every style that could mark one of them (hover, focus, active).
LOOKS = """() => ["left", "right"].map((side) => {
    const button = document.getElementById(`choose-${side}`);
    return [button, button.querySelector(".patch"), button.querySelector(".label")].map((el) => {
        const style = getComputedStyle(el);
        return [style.borderColor, style.outline, style.boxShadow, style.backgroundColor,
                style.color, style.opacity, style.transform];
    });
})"""


def test_a_session_on_a_phone_by_tap(live_server, ready_study, open_page, screenshot):
    """Issue #11, item 4: on a phone the tapped side stayed highlighted on the next trial (a
    :hover style), the instructions spoke of keys, the column was off centre and Start was
    below the fold."""
    from rating.models import Vote

    plain(ready_study)

    page = open_page(rate_url(live_server, ready_study, "participant=phone-1"), **PHONE)
    wait_state(page, "consent")
    screenshot(page, "consent", full_page=False)
    page.tap("#consent-agree")
    wait_state(page, "instructions")
    screenshot(page, "instructions", full_page=False)
    instructions = page.inner_text("#screen-instructions")
    assert "Tap A or B" in instructions and "←" not in instructions
    # Start is in view without scrolling, and nothing covers it.
    assert page.evaluate("window.scrollY") == 0
    start = page.evaluate(
        """() => {
            const r = document.getElementById("start").getBoundingClientRect();
            const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
            return {top: r.top, bottom: r.bottom, onTop: hit && hit.id === "start"};
        }"""
    )
    assert 0 <= start["top"] and start["bottom"] <= PHONE["height"] and start["onTop"], start
    page.tap("#start")

    session = session_of(ready_study)
    sides = ["left", "right", "right", "left", "left"] * 2
    for index, side in enumerate(sides):
        wait_for_trial(page, index)
        check_trial_images(page, session, index)
        if index == 0:
            check_stacked_layout(page, ready_study.patch_size)
            assert "Tap A or B" in page.inner_text("#trial-hint")
        else:  # just after a tap on one side: both sides look exactly alike
            left, right = page.evaluate(LOOKS)
            assert left == right, (sides[index - 1], left, right)
        if index == 1:
            screenshot(page, "trial-after-a-tap", full_page=False)
        page.locator(f"#choose-{side}").tap()

    wait_state(page, "debrief")
    page.tap("#submit")
    wait_state(page, "done")
    screenshot(page, "done", full_page=False)
    assert page.inner_text("#completion-code").strip()

    assert session_of(ready_study).is_finished
    assert votes_per_index(session) == {index: 1 for index in range(10)}
    assert (
        list(
            Vote.objects.filter(trial__session=session)
            .order_by("trial__index")
            .values_list("side", flat=True)
        )
        == sides
    )
    session.refresh_from_db()
    assert (session.screen_w, session.screen_h, session.dpr) == (390, 844, 3.0)


def check_stacked_layout(page, size):
    """A above the reference above B in a centred column, each at an integer number of device
    pixels per image pixel, A and B drawn alike as buttons."""
    boxes = page.evaluate(
        """Array.from(document.querySelectorAll("#trial .patch > img"), (img) => {
            const r = img.getBoundingClientRect();
            return {x: r.x, y: r.y, width: r.width, height: r.height};
        })"""
    )
    left, reference, right = boxes
    assert left["y"] + left["height"] <= reference["y"]
    assert reference["y"] + reference["height"] <= right["y"]
    for box in boxes:
        assert box["width"] == box["height"]
        assert round(box["width"] * PHONE["device_scale_factor"]) % size == 0  # whole device pixels
        assert box["width"] >= size  # never smaller than the image
        assert 0 <= box["x"] and box["x"] + box["width"] <= PHONE["width"]
        assert 0 <= box["y"] and box["y"] + box["height"] <= PHONE["height"]
        # The column is centred on the screen.
        assert abs(box["x"] + box["width"] / 2 - PHONE["width"] / 2) <= 1, box
    assert page.evaluate("getComputedStyle(document.querySelector('.slot kbd')).display") == "none"
