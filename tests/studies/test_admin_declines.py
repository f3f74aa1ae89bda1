"""The study page shows how many people declined consent (the only trace they leave)."""

import pytest
from django.urls import reverse

from studies.models import Study

pytestmark = pytest.mark.django_db


def test_the_study_page_shows_the_declined_count(admin_client):
    study = Study.objects.create(name="Declines", declined_count=3)
    page = admin_client.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    assert "Declined consent" in page and "3 (a count: nothing else of them is stored)" in page
    assert "twoafc administration" in page
