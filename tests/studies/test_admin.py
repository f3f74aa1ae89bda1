"""Configuring a study in the admin: uploads are checked, bad input stores nothing, Generate shows progress."""

import html
import io
import os
import re
import uuid
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from studies import services
from studies.models import Condition, GenerationJob, SourceImage, Study
from tests.conftest import photo_png

pytestmark = pytest.mark.django_db


@pytest.fixture
def study():
    return Study.objects.create(name="Admin study", patches_per_image=2, crop_size=128)


def stored_files(settings) -> list[str]:
    return [name for _, _, names in os.walk(settings.MEDIA_ROOT) for name in names]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GIF87a? not really", "not an image"),
        (photo_png("astronaut")[:5000], "corrupt"),
        (b"hello, world", "not an image"),
    ],
)
def test_a_bad_upload_is_refused_and_nothing_is_stored(study, settings, data, message):
    with pytest.raises(ValidationError, match=message):
        services.add_source_image(study, data, "bad.png")
    assert not SourceImage.objects.exists()
    assert stored_files(settings) == []


def test_an_upload_over_the_pixel_limit_is_refused(study, settings):
    settings.MAX_UPLOAD_PIXELS = 100_000
    with pytest.raises(ValidationError, match="pixels"):
        services.add_source_image(study, photo_png("astronaut"), "big.png")
    assert not SourceImage.objects.exists()


def test_an_image_smaller_than_the_crop_is_refused(study):
    buffer = io.BytesIO()
    Image.new("RGB", (100, 100), "gray").save(buffer, format="PNG")
    with pytest.raises(ValidationError, match="small"):
        services.add_source_image(study, buffer.getvalue(), "small.png")


def test_the_same_image_twice_is_refused(study):
    services.add_source_image(study, photo_png("astronaut"), "a.png")
    with pytest.raises(ValidationError, match="already"):
        services.add_source_image(study, photo_png("astronaut"), "b.png")
    assert SourceImage.objects.count() == 1


def test_an_unknown_codec_is_a_clear_error():
    condition = Condition(study=Study.objects.create(name="s"), codec="bpg", level=30)
    with pytest.raises(ValidationError, match="unknown codec 'bpg'.*jpeg"):
        condition.clean()


def change_form_data(admin_client, study, conditions: list[dict]) -> dict:
    """The study's change form as the admin renders it, with ``conditions`` as new inline rows."""
    form = (
        admin_client.get(reverse("admin:studies_study_change", args=[study.pk]))
        .context["adminform"]
        .form
    )
    data = {name: form[name].value() for name in form.fields if name != "upload_images"}
    data = {name: "" if value is None else value for name, value in data.items()}
    data.update({"conditions-TOTAL_FORMS": str(len(conditions)), "conditions-INITIAL_FORMS": "0",
                 "sources-TOTAL_FORMS": "0", "sources-INITIAL_FORMS": "0"})  # fmt: skip
    for number, fields in enumerate(conditions):
        data.update({f"conditions-{number}-{name}": value for name, value in fields.items()})
    return data


def test_admin_upload_then_generate_shows_progress(
    admin_client, study, eager_celery, django_capture_on_commit_callbacks
):
    url = reverse("admin:studies_study_change", args=[study.pk])
    data = change_form_data(
        admin_client, study, [{"codec": "jpeg", "level": "20"}, {"codec": "webp", "level": "60"}]
    )
    data["upload_images"] = [io.BytesIO(photo_png("chelsea")), io.BytesIO(b"not an image")]
    data["upload_images"][0].name, data["upload_images"][1].name = "chelsea.png", "junk.png"
    response = admin_client.post(url, data, follow=True)
    assert response.status_code == 200
    # The refused file is named.
    assert "junk.png was not added: not an image" in response.content.decode()
    assert [s.name for s in study.sources.all()] == ["chelsea.png"]
    assert study.conditions.count() == 2

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:studies_study_generate", args=[study.pk]), follow=True
        )
    page = response.content.decode()
    assert "Generation started" in page
    job = GenerationJob.objects.get(study=study)
    assert (job.status, job.done, job.total) == ("done", 2, 2)
    assert (
        "Done: 2 of 2 encodes, 2 triplets ready for rating."
        in admin_client.get(url).content.decode()
    )
    assert study.triplets.count() == 2  # 2 patches × C(2, 2)


