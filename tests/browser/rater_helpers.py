"""Helpers the browser tests share (fixtures are in conftest.py)."""

PHONE = {
    "width": 390,
    "height": 844,
    "has_touch": True,
    "is_mobile": True,
    "device_scale_factor": 3,
}


def rate_url(live_server, study, query=""):
    return f"{live_server.url}/rate/{study.slug}/" + (f"?{query}" if query else "")


# Checked on every animation frame: wait_for_selector polls ever more slowly (up to every
# 500 ms), which would make a session of quick answers several times slower.
def wait_state(page, state, timeout=15_000):
    page.wait_for_function(
        "(state) => document.body.dataset.state === state", arg=state, polling="raf",
        timeout=timeout,
    )  # fmt: skip


def wait_for_trial(page, index):
    """Until trial ``index`` is on screen and takes answers (shown for the minimum time)."""
    page.wait_for_function(
        """(index) => {
            const trial = document.getElementById("trial");
            return document.body.dataset.state === "trial" && trial.dataset.ready === "true"
                && trial.dataset.index === String(index);
        }""",
        arg=index,
        polling="raf",
    )


def agree_and_start(page):
    """Consent and instructions, by keyboard: each screen's button has the focus."""
    wait_state(page, "consent")
    assert page.evaluate("document.activeElement.id") == "consent-agree"
    page.keyboard.press("Enter")
    wait_state(page, "instructions")
    assert page.evaluate("document.activeElement.id") == "start"
    page.keyboard.press("Enter")


def answer(page, indexes, key="ArrowLeft"):
    for index in indexes:
        wait_for_trial(page, index)
        page.keyboard.press(key)


def session_of(study, **filters):
    from rating.models import RaterSession

    return RaterSession.objects.get(study=study, **filters)


def votes_per_index(session):
    from django.db.models import Count

    from rating.models import Vote

    rows = (
        Vote.objects.filter(trial__session=session)
        .values("trial__index")
        .annotate(n=Count("pk"))
        .order_by("trial__index")
    )
    return {row["trial__index"]: row["n"] for row in rows}


def plain(study, **fields):
    """No practice trials and no breaks (unless given): trial i is the i-th real trial.

    Answers count after 50 ms on screen rather than the default 200 ms, to keep journeys
    quick; the tests of the minimum display time ask for the default."""
    from studies.models import Study

    defaults = {"practice_trials": 0, "break_every": 0, "min_display_ms": 50}
    Study.objects.filter(pk=study.pk).update(**{**defaults, **fields})
    study.refresh_from_db()
    return study


# Each slot's <img>: where it is, whether it is decoded, and whether it is what a person sees
# at its centre (nothing covers it).
SLOTS = """() => {
    const slots = Array.from(document.querySelectorAll("#trial .patch"));
    const images = slots.map((slot) => Array.from(slot.querySelectorAll("img")));
    const flat = images.flat();
    return {
        counts: images.map((list) => list.length),
        distinct: new Set(flat).size,
        stageVisible: getComputedStyle(document.getElementById("trial")).visibility,
        images: flat.map((img) => {
            const r = img.getBoundingClientRect();
            const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
            return {
                src: new URL(img.src).pathname, complete: img.complete,
                naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
                x: r.x, y: r.y, width: r.width, height: r.height,
                visible: img.checkVisibility({opacityProperty: true, visibilityProperty: true}),
                onTop: hit === img,
            };
        }),
        viewport: [window.innerWidth, window.innerHeight],
    };
}"""


def trial_files(session, index):
    """The media paths a trial shows on the left, in the centre and on the right."""
    from rating.models import Trial

    trial = Trial.objects.select_related("triplet__patch", "triplet__p0", "triplet__p1").get(
        session=session, index=index
    )
    return [trial.image_on("left").url, trial.triplet.patch.image.url, trial.image_on("right").url]


