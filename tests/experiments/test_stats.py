"""The report's statistics, without SciPy in the gateway, agree with SciPy's."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from gateway.experiment_stats import student_t_quantile, student_t_two_sided_p, two_proportions, welch


@pytest.mark.parametrize("t, df", [(0.5, 3), (2.1, 10.5), (1.96, 1000), (4.0, 2), (0.01, 50_000), (3.0, 1e6)])
def test_student_t_tail(t: float, df: float) -> None:
    assert math.isclose(student_t_two_sided_p(t, df), 2 * stats.t.sf(t, df), rel_tol=1e-6, abs_tol=1e-10)


@pytest.mark.parametrize("df", [2, 5.5, 30, 1000, 1e8])
def test_student_t_quantile(df: float) -> None:
    assert math.isclose(student_t_quantile(0.975, df), stats.t.ppf(0.975, df), rel_tol=1e-6)


def test_two_proportions_against_scipy() -> None:
    lift = two_proportions(331, 1520, 300, 1480)
    assert lift is not None
    p_t, p_h = 331 / 1520, 300 / 1480
    pooled = (331 + 300) / 3000
    z = (p_t - p_h) / math.sqrt(pooled * (1 - pooled) * (1 / 1520 + 1 / 1480))
    assert math.isclose(lift.p_value or 0, 2 * stats.norm.sf(abs(z)), rel_tol=1e-9)
    se = math.sqrt(p_t * (1 - p_t) / 1520 + p_h * (1 - p_h) / 1480)
    assert math.isclose(lift.ci95[0], p_t - p_h - 1.959963984540054 * se, rel_tol=1e-9)
    assert two_proportions(0, 0, 1, 10) is None
    assert (two_proportions(0, 10, 0, 10) or pytest.fail()).p_value == 1.0


def test_welch_against_scipy() -> None:
    treatment = [0.0] * 70 + [12.5, 40.0, 300.0, 7.25] * 5 + [1000.0]
    holdout = [0.0] * 80 + [10.0, 35.0, 90.0] * 6
    lift = welch(
        len(treatment),
        sum(treatment),
        sum(v * v for v in treatment),
        len(holdout),
        sum(holdout),
        sum(v * v for v in holdout),
    )
    expected = stats.ttest_ind(treatment, holdout, equal_var=False)
    assert lift is not None
    assert math.isclose(lift.p_value or 0, expected.pvalue, rel_tol=1e-6)
    low, high = expected.confidence_interval(0.95)
    assert math.isclose(lift.ci95[0], low, rel_tol=1e-6) and math.isclose(lift.ci95[1], high, rel_tol=1e-6)
    assert welch(1, 1.0, 1.0, 5, 5.0, 5.0) is None
