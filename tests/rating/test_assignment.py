"""The assignment engine: practice, sentinels, repeats, left/right balance, leases, closing."""

import uuid
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from rating import assignment, services
from rating.models import RaterSession, Trial, Vote
from rating.selectors import voted_triplets
from studies import screening
from studies.models import Study, Triplet

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _sweep_on_every_start(settings):
    """Leases are swept on each session start here, not every 20 s as in production."""
    settings.TWOAFC_LEASE_SWEEP_S = 0


def arrive(study, who=None, tab="tab-1", **market):
    return services.start_session(
        study, services.Arrival(participant_id=who, tab_id=tab, market=market or None)
    )


def answer(session, trial, side="left", tab="tab-1"):
    return services.record_vote(
            session.token, index=trial.index, triplet_id=trial.triplet_id, side=side,
        client_id=uuid.uuid4(), rt_ms=900, tab_id=tab,
    )  # fmt: skip


def answer_all(session, side_of=lambda trial: "left"):
    for trial in session.trials.order_by("index"):
        answer(session, trial, side_of(trial))


def test_practice_comes_first_and_never_counts(ready_study):
    session = arrive(ready_study, "p1")
    kinds = list(session.trials.order_by("index").values_list("kind", flat=True))
    assert kinds[:2] == ["practice", "practice"] and kinds[2:] == ["regular"] * 10
    assert sum(Triplet.objects.values_list("assigned", flat=True)) == 10
    answer_all(session)
    counted = sum(t.n_p0 + t.n_p1 for t in voted_triplets(ready_study))
    assert counted == 10  # the 2 practice votes are stored but not counted


def test_sentinels_show_the_reference_and_repeats_swap_sides(ready_study):
    Study.objects.filter(pk=ready_study.pk).update(
        sentinel_rate=0.2, repeat_rate=0.2, practice_trials=0
    )
    ready_study.refresh_from_db()
    session = arrive(ready_study, "p1")
    trials = list(
        session.trials.select_related("triplet__patch", "triplet__p0", "triplet__p1").order_by(
            "index"
        )
    )
    sentinels = [t for t in trials if t.kind == "sentinel"]
    repeats = [t for t in trials if t.kind == "repeat"]
    assert len(sentinels) == 2 and len(repeats) == 2 and len(trials) == 14
    for trial in sentinels:
        assert trial.image_on(trial.sentinel_side).name == trial.triplet.patch.image.name
        other = "right" if trial.sentinel_side == "left" else "left"
        p0, p1 = trial.triplet.p0, trial.triplet.p1
        distorted = p0 if p0.bpp <= p1.bpp else p1  # the lower rate
        assert trial.image_on(other).name == distorted.image.name
    for trial in repeats:
        (original,) = [
            t for t in trials if t.kind == "regular" and t.triplet_id == trial.triplet_id
        ]
        assert original.index < trial.index and original.p1_on_left != trial.p1_on_left
    assert sum(Triplet.objects.values_list("assigned", flat=True)) == 10  # extras claim nothing
    answer_all(session, side_of=lambda t: t.sentinel_side or "left")
    assert all(v.correct for v in Vote.objects.filter(trial__kind="sentinel"))


def test_each_triplet_is_shown_left_and_right_equally_across_raters(ready_study):
    Study.objects.filter(pk=ready_study.pk).update(votes_per_triplet=4, trials_per_session=18)
    ready_study.refresh_from_db()
    for who in "abcd":
        arrive(ready_study, who)
    for triplet in ready_study.triplets.all():
        sides = list(
            Trial.objects.filter(triplet=triplet, kind="regular").values_list(
                "p1_on_left", flat=True
            )
        )
        assert len(sides) == 4 and sum(sides) == 2


def test_an_idle_session_gives_its_trials_back_and_gets_them_again_on_return(ready_study):
    Study.objects.filter(pk=ready_study.pk).update(
        votes_per_triplet=1, trials_per_session=18, practice_trials=0
    )
    ready_study.refresh_from_db()
    idle = arrive(ready_study, "idle")
    answer(idle, idle.trials.get(index=0))
    with pytest.raises(services.RatingError) as full:
        arrive(ready_study, "second")
    assert full.value.reason == "full"

    RaterSession.objects.filter(pk=idle.pk).update(
        last_seen_at=timezone.now() - timedelta(minutes=31)
    )
    second = arrive(ready_study, "second")  # the idle session's 17 unanswered trials are free again
    assert second.trials.count() == 17
    assert idle.trials.filter(released=True).count() == 17
    assert set(Triplet.objects.values_list("assigned", flat=True)) == {1}

    # The idle rater comes back: nothing is left for them, so their unanswered trials go.
    returned = arrive(ready_study, "idle")
    assert returned.pk == idle.pk and returned.trials.count() == 1
    late = Trial.objects.get(session=second, index=0)
    assert not answer(second, late).late


