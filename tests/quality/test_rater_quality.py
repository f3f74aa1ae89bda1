"""Quality control: measures per rater, flags with reasons, and which raters exports and fits count."""

import uuid

import pytest

from datasets.services import export_bapps
from quality import services as quality_rules
from rating import services
from rating.models import RaterSession, Trial
from rating.selectors import voted_triplets
from rating.services import refresh_quality
from studies.models import Study

pytestmark = pytest.mark.django_db


@pytest.fixture
def study(ready_study):
    Study.objects.filter(pk=ready_study.pk).update(
        sentinel_rate=0.3,
        repeat_rate=0.3,
        practice_trials=0,
        votes_per_triplet=3,
        trials_per_session=10,
    )
    ready_study.refresh_from_db()
    return ready_study


def rate(study, who, side_of, rt_ms=900.0):
    session = services.start_session(study, services.Arrival(participant_id=who, tab_id=who))
    trials = list(session.trials.order_by("index"))
    originals = {t.triplet_id: t for t in trials if t.kind == "regular"}
    for trial in trials:
        trial.original = originals.get(trial.triplet_id) if trial.kind == "repeat" else None
        services.record_vote(
            session.token, index=trial.index, triplet_id=trial.triplet_id, side=side_of(trial),
            client_id=uuid.uuid4(), rt_ms=rt_ms, tab_id=who,
        )  # fmt: skip
    services.finish_session(session)
    session.refresh_from_db()
    return session


def careful(trial):
    """Picks the reference on sentinels, and the same stimulus again on repeats."""
    if trial.sentinel_side:
        return trial.sentinel_side
    if trial.original:  # sides are swapped: the same stimulus is on the other side
        return "right" if trial.original.index % 2 else "left"
    return "left" if trial.index % 2 else "right"


def test_a_careful_rater_raises_no_flag(study):
    session = rate(study, "careful", careful)
    q = session.quality
    assert q["sentinel_accuracy"] == 1.0 and q["repeat_agreement"] == 1.0
    assert q["median_rt_ms"] == 900 and q["fast_share"] == 0
    assert session.flags == [] and not session.flagged and not session.screened_out


def test_a_careless_rater_is_flagged_with_reasons(study):
    session = rate(study, "careless", lambda trial: "left", rt_ms=120)
    reasons = session.quality["reasons"]
    assert {"median_rt_ms", "fast_share", "side_share"} <= set(session.flags)
    assert reasons["fast_share"] == "fast share 1.00 > 0.2"
    assert session.flagged


def test_flagged_raters_are_left_out_unless_an_admin_includes_them(study, tmp_path):
    rate(study, "careful", careful)
    careless = rate(study, "careless", lambda trial: "left", rt_ms=120)
    counted = lambda: sum(t.n_p0 + t.n_p1 for t in voted_triplets(study))  # noqa: E731
    assert counted() == 10
    assert sum(t.n_p0 + t.n_p1 for t in voted_triplets(study, include_flagged=True)) == 20
    info = export_bapps(study, tmp_path / "a")
    assert (info["raters"], info["counted"], info["left_out"]) == ("unflagged", 1, 1)

    RaterSession.objects.filter(pk=careless.pk).update(quality_override="include")
    assert counted() == 20
    RaterSession.objects.filter(pk=careless.pk).update(quality_override="exclude")
    Study.objects.filter(pk=study.pk).update(exclude_flagged_raters=False)
    study.refresh_from_db()
    assert counted() == 10  # excluded by hand stays excluded


def test_the_admin_lists_flagged_raters_with_the_reason(admin_client, study):
    careless = rate(study, "careless", lambda trial: "left", rt_ms=120)
    page = admin_client.get("/admin/rating/ratersession/?flagged__exact=1").content.decode()
    assert careless.rater in page and "fast share 1.00 &gt; 0.2" in page
    RaterSession.objects.filter(pk=careless.pk).update(quality={}, flags=[], flagged=False)
    admin_client.post(
        "/admin/rating/ratersession/",
        {"action": "recompute_quality", "_selected_action": [careless.pk]},
    )
    careless.refresh_from_db()
    assert careless.flagged


def test_thresholds_are_per_study(study):
    session = rate(study, "slowish", careful, rt_ms=350)
    assert session.flags == ["median_rt_ms"]
    Study.objects.filter(pk=study.pk).update(qc_min_median_rt_ms=300)
    session.study.refresh_from_db()
    assert refresh_quality(session) == {}


def test_quality_rules_name_the_trial_kinds_rating_stores():
    assert {
        quality_rules.PRACTICE, quality_rules.REGULAR, quality_rules.SENTINEL,
        quality_rules.REPEAT,
    } == set(Trial.Kind.values)  # fmt: skip
