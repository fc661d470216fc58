"""Metrics on hand-computed cases: Spearman, Kendall, RMSE, MAPE, ±10% accuracy, trimming."""

import math

import numpy as np
import pytest

from hwlat.predictors.metrics import kendall, mape, rmse, score, spearman, trim_mask, trimmed_score, within, within10


def test_spearman_one_swap_of_four():
    # d = (0, 1, 1, 0): 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_spearman_ties_use_average_ranks():
    # ranks (1.5, 1.5, 3) vs (1, 2, 3): cov 1.5, var 1.5 and 2 -> 1.5 / sqrt(3)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(1.5 / math.sqrt(3))


def test_spearman_is_rank_only_and_signed():
    x = np.array([0.1, 0.5, 0.2, 9.0])
    assert spearman(np.exp(x), x) == pytest.approx(1.0)
    assert spearman(-x, x) == pytest.approx(-1.0)


def test_kendall_one_discordant_pair_of_six():
    assert kendall([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)


def test_constant_predictions_have_no_rank_correlation():
    assert math.isnan(spearman([2, 2, 2], [1, 2, 3]))
    assert math.isnan(kendall([2, 2, 2], [1, 2, 3]))


def test_rmse_and_mape():
    assert rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(math.sqrt(4 / 3))
    assert mape([110, 90, 100], [100, 100, 100]) == pytest.approx(0.2 / 3)
    assert mape([5], [4]) == pytest.approx(0.25)


def test_within10_counts_the_boundary_and_rejects_beyond():
    # 110 and 90 are exactly 10% off (in), 89 and 111 are not
    assert within10([110, 89, 100, 111, 90], [100] * 5) == pytest.approx(3 / 5)
    assert within([1.2, 1.3], [1.0, 1.0], tol=0.25) == pytest.approx(0.5)


def test_length_mismatch_and_empty_are_errors():
    with pytest.raises(ValueError):
        spearman([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        rmse([], [])


def test_trim_drops_fastest_and_slowest_fraction():
    true = np.array([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 10.0])
    keep = trim_mask(true, 0.1)
    assert keep.sum() == 8
    assert not keep[1] and not keep[9]  # 1.0 and 10.0 dropped
    assert trim_mask(true, 0.0).all()
    assert trim_mask(np.arange(1000.0), 0.1).sum() == 800


def test_trimmed_score_ignores_the_extremes():
    true = np.arange(1.0, 11.0)
    pred = true.copy()
    pred[0], pred[-1] = 100.0, -5.0  # wildly wrong, but only on the trimmed ends
    s = trimmed_score(pred, true, 0.1)
    assert s.n == 8
    assert s.spearman == pytest.approx(1.0)
    assert s.within10 == pytest.approx(1.0)
    assert score(pred, true).spearman < 0.5
