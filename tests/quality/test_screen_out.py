"""The screen-out rule: careful raters are screened out at most α of the time, random clickers
mostly are, and a study's default design has enough sentinels for that."""

import random
import uuid

import pytest
from django.core.exceptions import ValidationError
from scipy.stats import binom, binomtest

from quality.services import MIN_TRIALS, flags_for
from rating import services
from rating.models import Trial, Vote
from studies import screening
from studies.models import Study

# (careful accuracy, α) combinations the guarantee is checked for, the defaults first.
SETTINGS = [(0.95, 0.01), (0.9, 0.01), (0.95, 0.05), (0.98, 0.001), (0.8, 0.05), (0.99, 0.01)]
# The fields that shape a session and decide screening out, at the model's defaults.
DESIGN = ("trials_per_session", "practice_trials", "sentinel_rate", "min_sentinels",
          "repeat_rate")  # fmt: skip


def default_design() -> dict:
    """The Study model's defaults for the session design and every quality-control setting."""
    return {
        field.name: field.get_default()
        for field in Study._meta.fields
        if field.name in DESIGN or field.name.startswith("qc_")
    }


def screened_out_exactly(answered: int, accuracy: float, careful: float, alpha: float) -> float:
    """P(screened out), summing the binomial over every number of right answers the rule refuses."""
    return sum(
        binom.pmf(correct, answered, accuracy)
        for correct in range(answered + 1)
        if screening.screens_out(correct, answered, careful, alpha)
    )


def test_the_defaults_are_stated_and_consistent():
    design = default_design()
    assert (design["qc_careful_accuracy"], design["qc_screen_out_alpha"]) == (0.95, 0.01)
    assert screening.min_sentinels() == design["min_sentinels"] == 8
    assert Study(**design).sentinels_per_session() >= screening.min_sentinels()
    # With 8 sentinels: 5 or fewer right screens out (3 or more wrong).
    assert screening.screen_out_cutoff(8, 0.95, 0.01) == 5
    assert screening.screen_out_probability(8, 0.95) == pytest.approx(0.005788, abs=1e-6)
    assert screening.screen_out_probability(8, 0.5) == pytest.approx(0.855469, abs=1e-6)


@pytest.mark.parametrize(("careful", "alpha"), SETTINGS)
def test_a_careful_rater_is_screened_out_at_most_alpha_of_the_time(careful, alpha):
    better = (1 + careful) / 2  # more careful still: screened out even less
    for answered in range(1, 61):
        at_careful = screened_out_exactly(answered, careful, careful, alpha)
        assert at_careful <= alpha, (answered, at_careful)
        assert screened_out_exactly(answered, better, careful, alpha) <= at_careful
        assert at_careful == pytest.approx(
            screening.screen_out_probability(answered, careful, careful, alpha), abs=1e-12
        )


@pytest.mark.parametrize(("careful", "alpha"), SETTINGS)
def test_the_minimum_of_sentinels_screens_out_a_random_clicker_at_the_stated_power(careful, alpha):
    needed = screening.min_sentinels(careful, alpha)
    # From the minimum on, every session size has the power; just below it, not.
    for answered in range(needed, needed + 80):
        assert screened_out_exactly(answered, 0.5, careful, alpha) >= screening.POWER
    assert screened_out_exactly(needed - 1, 0.5, careful, alpha) < screening.POWER


def test_the_rule_is_the_exact_one_sided_binomial_test():
    for answered, correct in ((8, 5), (8, 6), (20, 15), (3, 0), (1, 0)):
        expected = binomtest(correct, answered, 0.95, alternative="less").pvalue
        assert screening.sentinel_p_value(correct, answered, 0.95) == pytest.approx(expected)
        assert screening.screens_out(correct, answered) == (expected <= 0.01)