def test_generate_without_conditions_explains_why(admin_client, study):
    services.add_source_image(study, photo_png("chelsea"), "chelsea.png")
    response = admin_client.post(
        reverse("admin:studies_study_generate", args=[study.pk]), follow=True
    )
    assert "at least two codec conditions" in response.content.decode()
    assert not GenerationJob.objects.exists()


def test_admin_configures_codecs_at_target_bitrates(admin_client, study):
    url = reverse("admin:studies_study_change", args=[study.pk])
    data = change_form_data(admin_client, study, [
        {"codec": "avif", "target_bpp": "0.4"},
        {"codec": "heic", "target_bpp": "0.4"},
        {"codec": "jpegxl", "level": "40", "target_bpp": "0.4"},
    ])  # fmt: skip
    response = admin_client.post(url, data)
    assert response.status_code == 200  # the form comes back: one condition is wrong
    assert "jpegxl: give a level or a target bpp, not both" in response.content.decode()
    data.pop("conditions-2-level")
    response = admin_client.post(url, data)
    assert response.status_code == 302
    assert sorted(study.conditions.values_list("codec", "target_bpp")) == [
        ("avif", 0.4), ("heic", 0.4), ("jpegxl", 0.4),
    ]  # fmt: skip


def test_admin_sets_the_design_display_recruiting_and_quality_settings(admin_client, study):
    url = reverse("admin:studies_study_change", args=[study.pk])
    data = change_form_data(admin_client, study, [])
    data.update({
        "practice_trials": "4", "break_every": "25", "sentinel_rate": "0.025",
        "repeat_rate": "0.05", "lease_minutes": "30", "duplicate_policy": "join",
        "display_mode": "flicker", "flicker_hz": "4", "zoom": "3",
        "consent_text": "You agree to take part.", "screened_out_code": "SCREENED1",
        "min_sentinels": "10", "qc_careful_accuracy": "0.9", "qc_screen_out_alpha": "0.05",
        "exclude_flagged_raters": "on",
    })  # fmt: skip
    assert admin_client.post(url, data).status_code == 302
    study.refresh_from_db()
    assert (study.practice_trials, study.break_every, study.sentinel_rate) == (4, 25, 0.025)
    assert (study.repeat_rate, study.lease_minutes, study.duplicate_policy) == (0.05, 30, "join")
    assert (study.display_mode, study.flicker_hz, study.zoom) == ("flicker", 4.0, 3)
    assert study.consent_text == "You agree to take part."
    assert study.screened_out_code == "SCREENED1"
    screening = (study.min_sentinels, study.qc_careful_accuracy, study.qc_screen_out_alpha)
    assert screening == (10, 0.9, 0.05) and study.exclude_flagged_raters


def test_the_admin_refuses_too_few_sentinels_for_the_screen_out_rule(admin_client, study):
    url = reverse("admin:studies_study_change", args=[study.pk])
    data = change_form_data(admin_client, study, [])
    data.update({"sentinel_rate": "0.1", "min_sentinels": "2", "trials_per_session": "20"})
    response = admin_client.post(url, data)
    assert response.status_code == 200  # the form again, with the reason on the field
    errors = response.context["adminform"].form.errors["min_sentinels"]
    assert "A session gets 2 sentinel(s)" in errors[0] and "at least 8" in errors[0]
    assert "too few for the screen-out rule" in response.content.decode()
    study.refresh_from_db()
    assert study.min_sentinels == 8  # nothing saved
    data.update({"sentinel_rate": "0", "min_sentinels": "0"})  # no sentinels: no screening
    assert admin_client.post(url, data).status_code == 302


