"""An admin's whole journey through the study admin, in Chromium, with a real Celery worker.

Create a study with conditions (one at a quality level, one at a target bitrate) and
images (once refused, with the images kept), generate it and watch the progress come in
without reloading, save it unchanged and with one field changed, add a condition and
generate again, then press Generate with nothing new. Runs on the embedded default
(SQLite, filesystem broker) or, with DATABASE_URL and REDIS_URL set, PostgreSQL and Redis.
"""

import pytest

from studies.models import GenerationJob, Study
from tests.conftest import make_study, photo_png

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

GENERATION = ".field-generation_progress .generation"


def log_in(open_page, live_server, next_path: str):
    page = open_page(f"{live_server.url}/admin/login/?next={next_path}")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_url(f"**{next_path}")
    return page


def messages(page) -> list[str]:
    return [text.strip() for text in page.locator("ul.messagelist li").all_inner_texts()]


def save_and_continue(page):
    with page.expect_navigation():
        page.click("input[name=_continue]")


def generate_and_watch(page, screenshot, name: str) -> str:
    """Press Generate, then watch the progress until it settles, without reloading the page."""
    with page.expect_navigation():
        page.click("#generate-button")
    assert any("Generation started" in text for text in messages(page)), messages(page)
    assert page.locator("input#id_patch_size").count() == 0  # geometry fixed from now on
    page.evaluate("window.stillTheSamePage = true")
    screenshot(page, f"{name}-started", full_page=False)
    page.wait_for_selector(f'{GENERATION}[data-active="false"]', timeout=90_000)
    assert page.evaluate("window.stillTheSamePage === true")  # refreshed in place
    assert messages(page) == ["Generation finished: see Progress below."]
    screenshot(page, f"{name}-finished")
    return page.inner_text(".field-generation_progress .readonly")


def test_an_admin_creates_generates_edits_and_regenerates_a_study(
    live_server, admin_user, open_page, screenshot, worker
):
    page = log_in(open_page, live_server, "/admin/studies/study/add/")
    screenshot(page, "01-add")

    # The first try is refused (a patch size of 4): the chosen images are kept and listed.
    page.fill("#id_name", "Admin journey")
    page.fill("#id_patch_size", "4")
    page.fill("#id_patches_per_image", "2")
    page.fill("#id_crop_size", "128")
    page.fill("#id_votes_per_triplet", "2")
    page.select_option("#id_conditions-0-codec", "jpeg")
    page.fill("#id_conditions-0-level", "30")
    page.select_option("#id_conditions-1-codec", "webp")
    page.fill("#id_conditions-1-target_bpp", "0.8")
    page.set_input_files("#id_upload_images", [
        {"name": "chelsea.png", "mimeType": "image/png", "buffer": photo_png("chelsea")},
        {"name": "coffee Beans.png", "mimeType": "image/png", "buffer": photo_png("coffee")},
    ])  # fmt: skip
    save_and_continue(page)
    assert page.is_visible("p.errornote")
    assert "Patch size must be between 8 and 512" in page.inner_text(".field-patch_size")
    kept = page.locator("ul.staged-uploads li").all_inner_texts()
    assert kept == ["chelsea.png", "coffee Beans.png"]
    assert not Study.objects.exists()
    screenshot(page, "02-refused-images-kept")

    page.fill("#id_patch_size", "32")
    save_and_continue(page)
    assert any("was added successfully" in text for text in messages(page)), messages(page)
    study = Study.objects.get(name="Admin journey")
    assert [s.name for s in study.sources.all()] == ["chelsea.png", "coffee Beans.png"]
    assert sorted(map(str, study.conditions.all())) == ["jpeg@30", "webp@0.8bpp"]
    assert page.locator(".field-name p").all_inner_texts()[:2] == [
        "chelsea.png",
        "coffee Beans.png",
    ]
    assert "Not started" in page.inner_text(".field-generation_progress")
    screenshot(page, "03-added")

    # Generate: a real worker process encodes; the page follows it by itself.
    text = generate_and_watch(page, screenshot, "04-generate")
    assert text == "Done: 4 of 4 encodes, 4 triplets ready for rating."  # 2 images × 2 patches
    assert page.inner_text(".field-status .readonly") == "Ready for rating"

    # Saved unchanged (Enter in a field: it saves, and does not generate), then with one
    # field changed: both just work.
    with page.expect_navigation():
        page.press("#id_name", "Enter")
    assert any("was changed successfully" in text for text in messages(page)), messages(page)
    assert GenerationJob.objects.filter(study=study).count() == 1
    screenshot(page, "05-saved-unchanged", full_page=False)  # Save leads to the list
    page.goto(f"{live_server.url}/admin/studies/study/{study.pk}/change/")
    page.fill("#id_votes_per_triplet", "5")
    save_and_continue(page)
    assert any("was changed successfully" in text for text in messages(page)), messages(page)
    study.refresh_from_db()
    assert study.votes_per_triplet == 5 and study.conditions.count() == 2

    # A new condition in a blank row; Generate saves it and encodes only what is new.
    page.select_option("#id_conditions-2-codec", "avif")
    page.fill("#id_conditions-2-level", "40")
    text = generate_and_watch(page, screenshot, "06-generate-new-condition")
    assert text == "Done: 6 of 6 encodes, 12 triplets ready for rating."
    assert sorted(map(str, study.conditions.all())) == ["avif@40", "jpeg@30", "webp@0.8bpp"]
    assert GenerationJob.objects.filter(study=study).count() == 2

    # Nothing new: Generate says so, and records no job.
    with page.expect_navigation():
        page.click("#generate-button")
    assert any(text.startswith("Saved. Nothing new to generate") for text in messages(page))
    assert page.inner_text(".field-generation_progress .readonly").startswith("Done: 6 of 6")
    assert GenerationJob.objects.filter(study=study).count() == 2
    screenshot(page, "07-nothing-to-generate", full_page=False)

    page.goto(f"{live_server.url}/admin/studies/study/")
    assert "Done: 6 of 6 encodes" in page.inner_text("#result_list")
    screenshot(page, "08-study-list", full_page=False)


def test_a_failed_generation_reads_as_what_went_wrong_and_what_to_do(
    live_server, admin_user, open_page, screenshot, workers
):
    """A GPU-queue codec on a worker that may not run it on its CPU: the job fails in the worker."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the GPU codec would run")
    worker = workers.start(TWOAFC_GPU_FALLBACK_CPU="0")
    study = make_study(photos=("astronaut",), crop_size=128, patches_per_image=2,
                       conditions=(("jpeg", 30), ("jpeg-nvjpeg", 30)))  # fmt: skip
    page = log_in(open_page, live_server, f"/admin/studies/study/{study.pk}/change/")
    with page.expect_navigation():
        page.click("#generate-button")
    page.wait_for_selector(f'{GENERATION}[data-status="failed"]', timeout=60_000)
    assert worker.poll() is None
    text = page.inner_text(".field-generation_progress .readonly")
    assert text.startswith("Failed: RuntimeError: this worker has no GPU")
    assert "press Generate again" in text
    assert page.inner_text(".field-status .readonly") == "Generation failed"
    assert messages(page) == ["Generation failed: the reason is under Progress below."]
    screenshot(page, "failed", full_page=False)
