"""Raters racing for the last trials: no triplet is ever handed out more often than it needs votes.

Real concurrent HTTP clients against the live server, on whichever database the
settings name (PostgreSQL under .ci/run, where the engine locks rows with SKIP LOCKED).
"""

import threading
from collections import Counter

import pytest
import requests

from rating.models import Trial
from studies.models import Study

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_concurrent_raters_never_overfill_a_triplet(live_server, ready_study):
    Study.objects.filter(pk=ready_study.pk).update(
        votes_per_triplet=2, trials_per_session=4, practice_trials=0
    )
    capacity = ready_study.triplets.count() * 2  # 36 regular trials in all
    raters = 40
    barrier = threading.Barrier(raters)
    answers: list[tuple[int, int]] = []
    failures: list[str] = []

    def rater(number: int) -> None:
        barrier.wait()
        try:
            response = requests.post(
                f"{live_server.url}/api/studies/{ready_study.slug}/sessions",
                json={"participant_id": f"racer-{number}", "tab_id": str(number), "consent": True},
                timeout=60,
            )
            answers.append((response.status_code, len(response.json().get("trials", []))))
        except Exception as error:  # a dropped connection or a non-JSON 500 page
            failures.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=rater, args=(n,)) for n in range(raters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    statuses = Counter(status for status, _ in answers)
    assert set(statuses) <= {201, 410}, statuses
    handed_out = sum(trials for status, trials in answers if status == 201)
    per_triplet = Counter(Trial.objects.filter(kind="regular").values_list("triplet_id", flat=True))
    assert max(per_triplet.values()) <= 2
    assert handed_out == sum(per_triplet.values()) <= capacity
    assert statuses[201] >= capacity // 4 - 1  # the pool is (nearly) used up, not starved by locks
    for triplet in ready_study.triplets.all():
        assert triplet.assigned == per_triplet.get(triplet.pk, 0)
