"""The study's statistics against direct computations from their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from deepfm_lib.pipeline.significance import (
    DeLongResult,
    PairedDiff,
    _grouped_auc,
    auc_bootstrap_ci,
    delong_test,
    gain_over,
    mean_sd,
    paired_difference,
)


def _sample(seed: int, n: int, *, signal: float = 1.0, decimals: int | None = 1):
    """Labels and two correlated, tie-rich model scores, as CTR models on one test set."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    y[:2], y[2:4] = 1, 0  # DeLong needs two of each class
    shared = rng.normal(size=n)
    a = signal * y + shared + 0.5 * rng.normal(size=n)
    b = 0.7 * signal * y + shared + 0.5 * rng.normal(size=n)
    if decimals is not None:
        a, b = np.round(a, decimals), np.round(b, decimals)
    return y, a, b


def _delong_by_definition(y, a, b):
    """DeLong's z and p the O(m*n) way: psi over all positive/negative pairs."""
    y = np.asarray(y).astype(bool)
    comps10, comps01, aucs = [], [], []
    for s in (a, b):
        x, z = s[y][:, None], s[~y][None, :]
        psi = (x > z) + 0.5 * (x == z)
        aucs.append(psi.mean())
        comps10.append(psi.mean(axis=1))  # V10_i
        comps01.append(psi.mean(axis=0))  # V01_j
    m, n = int(y.sum()), int((~y).sum())
    cov = np.cov(np.stack(comps10)) / m + np.cov(np.stack(comps01)) / n
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    z = (aucs[0] - aucs[1]) / math.sqrt(var)
    return aucs[0], aucs[1], z, 2 * stats.norm.sf(abs(z)), math.sqrt(var)


# --- DeLong ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("n", [12, 60, 250])
def test_delong_matches_definition_with_ties(seed: int, n: int) -> None:
    y, a, b = _sample(seed, n, signal=0.6)
    got = delong_test(y, a, b)
    auc_a, auc_b, z, p, se = _delong_by_definition(y, a, b)
    assert got.auc_a == pytest.approx(auc_a, abs=1e-12)
    assert got.auc_b == pytest.approx(auc_b, abs=1e-12)
    assert got.se == pytest.approx(se, abs=1e-12)
    assert abs(got.z - z) < 1e-10
    assert abs(got.p_value - p) < 1e-10
    assert got.difference == pytest.approx(auc_a - auc_b, abs=1e-12)
    low, high = got.ci95
    assert low == pytest.approx(got.difference - 1.959964 * got.se, abs=1e-7)
    assert high == pytest.approx(got.difference + 1.959964 * got.se, abs=1e-7)


@pytest.mark.parametrize("decimals", [0, 1, 3, None])
def test_delong_aucs_equal_sklearn(decimals: int | None) -> None:
    y, a, b = _sample(3, 2000, decimals=decimals)
    got = delong_test(y, a, b)
    assert got.auc_a == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert got.auc_b == pytest.approx(roc_auc_score(y, b), abs=1e-12)


def test_delong_accepts_bool_and_float_labels() -> None:
    y, a, b = _sample(5, 100)
    ref = delong_test(y, a, b)
    assert delong_test(y.astype(bool), a, b) == ref
    assert delong_test(y.astype(float), list(a), list(b)) == ref


