"""Flicker mode: A and B each alternate with the reference, in phase; the votes say so."""

import pytest
from rater_helpers import (
    agree_and_start,
    check_trial_images,
    plain,
    rate_url,
    session_of,
    trial_files,
    wait_for_trial,
    wait_state,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Sample what each slot shows on every animation frame for `ms` milliseconds.
SAMPLE = """(ms) => new Promise((resolve) => {
    const [left, reference, right] = document.querySelectorAll("#trial .patch > img");
    const samples = [];
    const start = performance.now();
    const step = (now) => {
        samples.push([now - start, left.src, reference.src, right.src]);
        if (now - start < ms) requestAnimationFrame(step);
        else resolve(samples);
    };
    requestAnimationFrame(step);
})"""


def test_flicker_alternates_both_sides_with_the_reference(live_server, ready_study, open_page):
    from rating.models import Trial, Vote

    # Every kind of trial, in flicker mode: 1 practice, 4 regular, 2 sentinels, 2 repeats.
    plain(
        ready_study, display_mode="flicker", flicker_hz=8.0, practice_trials=1,
        trials_per_session=4, sentinel_rate=0.5, repeat_rate=0.5,
    )  # fmt: skip
    page = open_page(rate_url(live_server, ready_study, "participant=fl-1"))
    wait_state(page, "consent")
    assert page.is_visible("#flicker-warning")
    agree_and_start(page)
    wait_for_trial(page, 0)

    trial = Trial.objects.select_related("triplet__patch").get(
        session=session_of(ready_study), index=0
    )
    left, right = trial.image_on("left").url, trial.image_on("right").url
    reference = trial.triplet.patch.image.url
    image_requests = []
    page.on(
        "request",
        lambda request: request.resource_type == "image" and image_requests.append(request.url),
    )
    samples = page.evaluate(SAMPLE, 1000)

    def shows(src, path):
        return src.endswith(path)

    phases = []
    for _, left_src, centre_src, right_src in samples:
        assert shows(centre_src, reference)  # the centre never changes
        at_reference = shows(left_src, reference)
        assert at_reference == shows(right_src, reference)  # both sides in phase
        assert at_reference or (shows(left_src, left) and shows(right_src, right))
        if not phases or phases[-1] != at_reference:
            phases.append(at_reference)
    # 8 changes a second: about 8 in one second (frames are ~16 ms apart, so allow some slack).
    assert 6 <= len(phases) - 1 <= 10, len(phases)
    assert image_requests == []  # switching never fetches: the images stay decoded

    # Every trial: three decoded, visible images, each side showing its own image or the
    # reference (whichever phase the screenshot catches), pixel for pixel.
    session = session_of(ready_study)
    trials = list(session.trials.order_by("index").values_list("kind", "sentinel_side"))
    assert sorted({kind for kind, _ in trials}) == sorted(Trial.Kind.values)
    for index, (_, sentinel_side) in enumerate(trials):
        if index == 1:
            wait_state(page, "practice-done")
            page.keyboard.press("Enter")
        wait_for_trial(page, index)
        reference_url = trial_files(session, index)[1]
        check_trial_images(
            page, session, index, alternatives={0: [reference_url], 2: [reference_url]}
        )
        side = sentinel_side or ("left" if index % 2 else "right")  # sentinels answered right
        page.keyboard.press("ArrowLeft" if side == "left" else "ArrowRight")
    wait_state(page, "debrief")
    page.keyboard.press("Enter")
    wait_state(page, "done")
    votes = Vote.objects.filter(trial__session=session_of(ready_study))
    assert votes.count() == len(trials)
    assert set(votes.values_list("display_mode", flat=True)) == {"flicker"}