def test_one_or_two_slips_never_screen_out_with_the_defaults():
    for answered in range(1, 201):
        assert not screening.screens_out(answered - 1, answered)
        assert answered < 8 or not screening.screens_out(answered - 2, answered)
    assert screening.screens_out(5, 8) and not screening.screens_out(0, 1)  # too few to judge


def test_settings_with_no_powerful_design_are_refused():
    with pytest.raises(ValueError):
        screening.min_sentinels(0.5, 0.01)
    with pytest.raises(ValueError):
        screening.min_sentinels(0.95, 0)


def quality(**measures) -> dict:
    """A session's measures where nothing is out of line, with ``measures`` changed."""
    clean = {"votes": 100, "sentinels": 0, "sentinels_correct": 0, "sentinel_accuracy": None,
             "repeats": 0, "repeat_agreement": None, "median_rt_ms": 900.0, "fast_share": 0.0,
             "side_share": 0.5}  # fmt: skip
    return {**clean, **measures}


def flag_probability(measure: str, trials: int, chance: float, make) -> float:
    """Exactly how often ``measure`` flags a session of ``trials`` when each trial counts
    towards the measure with probability ``chance``; ``make(k)`` gives the measures for k."""
    study = Study(**default_design())
    return sum(
        binom.pmf(k, trials, chance)
        for k in range(trials + 1)
        if measure in flags_for(study, quality(**make(k)))
    )


def test_review_flags_wait_for_enough_data_to_spare_careful_raters():
    """At each flag's minimum of trials a careful rater is flagged 2% of the time at most:
    one agreeing with themselves on 75% of repeats, one with 5% of responses too fast, one
    with no side preference."""
    repeats, votes = MIN_TRIALS["repeat_agreement"], MIN_TRIALS["fast_share"]
    consistent = flag_probability(
        "repeat_agreement", repeats, 0.75,
        lambda k: {"repeats": repeats, "repeat_agreement": k / repeats},
    )  # fmt: skip
    fast = flag_probability(
        "fast_share", votes, 0.05, lambda k: {"votes": votes, "fast_share": k / votes}
    )
    sides = MIN_TRIALS["side_share"]
    unbiased = flag_probability(
        "side_share", sides, 0.5,
        lambda k: {"votes": sides, "side_share": max(k, sides - k) / sides},
    )  # fmt: skip
    assert consistent <= 0.02 and fast <= 0.02 and unbiased <= 0.02, (consistent, fast, unbiased)
    # One trial short of the minimum, nothing flags however bad the measure looks.
    short = Study(**default_design())
    assert flags_for(short, quality(repeats=repeats - 1, repeat_agreement=0.0)) == {}
    assert flags_for(short, quality(votes=votes - 1, fast_share=1.0, side_share=1.0,
                                    median_rt_ms=50.0)) == {}  # fmt: skip


@pytest.mark.django_db
def test_a_design_with_too_few_sentinels_is_refused():
    Study(name="default", **default_design()).full_clean()
    Study(name="none", sentinel_rate=0, min_sentinels=0).full_clean()  # no sentinels: allowed
    Study(name="by rate", sentinel_rate=0.5, min_sentinels=0, trials_per_session=20).full_clean()
    with pytest.raises(ValidationError) as refused:
        Study(name="two", sentinel_rate=0.1, min_sentinels=0, trials_per_session=20).full_clean()
    message = refused.value.message_dict["min_sentinels"][0]
    assert "gets 2 sentinel(s)" in message and "at least 8" in message and "25%" in message
    # Stricter settings need more sentinels.
    with pytest.raises(ValidationError) as stricter:
        Study(name="strict", qc_careful_accuracy=0.9).full_clean()
    assert "at least 12" in stricter.value.message_dict["min_sentinels"][0]
    for careful in (0.5, 0.51):  # chance, or so near it that no session size has the power
        with pytest.raises(ValidationError) as near_chance:
            Study(name="chance", qc_careful_accuracy=careful).full_clean()
        assert "qc_careful_accuracy" in near_chance.value.message_dict