def test_an_imported_study_shows_its_conditions_read_only(admin_client, study):
    Condition.objects.create(study=study, codec="jpeg", level=50)
    url = reverse("admin:studies_study_change", args=[study.pk])
    assert 'name="conditions-0-codec"' in admin_client.get(url).content.decode()
    Study.objects.filter(pk=study.pk).update(origin=Study.Origin.IMPORTED)
    page = admin_client.get(url).content.decode()
    assert 'name="conditions-0-codec"' not in page and "conditions-__prefix__" not in page
    assert "jpeg" in page


class _FormReader(HTMLParser):
    """What a browser sends for one form of a page: each control's name and current value.

    A select without a ``selected`` option sends its first option, as a browser does;
    unchecked boxes and file inputs send nothing.
    """

    def __init__(self, form_id: str):
        super().__init__()
        self.form_id, self.inside = form_id, False
        self.fields: list[tuple[str, str]] = []
        self._select: dict | None = None
        self._textarea: dict | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.inside = attrs.get("id") == self.form_id
        if not self.inside or "disabled" in attrs:
            return
        name = attrs.get("name")
        if tag == "input" and name:
            kind = attrs.get("type", "text")
            if kind in ("checkbox", "radio") and "checked" not in attrs:
                return
            if kind not in ("file", "submit", "button", "image", "reset"):
                self.fields.append((name, attrs.get("value", "on" if kind == "checkbox" else "")))
        elif tag == "select" and name:
            self._select = {"name": name, "first": None, "chosen": None}
        elif tag == "option" and self._select is not None:
            value = attrs.get("value", "")
            if self._select["first"] is None:
                self._select["first"] = value
            if "selected" in attrs:
                self._select["chosen"] = value
        elif tag == "textarea" and name:
            self._textarea = {"name": name, "text": ""}

    def handle_data(self, data):
        if self._textarea is not None:
            self._textarea["text"] += data

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        elif tag == "select" and self._select is not None:
            chosen = self._select["chosen"]
            value = chosen if chosen is not None else self._select["first"]
            self.fields.append((self._select["name"], value or ""))
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            # A browser drops the one newline that follows <textarea>.
            self.fields.append((self._textarea["name"], self._textarea["text"].removeprefix("\n")))
            self._textarea = None


def as_a_browser_sends(page: str, form_id: str = "study_form") -> dict:
    """The form's fields exactly as the rendered page would submit them, untouched."""
    reader = _FormReader(form_id)
    reader.feed(page)
    data: dict[str, list[str]] = {}
    for name, value in reader.fields:
        data.setdefault(name, []).append(value)
    return {name: values[0] if len(values) == 1 else values for name, values in data.items()}


def configured_study(**fields) -> Study:
    study = Study.objects.create(name="Configured", patches_per_image=2, crop_size=128, **fields)
    services.add_source_image(study, photo_png("chelsea"), "chelsea.png")
    Condition.objects.create(study=study, codec="jpeg", level=30)
    Condition.objects.create(study=study, codec="webp", target_bpp=0.8)
    return study


def test_saving_a_study_unchanged_just_works(admin_client):
    study = configured_study()
    url = reverse("admin:studies_study_change", args=[study.pk])
    data = as_a_browser_sends(admin_client.get(url).content.decode())
    assert int(data["conditions-TOTAL_FORMS"]) > 2  # blank rows to add conditions are offered
    response = admin_client.post(url, {**data, "_continue": "Save and continue editing"})
    assert response.status_code == 302, response.context["inline_admin_formsets"][0].formset.errors
    assert sorted(map(str, study.conditions.all())) == ["jpeg@30", "webp@0.8bpp"]


def test_saving_a_study_with_one_field_changed_just_works(admin_client):
    study = configured_study()
    url = reverse("admin:studies_study_change", args=[study.pk])
    data = as_a_browser_sends(admin_client.get(url).content.decode())
    response = admin_client.post(url, {**data, "votes_per_triplet": "5"})
    assert response.status_code == 302
    study.refresh_from_db()
    assert study.votes_per_triplet == 5 and study.conditions.count() == 2


