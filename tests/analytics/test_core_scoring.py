"""2AFC scoring with bootstrap intervals and breakdowns; condition scales through choix."""

import numpy as np
import pytest

from analytics import scoring
from analytics.scaling import JND_PROBIT, judge_fractions, scale, scale_by
from analytics.scoring import (
    bitrate_bands,
    bootstrap_interval,
    ceiling_terms,
    codec_pairs,
    score_table,
    triplet_agreement,
)


@pytest.fixture(autouse=True)
def _media_in_tmp():
    """Override tests/conftest.py's autouse media fixture (no Django needed here)."""
    yield


def votes(n=400, seed=0):
    """A metric whose d0 - d1 tracks a hidden quality difference that raters see with noise."""
    rng = np.random.default_rng(seed)
    diff = rng.normal(size=n)
    p1 = 1 / (1 + np.exp(-3 * diff))
    n_votes = rng.integers(1, 6, size=n)
    n_p1 = rng.binomial(n_votes, p1)
    d0 = rng.random(n)
    good = (d0 + diff, d0)  # d0 - d1 = diff: larger diff, p1 closer
    noisy = (d0 + diff + rng.normal(scale=2, size=n), d0)
    return {"good": good, "noisy": noisy}, n_votes - n_p1, n_p1


def test_per_triplet_terms_average_to_the_reference_formulas():
    distances, n_p0, n_p1 = votes()
    judge = n_p1 / (n_p0 + n_p1)
    d0, d1 = distances["good"]
    d1 = np.where(np.arange(len(d0)) % 7 == 0, d0, d1)  # some ties count 0.5
    assert triplet_agreement(d0, d1, judge).mean() == pytest.approx(
        scoring.score_2afc(d0, d1, judge), abs=1e-12
    )
    terms, defined = ceiling_terms(n_p0, n_p1)
    assert defined.sum() == ((n_p0 + n_p1) >= 2).sum()
    assert terms[defined].mean() == pytest.approx(scoring.human_ceiling(n_p0, n_p1), abs=1e-12)


def test_bootstrap_interval_is_seeded_and_has_the_expected_width():
    rng = np.random.default_rng(1)
    values = (rng.random(400) < 0.7).astype(float)
    a = bootstrap_interval(values, bootstrap=2000, seed=3)
    assert np.array_equal(a, bootstrap_interval(values, bootstrap=2000, seed=3))
    assert not np.array_equal(a, bootstrap_interval(values, bootstrap=2000, seed=4))
    low, high = a[0]
    assert low < values.mean() < high
    # Normal approximation of a proportion's interval: 2 * 1.96 * sqrt(p(1-p)/n).
    expected = 2 * 1.96 * np.sqrt(values.mean() * (1 - values.mean()) / len(values))
    assert high - low == pytest.approx(expected, rel=0.15)
    # Constant values: a zero-width interval; blocks of replicates give the same as one block.
    np.testing.assert_allclose(bootstrap_interval(np.full(50, 0.25)), [[0.25, 0.25]])


def test_bootstrap_weights_leave_out_undefined_columns():
    values = np.array([[1.0, 0.0, 123.0]])
    weights = np.array([[1.0, 1.0, 0.0]])
    low, high = bootstrap_interval(values, weights, bootstrap=500)[0]
    assert 0.0 <= low <= high <= 1.0


def test_score_table_orders_metrics_and_brackets_each_score():
    distances, n_p0, n_p1 = votes()
    table = score_table(distances, n_p0, n_p1, bootstrap=500, seed=0)
    good, noisy = table["metrics"]["good"], table["metrics"]["noisy"]
    assert good["score"] > noisy["score"] > 0.5
    for value in (good, noisy, table["human_ceiling"]):
        assert value["low"] < value["score"] < value["high"]
    judge = n_p1 / (n_p0 + n_p1)
    assert good["score"] == scoring.score_2afc(*distances["good"], judge)
    assert table["human_ceiling"]["score"] == scoring.human_ceiling(n_p0, n_p1)
    assert table["triplets"] == len(n_p0) and table["votes"] == (n_p0 + n_p1).sum()


def test_breakdowns_partition_the_triplets_and_unvoted_triplets_are_left_out():
    distances, n_p0, n_p1 = votes(300)
    n_p0[:20] = n_p1[:20] = 0
    pairs = np.array(["jpeg vs webp", "jpeg vs jpeg", "avif vs webp"])[np.arange(300) % 3]
    table = score_table(distances, n_p0, n_p1, groups={"codec_pair": pairs}, bootstrap=200)
    assert table["triplets"] == 280
    groups = table["breakdowns"]["codec_pair"]
    assert list(groups) == ["avif vs webp", "jpeg vs jpeg", "jpeg vs webp"]
    assert sum(g["triplets"] for g in groups.values()) == 280
    only = (pairs == "jpeg vs jpeg") & (n_p0 + n_p1 > 0)
    judge = n_p1[only] / (n_p0[only] + n_p1[only])
    expected = scoring.score_2afc(distances["good"][0][only], distances["good"][1][only], judge)
    assert groups["jpeg vs jpeg"]["metrics"]["good"]["score"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="no triplet"):
        score_table(distances, np.zeros(300), np.zeros(300))