# Through the real session path: start, votes, finish_session.


def design_study(study, **changes):
    Study.objects.filter(pk=study.pk).update(**{**default_design(), **changes})
    study.refresh_from_db()
    return study


def answer_all(session, side_of):
    """Every trial answered as ``side_of(trial)`` says, then the session finished."""
    trials = list(session.trials.order_by("index"))
    Vote.objects.bulk_create(
        Vote(trial=trial, client_id=uuid.uuid4(), side=(side := side_of(trial)),
             chose_p1=(side == "left") == trial.p1_on_left, rt_ms=900.0)
        for trial in trials
    )  # fmt: skip
    return services.finish_session(session)


def start(study, who):
    return services.start_session(study, services.Arrival(participant_id=who, tab_id=who))


@pytest.mark.django_db
@pytest.mark.parametrize(("slips", "screened"), [(1, False), (2, False), (3, True)])
def test_the_default_session_forgives_one_or_two_slips(ready_study, slips, screened):
    study = design_study(ready_study)
    session = start(study, "rater")
    sentinels = list(
        session.trials.filter(kind=Trial.Kind.SENTINEL).values_list("index", flat=True)
    )
    wrong = {"left": "right", "right": "left"}
    done = answer_all(session, lambda trial: (
        wrong[trial.sentinel_side] if trial.index in sentinels[:slips] else trial.sentinel_side
    ) if trial.kind == Trial.Kind.SENTINEL else "left")  # fmt: skip
    assert done.screened_out == screened
    assert len(sentinels) == screening.min_sentinels() == 8
    assert done.code == (study.screened_out_code if screened else study.completion_code)
    session.refresh_from_db()
    assert ("sentinel_accuracy" in session.flags) == screened


# Raters simulated per kind; their answers come from a seeded generator, so the counts
# below are the same on every run.
CAREFUL_RATERS, CLICKERS = 600, 200


@pytest.mark.django_db
def test_simulated_careful_raters_and_clickers_through_finish_session(ready_study):
    """Careful raters (right on each sentinel with probability p_c) are screened out no more
    often than α allows, within sampling error; random clickers at about the stated power."""
    # Short sessions keep the test fast: the sentinels come from min_sentinels.
    study = design_study(ready_study, trials_per_session=1, practice_trials=0,
                         votes_per_triplet=CAREFUL_RATERS + CLICKERS)  # fmt: skip
    careful, alpha = study.qc_careful_accuracy, study.qc_screen_out_alpha
    rng = random.Random(11)
    wrong = {"left": "right", "right": "left"}

    def careful_side(trial):
        if trial.kind != Trial.Kind.SENTINEL:
            return rng.choice(["left", "right"])
        return trial.sentinel_side if rng.random() < careful else wrong[trial.sentinel_side]

    screened_careful = sum(
        answer_all(start(study, f"careful-{n}"), careful_side).screened_out
        for n in range(CAREFUL_RATERS)
    )
    screened_clickers = sum(
        answer_all(
            start(study, f"clicker-{n}"), lambda t: rng.choice(["left", "right"])
        ).screened_out
        for n in range(CLICKERS)
    )
    sentinels = Trial.objects.filter(session__study=study, kind=Trial.Kind.SENTINEL).count()
    assert sentinels == (CAREFUL_RATERS + CLICKERS) * 8
    # A count this high would happen less than once in 1000 runs at a false rate of α.
    assert screened_careful <= binom.ppf(0.999, CAREFUL_RATERS, alpha), screened_careful
    power = screening.screen_out_probability(8, 0.5, careful, alpha)
    low, high = binom.ppf([0.001, 0.999], CLICKERS, power)
    assert low <= screened_clickers <= high, (screened_clickers, power * CLICKERS)
    assert screened_clickers >= binom.ppf(0.001, CLICKERS, screening.POWER)