def test_a_new_study_saves_with_blank_condition_rows_left_blank(admin_client):
    data = as_a_browser_sends(admin_client.get(reverse("admin:studies_study_add")).content.decode())
    data.update({"name": "Fresh", "conditions-0-codec": "jpeg", "conditions-0-level": "40"})
    assert admin_client.post(reverse("admin:studies_study_add"), data).status_code == 302
    assert [str(c) for c in Study.objects.get(name="Fresh").conditions.all()] == ["jpeg@40"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"codec": "jpeg"}, "jpeg: give a quality from 1 to 100"),
        ({"codec": "jpeg", "level": "40", "target_bpp": "0.5"}, "not both"),
        ({"level": "40"}, "Choose a codec"),
    ],
)
def test_a_half_filled_condition_row_says_what_is_missing(admin_client, row, message):
    study = configured_study()
    url = reverse("admin:studies_study_change", args=[study.pk])
    data = as_a_browser_sends(admin_client.get(url).content.decode())
    data.update({f"conditions-2-{name}": value for name, value in row.items()})
    response = admin_client.post(url, data)
    assert response.status_code == 200
    page = response.content.decode()
    assert message in page
    assert "is violated" not in page  # the bare constraint would only repeat it
    if "level" not in row:
        assert "not both" not in page


def press_generate(admin_client, study, django_capture_on_commit_callbacks) -> str:
    """Press Generate (Celery eager: the whole pipeline runs inline); the page it leads to."""
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:studies_study_generate", args=[study.pk]), follow=True
        )
    return response.content.decode()


def test_generate_on_a_finished_study_says_there_is_nothing_to_generate(
    admin_client, eager_celery, django_capture_on_commit_callbacks
):
    study = configured_study()
    press_generate(admin_client, study, django_capture_on_commit_callbacks)
    assert GenerationJob.objects.get(study=study).status == "done"
    page = press_generate(admin_client, study, django_capture_on_commit_callbacks)
    assert "Nothing new to generate" in page
    assert "0/2" not in page
    assert GenerationJob.objects.filter(study=study).count() == 1  # no empty job recorded
    study.refresh_from_db()
    assert study.status == Study.Status.READY


def test_generating_a_new_condition_counts_the_chunks_done_before(
    admin_client, eager_celery, django_capture_on_commit_callbacks
):
    study = configured_study()
    press_generate(admin_client, study, django_capture_on_commit_callbacks)
    Condition.objects.create(study=study, codec="avif", level=40)
    job = GenerationJob.objects.create(study=study)
    assert job.claim()  # as the worker's task does before it prepares
    services.prepare_generation(job.pk)
    job.refresh_from_db()
    assert (job.done, job.total) == (2, 3)  # the two earlier encodes count from the start
    page = press_generate(admin_client, study, django_capture_on_commit_callbacks)
    assert "Generation started" in page
    assert study.latest_job.progress == "3/3" and study.triplets.count() == 2 * 3


def messages_on(page: str) -> list[str]:
    """The texts of the admin's message list, as shown (markup stripped)."""
    found = re.search(r'<ul class="messagelist">(.*?)</ul>', page, re.S)
    items = re.findall(r"<li[^>]*>(.*?)</li>", found.group(1), re.S) if found else []
    return [html.unescape(re.sub(r"<[^>]+>", "", item)).strip() for item in items]


def test_refused_uploads_are_named_as_uploaded(admin_client):
    study = configured_study()
    url = reverse("admin:studies_study_change", args=[study.pk])
    data = as_a_browser_sends(admin_client.get(url).content.decode())
    files = [io.BytesIO(b"not an image"), io.BytesIO(photo_png("chelsea"))]
    files[0].name, files[1].name = "junk.png", "chelsea again.png"
    response = admin_client.post(url, {**data, "upload_images": files}, follow=True)
    shown = messages_on(response.content.decode())
    assert "junk.png was not added: not an image, or an image format Pillow cannot read." in shown
    assert "chelsea again.png was not added: this image is already in the study." in shown
    # The list of sources shows names as uploaded, too.
    assert [s.name for s in study.sources.all()] == ["chelsea.png"]


def staged_files(settings) -> list[str]:
    return [
        name
        for folder, _, names in os.walk(settings.MEDIA_ROOT)
        for name in names
        if "staged" in folder
    ]


