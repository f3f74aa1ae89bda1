"""Per-rater quality control, with thresholds set per study.

Measures, over a session's non-practice votes:

- ``sentinel_accuracy``: share of sentinel trials where the rater picked the reference itself;
- ``repeat_agreement``: share of repeated trials (sides swapped) answered with the same stimulus;
- ``median_rt_ms`` and ``fast_share`` (share of responses faster than ``qc_fast_rt_ms``);
- ``side_share``: share of answers on the rater's more frequent side (position bias).

Sentinels decide screening out (``session_screened_out``) by the rule in
``studies.screening``: an exact binomial test that screens out a careful rater with
probability at most ``qc_screen_out_alpha``. The same test raises the
``sentinel_accuracy`` flag. The other measures only flag a session for review, and only
with enough data for a careful rater to be flagged rarely (``MIN_TRIALS``).
Flagged raters are left out of exports and fits when the study says so; an admin
can include or exclude any rater by hand (``RaterSession.quality_override``).

These are rules over plain data (``AnsweredTrial``): reading a session's trials and storing
its measures is ``rating``'s (``rating.selectors.session_trials``,
``rating.services.refresh_quality``), so this app sits below ``rating`` and imports none of it.
"""

import statistics
from dataclasses import dataclass

from studies.models import Study
from studies.screening import screen_out_cutoff, screens_out

# The fewest trials (repeats for repeat agreement, votes for the rest) before a review flag
# can be raised, so that a careful rater is rarely flagged by chance (they are left out of
# exports by default). At these minimums with the default thresholds: a rater who agrees
# with themselves on 75% of repeats is flagged with probability 0.02 (agreement below 0.5
# in 10 repeats); one with 5% of responses too fast, 0.012 (more than 2 in 10); one with
# no side preference, 0.002 (all 10 on one side). Sentinels need no entry: the screen-out
# rule's binomial test holds for any number of them.
MIN_TRIALS = {
    "repeat_agreement": 10,
    "median_rt_ms": 10,
    "fast_share": 10,
    "side_share": 10,
}


# Trial kinds, as ``rating.models.Trial.Kind`` stores them.
PRACTICE, REGULAR, SENTINEL, REPEAT = "practice", "regular", "sentinel", "repeat"


@dataclass(frozen=True)
class AnsweredTrial:
    """One trial of a session as the measures see it; ``side`` is None while unanswered."""

    pk: int
    kind: str
    sentinel_side: str
    triplet_id: int
    side: str | None
    chose_p1: bool | None
    rt_ms: float | None


def measure(study: Study, trials: list[AnsweredTrial]) -> dict:
    """The quality measures over the answered, non-practice trials."""
    votes = [t for t in trials if t.side is not None and t.kind != PRACTICE]
    sentinels = [t for t in votes if t.kind == SENTINEL]
    correct = sum(t.side == t.sentinel_side for t in sentinels)
    # A repeat's original is the regular trial of the same triplet (one per session).
    chose_p1 = {t.triplet_id: t.chose_p1 for t in votes if t.kind == REGULAR}
    repeats = [t for t in votes if t.kind == REPEAT and t.triplet_id in chose_p1]
    rts = [t.rt_ms for t in votes]
    left = sum(t.side == "left" for t in votes)
    return {
        "votes": len(votes),
        "sentinels": len(sentinels),
        "sentinels_correct": correct,
        "sentinel_accuracy": _share(correct, len(sentinels)),
        "repeats": len(repeats),
        "repeat_agreement": _share(
            sum(t.chose_p1 == chose_p1[t.triplet_id] for t in repeats), len(repeats)
        ),
        "median_rt_ms": statistics.median(rts) if rts else None,
        "fast_share": _share(sum(rt < study.qc_fast_rt_ms for rt in rts), len(rts)),
        "side_share": _share(max(left, len(votes) - left), len(votes)),
    }


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def session_screened_out(study: Study, quality: dict) -> bool:
    """Whether a session's sentinel answers screen it out (``studies.screening.screens_out``
    with the study's careful accuracy and false screen-out rate)."""
    return screens_out(
        quality["sentinels_correct"], quality["sentinels"],
        study.qc_careful_accuracy, study.qc_screen_out_alpha,
    )  # fmt: skip


def flags_for(study: Study, quality: dict) -> dict[str, str]:
    """The measures outside the study's thresholds, each with a readable reason.

    ``sentinel_accuracy`` is flagged exactly when the session is screened out."""
    reasons = {}
    if session_screened_out(study, quality):
        most = screen_out_cutoff(
            quality["sentinels"], study.qc_careful_accuracy, study.qc_screen_out_alpha
        )
        reasons["sentinel_accuracy"] = (
            f"sentinels {quality['sentinels_correct']}/{quality['sentinels']} right "
            f"(screened out at {most} or fewer)"
        )
    counts = {
        "repeat_agreement": quality["repeats"],
        "median_rt_ms": quality["votes"],
        "fast_share": quality["votes"],
        "side_share": quality["votes"],
    }
    limits = {
        "repeat_agreement": (study.qc_min_repeat_agreement, "min"),
        "median_rt_ms": (study.qc_min_median_rt_ms, "min"),
        "fast_share": (study.qc_max_fast_share, "max"),
        "side_share": (study.qc_max_side_share, "max"),
    }
    for name, (limit, kind) in limits.items():
        value = quality[name]
        if value is None or counts[name] < MIN_TRIALS[name]:
            continue
        if (kind == "min" and value < limit) or (kind == "max" and value > limit):
            sign = "<" if kind == "min" else ">"
            reasons[name] = f"{name.replace('_', ' ')} {value:.2f} {sign} {limit:g}"
    return reasons


def quality_fields(study: Study, trials: list[AnsweredTrial]) -> dict:
    """The RaterSession fields that hold its measures and flags."""
    quality = measure(study, trials)
    reasons = flags_for(study, quality)
    return {"quality": {**quality, "reasons": reasons}, "flags": sorted(reasons),
            "flagged": bool(reasons)}  # fmt: skip