def test_a_vote_on_a_released_trial_is_kept_and_marked_late(ready_study):
    session = arrive(ready_study, "slow")
    RaterSession.objects.filter(pk=session.pk).update(
        last_seen_at=timezone.now() - timedelta(hours=2)
    )
    assignment.release_expired_trials(ready_study)
    trial = session.trials.get(index=5)
    session.refresh_from_db()
    recorded = answer(session, trial)
    assert recorded.created and recorded.late


def test_the_study_closes_when_every_triplet_has_its_votes(ready_study):
    Study.objects.filter(pk=ready_study.pk).update(
        votes_per_triplet=1, trials_per_session=9, practice_trials=0
    )
    ready_study.refresh_from_db()
    for who in ("a", "b"):
        session = arrive(ready_study, who)
        answer_all(session)
        services.finish_session(session)
    ready_study.refresh_from_db()
    assert ready_study.status == Study.Status.COMPLETE
    with pytest.raises(services.RatingError) as late:
        arrive(ready_study, "c")
    assert (late.value.status, late.value.reason) == (410, "full")


def test_a_second_tab_is_refused_or_joined_per_study(ready_study):
    first = arrive(ready_study, "p1", tab="tab-A")
    with pytest.raises(services.RatingError) as refused:
        arrive(ready_study, "p1", tab="tab-B")
    assert refused.value.reason == "other-tab"
    assert arrive(ready_study, "p1", tab="tab-A").pk == first.pk  # a reload in the same tab resumes

    Study.objects.filter(pk=ready_study.pk).update(duplicate_policy="join")
    ready_study.refresh_from_db()
    joined = arrive(ready_study, "p1", tab="tab-B")
    assert joined.pk == first.pk and joined.active_tab == "tab-B"
    assert RaterSession.objects.count() == 1


def test_a_finished_participant_cannot_take_part_again(ready_study):
    session = arrive(ready_study, "p1")
    answer_all(session)
    services.finish_session(session)
    with pytest.raises(services.RatingError) as again:
        arrive(ready_study, "p1", tab="tab-2")
    assert again.value.reason == "completed"


def test_prolific_gets_its_completion_url_and_crowd_ids_are_never_stored(ready_study):
    session = arrive(ready_study, None, PROLIFIC_PID="5f1e0c0ffee", STUDY_ID="S1", SESSION_ID="X9")
    assert (session.market, session.market_study_id, session.market_session_id) == (
        "prolific",
        "S1",
        "X9",
    )
    assert "5f1e0c0ffee" not in str(RaterSession.objects.values().get())
    answer_all(session)
    done = services.finish_session(session)
    assert (
        done.redirect_url
        == f"https://app.prolific.com/submissions/complete?cc={ready_study.completion_code}"
    )


def lower_bpp(triplet) -> float:
    return min(triplet.p0.bpp, triplet.p1.bpp)


def session_trials(session) -> list[Trial]:
    return list(session.trials.select_related("triplet__p0", "triplet__p1").order_by("index"))


def test_the_default_design_gives_enough_sentinels_from_the_most_distorted_triplets(
    ready_study,
):
    defaults = {name: Study._meta.get_field(name).get_default()
                for name in ("trials_per_session", "sentinel_rate", "min_sentinels",
                             "qc_careful_accuracy", "qc_screen_out_alpha")}  # fmt: skip
    Study.objects.filter(pk=ready_study.pk).update(**defaults, practice_trials=0)
    ready_study.refresh_from_db()
    needed = screening.min_sentinels(
        ready_study.qc_careful_accuracy, ready_study.qc_screen_out_alpha
    )
    for who in ("p1", "p2"):
        trials = session_trials(arrive(ready_study, who))
        regular = [t for t in trials if t.kind == "regular"]
        sentinels = [t for t in trials if t.kind == "sentinel"]
        assert len(sentinels) == ready_study.sentinels_per_session(len(regular)) >= needed
        # Each sentinel shows one of the regular triplets with the lowest-rate stimuli, no
        # triplet twice while others are left.
        assert len({t.triplet_id for t in sentinels}) == min(len(sentinels), len(regular))
        lowest = sorted(lower_bpp(t.triplet) for t in regular)[: len(sentinels)]
        assert sorted(lower_bpp(t.triplet) for t in sentinels) == lowest