def test_a_failed_save_keeps_the_chosen_images_until_the_save_succeeds(admin_client, settings):
    study = configured_study()
    url = reverse("admin:studies_study_change", args=[study.pk])
    data = as_a_browser_sends(admin_client.get(url).content.decode())
    files = [io.BytesIO(photo_png("coffee")), io.BytesIO(photo_png("astronaut"))]
    files[0].name, files[1].name = "Coffee Beans.png", "astronaut.png"
    response = admin_client.post(url, {**data, "patch_size": "3", "upload_images": files})
    assert response.status_code == 200  # refused: the patch size is too small
    page = response.content.decode()
    assert "Patch size must be between 8 and 512" in page
    # The browser cannot refill its file chooser: the page lists what the server kept.
    staged = re.search(r'<ul class="staged-uploads">(.*?)</ul>', page, re.S).group(1)
    assert re.findall(r"<li>(.*?)</li>", staged) == ["Coffee Beans.png", "astronaut.png"]
    assert [s.name for s in study.sources.all()] == ["chelsea.png"]  # nothing stored yet
    assert len(staged_files(settings)) >= 2

    # Fixed and sent again, as the re-shown page sends it: no file chosen this time.
    data = as_a_browser_sends(page)
    assert data["upload_images_staged"]
    response = admin_client.post(url, {**data, "patch_size": "64"})
    assert response.status_code == 302
    assert [s.name for s in study.sources.all()] == [
        "chelsea.png", "Coffee Beans.png", "astronaut.png",
    ]  # fmt: skip
    assert staged_files(settings) == []


def test_images_chosen_again_after_a_failed_save_are_added_once(admin_client):
    study = configured_study()
    url = reverse("admin:studies_study_change", args=[study.pk])
    data = as_a_browser_sends(admin_client.get(url).content.decode())

    def coffee():
        upload = io.BytesIO(photo_png("coffee"))
        upload.name = "coffee.png"
        return upload

    page = admin_client.post(url, {**data, "patch_size": "3", "upload_images": [coffee()]})
    data = as_a_browser_sends(page.content.decode())
    page = admin_client.post(url, {**data, "upload_images": [coffee()]})  # still refused
    assert page.content.decode().count("<li>coffee.png</li>") == 1
    data = as_a_browser_sends(page.content.decode())
    response = admin_client.post(url, {**data, "patch_size": "64"}, follow=True)
    assert [s.name for s in study.sources.all()] == ["chelsea.png", "coffee.png"]
    assert not [m for m in messages_on(response.content.decode()) if "not added" in m]


@pytest.mark.parametrize("token", ["../../etc", "no-such-token-0123456789", ""])
def test_a_staged_token_that_names_nothing_is_ignored(admin_client, token):
    study = configured_study()
    url = reverse("admin:studies_study_change", args=[study.pk])
    data = as_a_browser_sends(admin_client.get(url).content.decode())
    response = admin_client.post(url, {**data, "upload_images_staged": token})
    assert response.status_code == 302
    assert study.sources.count() == 1


def test_a_new_study_refused_once_keeps_its_images(admin_client):
    url = reverse("admin:studies_study_add")
    data = as_a_browser_sends(admin_client.get(url).content.decode())
    upload = io.BytesIO(photo_png("astronaut"))  # 512×512, the default crop
    upload.name = "astronaut.png"
    page = admin_client.post(url, {**data, "upload_images": [upload]})  # no name: refused
    assert page.status_code == 200 and not SourceImage.objects.exists()
    data = as_a_browser_sends(page.content.decode())
    assert admin_client.post(url, {**data, "name": "Second try"}).status_code == 302
    added = Study.objects.get(name="Second try").sources.all()
    assert [s.name for s in added] == ["astronaut.png"]


def test_images_kept_for_a_form_never_sent_again_are_discarded(settings):
    token = services.stage_uploads(None, [("a.png", b"a"), ("b.png", b"b")])
    assert [u.name for u in services.staged_uploads(token)] == ["a.png", "b.png"]
    services.discard_stale_staged()  # a day has not passed
    assert len(services.staged_uploads(token)) == 2
    services.discard_stale_staged(max_age=timedelta(0))
    assert services.staged_uploads(token) == [] and staged_files(settings) == []