def served_pixels(url):
    """The RGB pixels of a media file, as the server sends it (decoded with Pillow)."""
    import numpy as np
    from django.conf import settings
    from django.core.files.storage import default_storage
    from PIL import Image

    with default_storage.open(url.removeprefix(settings.MEDIA_URL)) as handle:
        return np.asarray(Image.open(handle).convert("RGB"))


def check_trial_images(page, session, index, alternatives=None):
    """The trial on screen shows three distinct <img> elements, each decoded, visible, inside
    the window, and the right file: pixel for pixel, once the screenshot of each is scaled back
    by its zoom (a whole number of device pixels per image pixel, nearest neighbour).

    ``alternatives`` maps a slot to other files it may show at the moment (flicker)."""
    import io
    import math

    import numpy as np
    from PIL import Image

    expected = trial_files(session, index)
    shown = page.evaluate(SLOTS)
    assert shown["counts"] == [1, 1, 1] and shown["distinct"] == 3, shown
    assert shown["stageVisible"] == "visible"
    width, height = shown["viewport"]
    for slot, (image, url) in enumerate(zip(shown["images"], expected, strict=True)):
        allowed = {url, *(alternatives or {}).get(slot, ())}
        assert image["src"] in allowed, (slot, image["src"], allowed)
        assert image["complete"] and image["naturalWidth"] > 0, (slot, image)
        assert image["visible"] and image["onTop"], (slot, image)
        assert 0 <= image["x"] and image["x"] + image["width"] <= width, (slot, image)
        assert 0 <= image["y"] and image["y"] + image["height"] <= height, (slot, image)
    dpr = page.evaluate("window.devicePixelRatio")
    # One screenshot of the three images in device pixels; each is cut out where it is drawn.
    x0 = math.floor(min(image["x"] for image in shown["images"]))
    y0 = math.floor(min(image["y"] for image in shown["images"]))
    x1 = math.ceil(max(image["x"] + image["width"] for image in shown["images"]))
    y1 = math.ceil(max(image["y"] + image["height"] for image in shown["images"]))
    clip = {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0}
    drawing = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB"))
    for slot, image in enumerate(shown["images"]):
        candidates = {expected[slot], *(alternatives or {}).get(slot, ())}
        files = {url: served_pixels(url) for url in candidates}
        size = next(iter(files.values())).shape[0]
        zoom = round(image["width"] * dpr / size)
        assert zoom >= 1 and abs(image["width"] * dpr - zoom * size) < 0.01, (image, dpr)
        left, top = round((image["x"] - x0) * dpr), round((image["y"] - y0) * dpr)
        drawn = drawing[top : top + zoom * size, left : left + zoom * size]
        # The centre device pixel of each image pixel's zoom × zoom block.
        scaled_back = drawn[zoom // 2 :: zoom, zoom // 2 :: zoom]
        assert any(np.array_equal(scaled_back, pixels) for pixels in files.values()), (
            f"slot {slot} of trial {index} does not show {candidates} pixel for pixel"
        )


def wait_for_loaded(page, session, indexes):
    """Until the browser has received every image of these trials (its resource timings say
    so): what was loaded ahead before a connection drops."""
    urls = sorted({url for index in indexes for url in trial_files(session, index)})
    page.wait_for_function(
        """(urls) => {
            const done = new Set(performance.getEntriesByType("resource")
                .filter((entry) => entry.responseEnd > 0)
                .map((entry) => new URL(entry.name).pathname));
            return urls.every((url) => done.has(url));
        }""",
        arg=urls,
    )


def wait_released(seconds=5):
    """Until the (only) session is held by no tab: a closed tab's beacon has arrived."""
    import time

    from rating.models import RaterSession

    deadline = time.monotonic() + seconds
    while RaterSession.objects.get().active_tab and time.monotonic() < deadline:
        time.sleep(0.05)
    assert RaterSession.objects.get().active_tab == ""
