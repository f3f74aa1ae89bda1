"""The screen-out rule: when a session's sentinel answers are implausible for a careful rater.

A sentinel shows the reference itself beside a clearly distorted stimulus, so a careful
rater picks the reference nearly always. Call that rater's accuracy ``careful_accuracy``
(p_c, default 0.95). With ``answered`` sentinels (n) of which ``correct`` (k) picked the
reference, the rule is an exact one-sided binomial test::

    screen out  iff  P(X <= k) <= alpha,   X ~ Binomial(n, p_c)

``P(X <= k)`` is the p-value of the test of "accuracy >= p_c" against "accuracy < p_c"
(what ``scipy.stats.binomtest(k, n, p_c, alternative="less")`` reports).

The guarantee, by construction: a rater who answers each sentinel correctly with
probability at least p_c, independently, is screened out with probability at most
``alpha`` (default 0.01), whatever n is. Screening out happens exactly when k is at most
the cut-off ``screen_out_cutoff(n)``, and ``P(X <= cutoff) <= alpha`` for X ~ Bin(n, p_c);
a better rater only makes that less likely.

With the defaults (p_c = 0.95, alpha = 0.01) a session needs ``min_sentinels() == 8``
sentinels for the rule to screen out a random clicker (accuracy 0.5) with probability at
least 0.8: with 8 sentinels a session is screened out with 5 or fewer right (3 or more
wrong). A careful rater at exactly 0.95 is then screened out with probability 0.0058, a
random clicker with probability 0.855; one or two slips never screen anyone out.
"""

from functools import lru_cache

from scipy.stats import binom

CAREFUL_ACCURACY = 0.95
FALSE_SCREEN_OUT = 0.01
# What "enough sentinels" means: a rater answering at random is screened out at least this often.
CLICKER_ACCURACY = 0.5
POWER = 0.8
# Beyond this many sentinels per session the search for the minimum stops.
MAX_SENTINELS = 500


def sentinel_p_value(correct: int, answered: int, careful_accuracy: float) -> float:
    """P(X <= correct) for X ~ Binomial(answered, careful_accuracy): how unlikely so few right
    answers are for a careful rater (1.0 when nothing was answered)."""
    return float(binom.cdf(correct, answered, careful_accuracy)) if answered else 1.0


def screens_out(
    correct: int,
    answered: int,
    careful_accuracy: float = CAREFUL_ACCURACY,
    alpha: float = FALSE_SCREEN_OUT,
) -> bool:
    """The rule: whether ``correct`` right answers out of ``answered`` sentinels screen a
    session out, i.e. whether the one-sided binomial p-value is at most ``alpha``.

    A rater whose accuracy on sentinels is at least ``careful_accuracy`` is screened out with
    probability at most ``alpha``, for any number of sentinels; with too few sentinels no
    answers at all screen out (with the defaults, fewer than 2: P(0 of 1) = 0.05 > 0.01).
    """
    return answered > 0 and sentinel_p_value(correct, answered, careful_accuracy) <= alpha


@lru_cache(maxsize=4096)
def screen_out_cutoff(answered: int, careful_accuracy: float, alpha: float) -> int:
    """The most right answers out of ``answered`` sentinels that still screen out; -1 when
    even none right does not (too few sentinels for the rule to screen anyone out)."""
    if answered <= 0:
        return -1
    # ppf is the smallest k with cdf(k) >= alpha; step to the largest k with cdf(k) <= alpha,
    # checking with the same cdf the rule uses so the two never disagree at the boundary.
    cutoff = int(binom.ppf(alpha, answered, careful_accuracy))
    while cutoff >= 0 and not screens_out(cutoff, answered, careful_accuracy, alpha):
        cutoff -= 1
    while cutoff < answered and screens_out(cutoff + 1, answered, careful_accuracy, alpha):
        cutoff += 1
    return cutoff


def screen_out_probability(
    answered: int,
    accuracy: float,
    careful_accuracy: float = CAREFUL_ACCURACY,
    alpha: float = FALSE_SCREEN_OUT,
) -> float:
    """Exactly how likely a rater right with probability ``accuracy`` on each of ``answered``
    sentinels is to be screened out: P(K <= cutoff) for K ~ Binomial(answered, accuracy)."""
    cutoff = screen_out_cutoff(answered, careful_accuracy, alpha)
    return float(binom.cdf(cutoff, answered, accuracy)) if cutoff >= 0 else 0.0


@lru_cache(maxsize=256)
def min_sentinels(
    careful_accuracy: float = CAREFUL_ACCURACY,
    alpha: float = FALSE_SCREEN_OUT,
    power: float = POWER,
    clicker_accuracy: float = CLICKER_ACCURACY,
) -> int:
    """The fewest sentinels per session from which on a random clicker is screened out with
    probability at least ``power`` (8 with the defaults).

    The power is not monotone in the number of sentinels (the cut-off moves in whole
    answers: 9 sentinels give 0.91, 10 give 0.83), so this is the smallest n such that every
    session of n up to ``MAX_SENTINELS`` sentinels has the power, not merely n itself: a
    session may get more than the minimum. Raises ValueError when no such n exists.
    """
    if not clicker_accuracy < careful_accuracy < 1 or not 0 < alpha < 1:
        raise ValueError("Need clicker accuracy < careful accuracy < 1 and 0 < alpha < 1.")
    found = None
    for answered in range(MAX_SENTINELS, 0, -1):
        if screen_out_probability(answered, clicker_accuracy, careful_accuracy, alpha) < power:
            break
        found = answered
    if found is None:
        raise ValueError(
            f"Even {MAX_SENTINELS} sentinels do not screen out a rater right "
            f"{clicker_accuracy:g} of the time with probability {power:g}."
        )
    return found