def test_progress_refreshes_in_place_without_reloading_the_page(admin_client):
    study = configured_study()
    job = GenerationJob.objects.create(study=study, status="running", total=4, done=1)
    url = reverse("admin:studies_study_change", args=[study.pk])
    page = admin_client.get(url).content.decode()
    # A reload every few seconds would throw away what the admin is typing meanwhile.
    assert 'http-equiv="refresh"' not in page
    progress_url = reverse("admin:studies_study_progress", args=[study.pk])
    assert f'"{progress_url}"' in page
    state = admin_client.get(progress_url).json()
    assert 'data-active="true"' in state["generation"]
    assert "Running: 1 of 4 encodes done" in state["generation"]
    GenerationJob.objects.filter(pk=job.pk).update(status="failed", error="CodecError: no way")
    state = admin_client.get(progress_url).json()
    assert 'data-active="false"' in state["generation"]
    assert "Failed: CodecError: no way" in state["generation"]
    assert "press Generate again" in state["generation"]


def test_a_job_no_worker_takes_says_to_check_for_a_worker(admin_client):
    study = configured_study()
    job = GenerationJob.objects.create(study=study)
    progress_url = reverse("admin:studies_study_progress", args=[study.pk])
    assert "is a worker running" not in admin_client.get(progress_url).json()["generation"]
    GenerationJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=2))
    text = admin_client.get(progress_url).json()["generation"]
    assert "Queued 2\xa0minutes ago" in text and "celery -A twoafc worker -Q cpu" in text


def test_progress_is_for_staff_only(client, admin_client):
    study = configured_study()
    progress_url = reverse("admin:studies_study_progress", args=[study.pk])
    assert client.get(progress_url).status_code == 302  # to the login page
    assert admin_client.get(progress_url).status_code == 200


def test_generate_saves_the_edits_on_the_page_first(
    admin_client, eager_celery, django_capture_on_commit_callbacks
):
    study = configured_study()
    url = reverse("admin:studies_study_change", args=[study.pk])
    page = admin_client.get(url).content.decode()
    # Inside the study form, after Save: Enter in a field presses Save, not this.
    form = page[page.index('id="study_form"') :]
    form = form[: form.index("</form>")]
    assert 0 < form.index('name="_save"') < form.index('name="_generate"')
    data = as_a_browser_sends(page)
    data.update({"conditions-2-codec": "avif", "conditions-2-level": "40", "_generate": "1"})
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, data, follow=True)
    assert "Saved. Generation started" in messages_on(response.content.decode())[0]
    job = GenerationJob.objects.get(study=study)
    assert (job.status, job.done, job.total) == ("done", 3, 3)  # the new condition included


def test_a_generated_study_keeps_its_patch_geometry(
    admin_client, eager_celery, django_capture_on_commit_callbacks
):
    study = configured_study()
    url = reverse("admin:studies_study_change", args=[study.pk])
    assert 'name="patch_size"' in admin_client.get(url).content.decode()
    press_generate(admin_client, study, django_capture_on_commit_callbacks)
    page = admin_client.get(url).content.decode()
    assert 'name="patch_size"' not in page and 'name="crop_size"' not in page
    data = as_a_browser_sends(page)
    assert admin_client.post(url, {**data, "patch_size": "32"}).status_code == 302
    study.refresh_from_db()
    assert study.patch_size == 64


def test_a_condition_with_stimuli_cannot_be_changed_in_place(
    admin_client, eager_celery, django_capture_on_commit_callbacks
):
    study = configured_study()
    press_generate(admin_client, study, django_capture_on_commit_callbacks)
    url = reverse("admin:studies_study_change", args=[study.pk])
    page = admin_client.get(url).content.decode()
    assert re.search(r'<select name="conditions-\d-codec"[^>]*disabled', page)
    assert re.search(
        r'<input type="number" name="conditions-\d-level" value="30"[^>]*disabled', page
    )
    data = as_a_browser_sends(page)
    existing = ("conditions-0-", "conditions-1-")
    assert not [n for n in data if n.startswith(existing) and n.endswith(("codec", "level"))]
    # Sent anyway (a page rendered before generation), the change is ignored.
    data.update({"conditions-0-codec": "jpeg", "conditions-0-level": "80"})
    assert admin_client.post(url, data).status_code == 302
    assert study.conditions.get(codec="jpeg").level == 30


