"""The statistics of an experiment's report, from per-arm aggregates that PostgreSQL computed.

- Repeat rate (a proportion): the difference treatment minus holdout; its 95% interval uses the unpooled
  standard error, its p-value the pooled two-proportion z-test (the textbook pair).
- Revenue per customer (skewed money, most customers at 0): Welch's unequal-variance t-test on the per-customer
  revenue, zeros included; interval from the t quantile at Welch-Satterthwaite degrees of freedom. Money is
  skewed, but each arm's mean is over thousands of customers, where the t interval holds (the A/A tests on the
  Online Retail year check the false-positive rate it gives; docs/experiments.md).

No dependency: the normal tail is `math.erfc`, Student's t tail the regularised incomplete beta function
(a continued fraction), its quantile found by bisection. Checked against SciPy in the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Lift", "normal_two_sided_p", "student_t_quantile", "student_t_two_sided_p", "two_proportions", "welch"]

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Lift:
    absolute: float
    relative: float | None
    ci95: tuple[float, float]
    p_value: float | None
    method: str

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < 0.05


def normal_two_sided_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_two_sided_p(t: float, df: float) -> float:
    if df > 1e7:
        return normal_two_sided_p(t)
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def student_t_quantile(probability: float, df: float) -> float:
    """The t value below which `probability` (> 0.5) of the distribution lies."""
    if df > 1e7:
        low, high = 0.0, 40.0
        target = 2.0 * (1.0 - probability)
        for _ in range(200):
            mid = (low + high) / 2
            low, high = (mid, high) if normal_two_sided_p(mid) > target else (low, mid)
        return (low + high) / 2
    target = 2.0 * (1.0 - probability)
    low, high = 0.0, 1.0
    while student_t_two_sided_p(high, df) > target:
        high *= 2.0
    for _ in range(200):
        mid = (low + high) / 2
        if student_t_two_sided_p(mid, df) > target:
            low = mid
        else:
            high = mid
        if high - low < 1e-12:
            break
    return (low + high) / 2


def _relative(absolute: float, base: float) -> float | None:
    return None if base == 0 else absolute / base


def two_proportions(returned_t: int, exposed_t: int, returned_h: int, exposed_h: int) -> Lift | None:
    """Treatment minus holdout of returned / exposed. None when an arm has nobody."""
    if exposed_t == 0 or exposed_h == 0:
        return None
    p_t, p_h = returned_t / exposed_t, returned_h / exposed_h
    absolute = p_t - p_h
    se = math.sqrt(p_t * (1 - p_t) / exposed_t + p_h * (1 - p_h) / exposed_h)
    pooled = (returned_t + returned_h) / (exposed_t + exposed_h)
    pooled_se = math.sqrt(pooled * (1 - pooled) * (1 / exposed_t + 1 / exposed_h))
    p_value = 1.0 if pooled_se == 0 else normal_two_sided_p(absolute / pooled_se)
    return Lift(
        absolute=absolute,
        relative=_relative(absolute, p_h),
        ci95=(absolute - Z95 * se, absolute + Z95 * se),
        p_value=p_value,
        method="two-proportion z-test (pooled), 95% interval with the unpooled standard error",
    )


def welch(n_t: int, sum_t: float, sumsq_t: float, n_h: int, sum_h: float, sumsq_h: float) -> Lift | None:
    """Treatment minus holdout of a mean, from each arm's count, sum and sum of squares. None below 2 per arm."""
    if n_t < 2 or n_h < 2:
        return None
    mean_t, mean_h = sum_t / n_t, sum_h / n_h
    var_t = max(0.0, (sumsq_t - n_t * mean_t * mean_t) / (n_t - 1))
    var_h = max(0.0, (sumsq_h - n_h * mean_h * mean_h) / (n_h - 1))
    absolute = mean_t - mean_h
    a, b = var_t / n_t, var_h / n_h
    se = math.sqrt(a + b)
    method = "Welch's t-test (unequal variances), customers without a return counted as 0"
    if se == 0:
        return Lift(absolute, _relative(absolute, mean_h), (absolute, absolute), 1.0 if absolute == 0 else 0.0, method)
    df = (a + b) ** 2 / ((a * a / (n_t - 1) if a else 0.0) + (b * b / (n_h - 1) if b else 0.0))
    t = absolute / se
    half = student_t_quantile(0.975, df) * se
    return Lift(
        absolute=absolute,
        relative=_relative(absolute, mean_h),
        ci95=(absolute - half, absolute + half),
        p_value=student_t_two_sided_p(t, df),
        method=method,
    )
