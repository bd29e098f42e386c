"""bnkit.stats: skewness against SciPy's definition written out, spreads, the seed-comparison rule."""

import numpy as np
import pytest

from bnkit.stats import Spread, compare, skewness, spread


def test_skewness_matches_the_third_standardized_moment(rng):
    a = rng.gamma(2.0, size=(500, 3))
    m = a.mean(0)
    expected = ((a - m) ** 3).mean(0) / ((a - m) ** 2).mean(0) ** 1.5
    np.testing.assert_allclose(skewness(a), expected, rtol=1e-12)
    assert np.all(skewness(a) > 0.5)            # a gamma(2) sample is right-skewed (2/sqrt(2))


def test_skewness_of_an_affine_map_changes_only_by_the_sign_of_the_scale(rng):
    a = rng.exponential(size=(200, 4))
    gamma = np.array([2.0, -3.0, 0.5, -0.1])
    np.testing.assert_allclose(skewness(gamma * a + 7.0), np.sign(gamma) * skewness(a), rtol=1e-9)


def test_skewness_along_another_axis(rng):
    a = rng.exponential(size=(3, 300))
    np.testing.assert_allclose(skewness(a, axis=1), skewness(a.T, axis=0), rtol=1e-12)


def test_spread_mean_std_min_max_and_format():
    s = spread([1.0, 2.0, 4.0])
    assert isinstance(s, Spread) and s.n == 3
    assert s.mean == pytest.approx(7 / 3)
    assert s.std == pytest.approx(np.std([1, 2, 4], ddof=1))
    assert (s.min, s.max) == (1.0, 4.0)
    assert format(s, ".1f") == "2.3 ± 1.5"
    assert s.range(".0f") == "1–4"
    assert spread([5.0]).std == 0.0


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [float("inf")]])
def test_spread_refuses_empty_or_non_finite(bad):
    with pytest.raises(ValueError, match="spread"):
        spread(bad)


@pytest.mark.parametrize("a, b, expected", [
    ([3, 4, 5], [1, 2, 2.9], "above"),
    ([1, 2, 2.9], [3, 4, 5], "below"),
    ([1, 3], [2, 4], "indistinguishable"),
    ([1, 2], [2, 3], "indistinguishable"),        # touching ranges do not separate
])
def test_compare_orders_only_separated_ranges(a, b, expected):
    assert compare(a, b) == expected


def test_chance_of_separating_two_equal_settings_is_as_documented():
    # 3 seeds each: 2 of the C(6, 3) = 20 splits of six exchangeable values separate them.
    rng = np.random.default_rng(0)
    draws = rng.standard_normal((20000, 6))
    separated = np.mean([compare(d[:3], d[3:]) != "indistinguishable" for d in draws])
    assert separated == pytest.approx(2 / 20, abs=0.01)