def test_a_condition_or_image_with_votes_is_not_deleted_from_the_form(
    admin_client, eager_celery, django_capture_on_commit_callbacks
):
    from rating import services as rating
    from rating.models import Vote

    study = configured_study(trials_per_session=1, practice_trials=0, sentinel_rate=0, min_sentinels=0)
    services.add_source_image(study, photo_png("astronaut"), "astronaut.png")
    Condition.objects.create(study=study, codec="avif", level=30)
    press_generate(admin_client, study, django_capture_on_commit_callbacks)
    study.refresh_from_db()
    session = rating.start_session(study, rating.Arrival(participant_id="P1"))
    trial = session.trials.get()
    rating.record_vote(session.token, index=trial.index, triplet_id=trial.triplet_id,
                       side="left", client_id=uuid.uuid4(), rt_ms=500)  # fmt: skip
    voted = trial.triplet.p0.condition

    def delete_box(prefix, item):
        row = next(n for n, v in data.items() if n.startswith(prefix) and n.endswith("-id")
                   and v == str(item.pk))  # fmt: skip
        return row.replace("-id", "-DELETE")

    url = reverse("admin:studies_study_change", args=[study.pk])
    data = as_a_browser_sends(admin_client.get(url).content.decode())
    response = admin_client.post(url, {**data, delete_box("conditions-", voted): "on"})
    assert response.status_code == 200
    assert f"{voted} cannot be deleted here: raters cast 1 votes" in response.content.decode()
    assert Vote.objects.count() == 1
    source = trial.triplet.patch.source
    response = admin_client.post(url, {**data, delete_box("sources-", source): "on"})
    assert f"{source.name} cannot be deleted here" in response.content.decode()
    # Without votes, a condition can go (with its stimuli and triplets).
    unvoted = study.conditions.exclude(
        pk__in=[trial.triplet.p0.condition_id, trial.triplet.p1.condition_id]
    ).get()
    response = admin_client.post(url, {**data, delete_box("conditions-", unvoted): "on"})
    assert response.status_code == 302
    assert not study.conditions.filter(pk=unvoted.pk).exists() and Vote.objects.count() == 1


def test_a_new_study_can_be_saved_and_generated_at_once(
    admin_client, eager_celery, django_capture_on_commit_callbacks
):
    url = reverse("admin:studies_study_add")
    data = as_a_browser_sends(admin_client.get(url).content.decode())
    upload = io.BytesIO(photo_png("astronaut"))
    upload.name = "astronaut.png"
    data.update({
        "name": "At once", "crop_size": "128", "patches_per_image": "2",
        "conditions-0-codec": "jpeg", "conditions-0-level": "20",
        "conditions-1-codec": "jpegxl", "conditions-1-target_bpp": "1.0",
        "upload_images": [upload], "_generate": "Save and generate",
    })  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, data, follow=True)
    study = Study.objects.get(name="At once")
    assert response.redirect_chain[-1][0] == reverse("admin:studies_study_change", args=[study.pk])
    assert "Saved. Generation started" in messages_on(response.content.decode())[0]
    assert study.latest_job.status == "done" and study.triplets.count() == 2


def test_an_imported_study_offers_no_generate(admin_client):
    study = configured_study()
    Study.objects.filter(pk=study.pk).update(origin=Study.Origin.IMPORTED, status="ready")
    page = admin_client.get(reverse("admin:studies_study_change", args=[study.pk])).content
    page = page.decode()
    assert 'id="generate-button"' not in page and 'name="_generate"' not in page
    assert "Imported with its stimuli" in page and "Press <b>Generate</b>" not in page
