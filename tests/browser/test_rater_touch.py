"""The rater page on a phone: stacked layout, answered by tap."""

import os
from pathlib import Path

import pytest
from rater_helpers import (
    PHONE,
    plain,
    rate_url,
    session_of,
    votes_per_index,
    wait_for_trial,
    wait_state,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_session_on_a_phone_by_tap(live_server, ready_study, open_page, tmp_path):
    from rating.models import Vote

    plain(ready_study)

    page = open_page(rate_url(live_server, ready_study, "participant=phone-1"), **PHONE)
    wait_state(page, "consent")
    page.tap("#consent-agree")
    wait_state(page, "instructions")
    page.tap("#start")

    sides = ["left", "right"] * 5
    for index, side in enumerate(sides):
        wait_for_trial(page, index)
        if index == 0:
            check_stacked_layout(page, ready_study.patch_size, tmp_path)
        page.locator(f"#choose-{side}").tap()

    wait_state(page, "debrief")
    page.tap("#submit")
    wait_state(page, "done")
    assert page.inner_text("#completion-code").strip()

    session = session_of(ready_study)
    assert session.is_finished
    assert votes_per_index(session) == {index: 1 for index in range(10)}
    assert (
        list(
            Vote.objects.filter(trial__session=session)
            .order_by("trial__index")
            .values_list("side", flat=True)
        )
        == sides
    )
    assert (session.screen_w, session.screen_h, session.dpr) == (390, 844, 3.0)


def check_stacked_layout(page, size, shots_dir):
    """A above the reference above B, each at an integer number of device pixels per image pixel."""
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
    assert page.evaluate("getComputedStyle(document.querySelector('.slot kbd')).display") == "none"
    shots = Path(os.environ.get("TWOAFC_SCREENSHOT_DIR", shots_dir))
    page.screenshot(path=str(shots / "rater_phone.png"))