def test_long_sessions_get_sentinels_at_the_sentinel_rate(ready_study):
    Study.objects.filter(pk=ready_study.pk).update(
        sentinel_rate=0.5, min_sentinels=3, trials_per_session=12
    )
    ready_study.refresh_from_db()
    kinds = [t.kind for t in session_trials(arrive(ready_study, "p1"))]
    assert (kinds.count("regular"), kinds.count("sentinel")) == (12, 6)
    # A session with more sentinels than regular trials shows its triplets in turn.
    Study.objects.filter(pk=ready_study.pk).update(
        sentinel_rate=0, min_sentinels=5, trials_per_session=2
    )
    ready_study.refresh_from_db()
    short = session_trials(arrive(ready_study, "p2"))
    regular = {t.triplet_id for t in short if t.kind == "regular"}
    sentinels = Counter(t.triplet_id for t in short if t.kind == "sentinel")
    assert len(regular) == 2 and set(sentinels) == regular
    assert sorted(sentinels.values()) == [2, 3]


def test_failing_the_sentinels_gets_the_screened_out_code(ready_study):
    Study.objects.filter(pk=ready_study.pk).update(sentinel_rate=0.3)
    ready_study.refresh_from_db()
    session = arrive(ready_study, "careless")
    wrong = {"left": "right", "right": "left"}
    answer_all(session, side_of=lambda t: wrong[t.sentinel_side] if t.sentinel_side else "left")
    done = services.finish_session(session)
    assert (
        done.screened_out
        and done.code == ready_study.screened_out_code != ready_study.completion_code
    )


def test_mturk_submits_only_to_mturk(ready_study):
    session = arrive(ready_study, None, workerId="W1", assignmentId="A1", hitId="H1",
                     turkSubmitTo="https://workersandbox.mturk.com")  # fmt: skip
    answer_all(session)
    done = services.finish_session(session)
    assert (done.mturk_submit_url, done.assignment_id) == (
        "https://workersandbox.mturk.com/mturk/externalSubmit",
        "A1",
    )
    with pytest.raises(services.RatingError, match="not an MTurk address"):
        arrive(
            ready_study, None, workerId="W2", assignmentId="A2", turkSubmitTo="https://evil.example"
        )


def test_mturk_preview_shows_an_example_and_starts_nothing(client, ready_study):
    page = client.get(
        f"/rate/{ready_study.slug}/?assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE&hitId=H1"
    )
    assert page.context["preview"] is True
    assert page.context["example"]["reference"].endswith(".png")
    assert not RaterSession.objects.exists()


def test_votes_keep_the_session_alive_even_without_a_tab_id(ready_study):
    session = arrive(ready_study, "no-tab", tab="")
    stale = timezone.now() - timedelta(minutes=29)
    RaterSession.objects.filter(pk=session.pk).update(last_seen_at=stale)
    answer(session, session.trials.get(index=2), tab="")
    session.refresh_from_db()
    assert session.last_seen_at > stale + timedelta(minutes=28)
    assert assignment.release_expired_trials(ready_study) == 0


def test_a_vote_is_one_statement_until_the_heartbeat_is_due(ready_study, django_assert_num_queries):
    session = arrive(ready_study, "steady", tab="tab-1")
    trials = list(session.trials.order_by("index"))
    with django_assert_num_queries(1):  # fresh session, same tab: the INSERT says so
        answer(session, trials[0], tab="tab-1")
    stale = timezone.now() - services.HEARTBEAT - timedelta(seconds=1)
    RaterSession.objects.filter(pk=session.pk).update(last_seen_at=stale)
    with django_assert_num_queries(2):  # the heartbeat is due: one UPDATE more
        answer(session, trials[1], tab="tab-1")
    session.refresh_from_db()
    assert session.last_seen_at > stale
    with django_assert_num_queries(1):
        answer(session, trials[2], tab="tab-1")
    Study.objects.filter(pk=ready_study.pk).update(duplicate_policy=Study.DuplicatePolicy.JOIN)
    with django_assert_num_queries(2):  # another tab took over: the UPDATE notes which
        answer(session, trials[3], tab="tab-2")
    session.refresh_from_db()
    assert session.active_tab == "tab-2"