def test_ceiling_without_repeated_votes_is_undefined():
    table = score_table({"m": ([0.1, 0.2], [0.2, 0.1])}, [1, 0], [0, 1], bootstrap=50)
    assert table["metrics"]["m"]["score"] == 1.0
    assert table["human_ceiling"] == {"score": None, "low": None, "high": None, "triplets": 0}


def test_labels_for_codec_pairs_and_bitrate_bands():
    assert codec_pairs(["webp", "jpeg"], ["jpeg", "jpeg"]).tolist() == [
        "jpeg vs webp",
        "jpeg vs jpeg",
    ]
    bands = bitrate_bands([0.1, 0.2, 0.9, 1.5, 3.0], [0.2, 0.4, 1.1, 2.5, 4.0])
    assert bands.tolist() == ["0-0.25 bpp", "0.25-0.5 bpp", "1-2 bpp", "2+ bpp", "2+ bpp"]
    distances = {"m": (np.zeros(4), np.ones(4))}
    labels = bitrate_bands([3, 0.1, 0.3, 1.2], [3, 0.1, 0.3, 1.2])
    table = score_table(distances, [1] * 4, [1] * 4, groups={"band": labels}, bootstrap=10)
    assert list(table["breakdowns"]["band"]) == ["0-0.25 bpp", "0.25-0.5 bpp", "1-2 bpp", "2+ bpp"]


def test_judge_fractions():
    g = judge_fractions([1, 0, 2, 0], [3, 2, 0, 0])
    np.testing.assert_allclose(g[:3], [0.75, 1.0, 0.0])
    assert np.isnan(g[3])


def test_thurstone_reads_75_percent_as_one_jnd_and_bradley_terry_its_log_odds():
    # "b" beats "a" 750 times out of 1000.
    result = scale(["a"], ["b"], [250], [750])
    assert result["b"]["thurstone_jnd"] - result["a"]["thurstone_jnd"] == pytest.approx(1, abs=0.02)
    assert result["b"]["bradley_terry"] - result["a"]["bradley_terry"] == pytest.approx(
        np.log(3), abs=0.02
    )
    assert result["b"]["wins"] == 750 and result["a"]["comparisons"] == 1000
    assert JND_PROBIT == pytest.approx(0.6745, abs=1e-4)


def test_scales_recover_the_order_of_simulated_conditions():
    rng = np.random.default_rng(0)
    quality = {"jpeg@10": -1.0, "jpeg@50": 0.5, "webp@30": 0.0, "avif@40": 1.2}
    names = list(quality)
    p0, p1, n0, n1 = [], [], [], []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            wins_b = rng.binomial(200, 1 / (1 + np.exp(quality[a] - quality[b])))
            p0.append(a), p1.append(b), n0.append(200 - wins_b), n1.append(wins_b)
    result = scale(p0, p1, n0, n1)
    truth = sorted(names, key=quality.get)
    assert sorted(names, key=lambda c: result[c]["bradley_terry"]) == truth
    assert sorted(names, key=lambda c: result[c]["thurstone_jnd"]) == truth
    assert sum(r["bradley_terry"] for r in result.values()) == pytest.approx(0, abs=1e-9)
    for c in names:
        assert result[c]["bradley_terry"] == pytest.approx(
            quality[c] - np.mean(list(quality.values())), abs=0.2
        )


def test_a_condition_that_always_wins_stays_finite_and_groups_are_scaled_apart():
    result = scale_by([7, 7, 9], ["a", "b", "a"], ["b", "c", "c"], [3, 3, 0], [0, 0, 3])
    assert list(result) == ["7", "9"]
    assert set(result["7"]) == {"a", "b", "c"} and set(result["9"]) == {"a", "c"}
    assert (
        result["7"]["a"]["bradley_terry"]
        > result["7"]["b"]["bradley_terry"]
        > result["7"]["c"]["bradley_terry"]
    )
    assert result["9"]["c"]["thurstone_jnd"] > result["9"]["a"]["thurstone_jnd"]
    assert all(
        np.isfinite(v["thurstone_jnd"]) and v["thurstone_sd"] > 0 for v in result["7"].values()
    )