def test_delong_identical_scores_give_p_one() -> None:
    y, a, _ = _sample(1, 500)
    got = delong_test(y, a, a.copy())
    assert isinstance(got, DeLongResult)
    assert (got.difference, got.se, got.z, got.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert got.ci95 == (0.0, 0.0)


def test_delong_zero_variance_with_a_difference() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    perfect = y.astype(float)
    constant = np.full(6, 0.5)
    got = delong_test(y, perfect, constant)
    assert (got.auc_a, got.auc_b, got.se) == (1.0, 0.5, 0.0)
    assert got.z == math.inf and got.p_value == 0.0


def test_delong_clearly_better_model_on_large_sample() -> None:
    y, a, b = _sample(2, 20_000, signal=1.0, decimals=None)
    rng = np.random.default_rng(0)
    worse = a + 2.0 * rng.normal(size=a.size)
    got = delong_test(y, a, worse)
    assert got.difference > 0.05
    assert got.p_value < 1e-30
    assert got.ci95[0] > 0
    swapped = delong_test(y, worse, a)
    assert swapped.z == pytest.approx(-got.z)
    assert swapped.p_value == pytest.approx(got.p_value)


@pytest.mark.parametrize(
    ("labels", "a", "b", "message"),
    [
        ([0, 1, 0, 1], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 0.4], "scores_a has 3 values"),
        ([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2], "scores_b has 2 values"),
        ([[0, 1], [0, 1]], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "labels must be 1-D"),
        ([0, 1, 0, 1], [[0.1, 0.2], [0.3, 0.4]], [0.1, 0.2, 0.3, 0.4], "scores_a must be 1-D"),
        ([0, 1, 2, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "only 0 and 1"),
        ([0, 1, -1, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "only 0 and 1"),
        (["0", "1", "0", "1"], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "only 0 and 1"),
        ([1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "4 positives and 0 neg"),
        ([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "0 positives and 4 neg"),
        ([0, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "at least 2 of each"),
        ([], [], [], "labels are empty"),
        ([0, 1, 0, 1], [0.1, np.nan, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "NaN or infinite"),
        ([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, np.inf, 0.4], "NaN or infinite"),
        ([0, 1, 0, 1], ["a", "b", "c", "d"], [0.1, 0.2, 0.3, 0.4], "real numbers"),
    ],
)
def test_delong_rejects_invalid_inputs(labels, a, b, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        delong_test(labels, a, b)


# --- bootstrap ---------------------------------------------------------------------------


def test_grouped_auc_equals_sklearn_on_resamples() -> None:
    y, a, _ = _sample(4, 3000, decimals=2)
    uniq, groups = np.unique(a, return_inverse=True)
    idx = np.random.default_rng(0).integers(0, y.size, (5, y.size))
    got = _grouped_auc(y[idx], groups[idx], uniq.size)
    want = [roc_auc_score(y[i], a[i]) for i in idx]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert float(_grouped_auc(y, groups, uniq.size)) == pytest.approx(roc_auc_score(y, a))


def test_bootstrap_contains_point_auc_and_is_deterministic() -> None:
    y, a, _ = _sample(6, 4000, decimals=2)
    low, high = auc_bootstrap_ci(y, a, n_resamples=400, seed=7)
    assert low < roc_auc_score(y, a) < high
    assert auc_bootstrap_ci(y, a, n_resamples=400, seed=7) == (low, high)
    assert auc_bootstrap_ci(y, a, n_resamples=400, seed=8) != (low, high)
    wider = auc_bootstrap_ci(y, a, n_resamples=400, seed=7, confidence=0.99)
    assert wider[0] < low and wider[1] > high


def test_bootstrap_narrows_with_more_rows() -> None:
    widths = []
    for n in (500, 5000, 40_000):
        y, a, _ = _sample(9, n, decimals=None)
        low, high = auc_bootstrap_ci(y, a, n_resamples=300, seed=0)
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    # the width shrinks roughly as 1/sqrt(n): 80x the rows, about 9x narrower
    assert 5 < widths[0] / widths[2] < 14


def test_bootstrap_rejects_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="both classes present"):
        auc_bootstrap_ci([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="scores has 2 values"):
        auc_bootstrap_ci([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="confidence"):
        auc_bootstrap_ci([0, 1, 1], [0.1, 0.2, 0.3], confidence=95)
    with pytest.raises(ValueError, match="n_resamples"):
        auc_bootstrap_ci([0, 1, 1], [0.1, 0.2, 0.3], n_resamples=0)
    with pytest.raises(ValueError, match="both classes present"):
        auc_bootstrap_ci([0], [0.5])


def test_bootstrap_is_the_stratified_percentile_interval() -> None:
    # Direct definition: resample positives and negatives separately, each to its own
    # count, take the AUC of every resample, read off the 2.5 and 97.5 percentiles.
    y, a, _ = _sample(11, 1500, decimals=2)
    rng = np.random.default_rng(3)
    pos, neg = a[y == 1], a[y == 0]
    lab = np.r_[np.ones(pos.size), np.zeros(neg.size)]
    aucs = [
        roc_auc_score(lab, np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        for _ in range(1000)
    ]
    want = np.percentile(aucs, [2.5, 97.5])
    got = auc_bootstrap_ci(y, a, n_resamples=1000, seed=0)
    # two independent Monte Carlo estimates of the same percentiles
    np.testing.assert_allclose(got, want, atol=4e-3)


def test_bootstrap_is_defined_for_a_single_positive() -> None:
    # A row bootstrap would leave out the only positive in a third of the resamples;
    # resampling by class keeps it in every one (a tiny test split of the real sample).
    y = np.zeros(40, dtype=int)
    y[0] = 1
    scores = np.linspace(0, 1, 40)
    scores[0] = 0.9
    low, high = auc_bootstrap_ci(y, scores, n_resamples=200)
    assert 0.0 <= low <= roc_auc_score(y, scores) <= high <= 1.0
    assert low < high
    assert auc_bootstrap_ci([0, 1], [0.2, 0.7]) == (1.0, 1.0)


# --- over seeds --------------------------------------------------------------------------


def test_paired_difference_matches_hand_computation() -> None:
    a = [0.8012, 0.8031, 0.7998, 0.8025, 0.8040]
    b = [0.7990, 0.8001, 0.7993, 0.8011, 0.8003]
    d = np.subtract(a, b)
    got = paired_difference(a, b)
    assert isinstance(got, PairedDiff)
    sd = np.std(d, ddof=1)
    half = stats.t.ppf(0.975, len(d) - 1) * sd / np.sqrt(len(d))
    assert got.n == 5
    assert got.mean == pytest.approx(d.mean(), abs=1e-15)
    assert got.sd == pytest.approx(sd, abs=1e-15)
    assert got.ci_low == pytest.approx(d.mean() - half, abs=1e-15)
    assert got.ci_high == pytest.approx(d.mean() + half, abs=1e-15)
    t = d.mean() / (sd / np.sqrt(len(d)))
    assert got.p_value == pytest.approx(2 * stats.t.sf(abs(t), len(d) - 1), rel=1e-9)
    narrow = paired_difference(a, b, confidence=0.8)
    assert got.ci_low < narrow.ci_low < narrow.ci_high < got.ci_high


def test_paired_difference_single_seed_is_nan() -> None:
    got = paired_difference([0.80], [0.79])
    assert got.n == 1 and got.mean == pytest.approx(0.01)
    assert all(math.isnan(v) for v in (got.sd, got.ci_low, got.ci_high, got.p_value))


def test_paired_difference_constant_differences() -> None:
    same = paired_difference([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert (same.mean, same.sd, same.ci_low, same.ci_high, same.p_value) == (0, 0, 0, 0, 1)
    shifted = paired_difference([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])
    assert (shifted.mean, shifted.sd, shifted.p_value) == (1.0, 0.0, 0.0)


def test_paired_difference_rejects_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="a has 3 values but b has 2"):
        paired_difference([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="empty"):
        paired_difference([], [])
    with pytest.raises(ValueError, match="finite"):
        paired_difference([1, math.nan], [1, 2])


def test_mean_sd() -> None:
    values = [0.801, 0.803, 0.799, 0.806]
    mean, sd = mean_sd(values)
    assert mean == pytest.approx(np.mean(values))
    assert sd == pytest.approx(np.std(values, ddof=1))
    one = mean_sd([0.8])
    assert one[0] == 0.8 and math.isnan(one[1])
    with pytest.raises(ValueError, match="non-empty"):
        mean_sd([])


def test_gain_over() -> None:
    assert gain_over(0.8007, 0.7686) == pytest.approx((0.8007 - 0.7686) / 0.7686 * 100)
    assert gain_over(0.75, 0.75) == 0.0
    assert gain_over(0.7, 0.8) < 0
    with pytest.raises(ValueError, match="positive"):
        gain_over(0.8, 0.0)
