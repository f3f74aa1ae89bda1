"""Configuring a study in the admin: uploads are checked, bad input stores nothing, Generate shows progress."""

import io
import os

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
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
    assert "junk.png: not an image" in response.content.decode().lower()
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
        "Done: 2/2 chunks" in page or "Done: 2/2 chunks" in admin_client.get(url).content.decode()
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
    assert "either a level or a target bpp" in response.content.decode()
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
