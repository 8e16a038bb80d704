"""A/A tests and an injected effect on the replayed Online Retail year, with the gateway's own results query and
statistics (scripts/experiment_replay.py). Everything is deterministic: the arms come from the experiment ids, the
injected returns from a hash, so a run gives the same counts every time; the bounds below are where a correct
test lands with probability 99.9%, so a failure means a broken statistic, not bad luck."""

from __future__ import annotations

import math

from scripts.experiment_replay import describe, run
from tests.conftest import Platform

EXPERIMENTS = 200


def binomial_bounds(p: float, n: int, sds: float = 3.3) -> tuple[float, float]:
    """About the 99.9% central range of a binomial count (normal approximation)."""
    sd = math.sqrt(n * p * (1 - p))
    return n * p - sds * sd, n * p + sds * sd


async def test_aa_false_positives_and_injected_effect_power(platform: Platform, database_url: str) -> None:
    figures = await run(database_url, EXPERIMENTS, lift=0.05)
    print("\n" + describe(figures))
    assert figures.customers > 3000
    low, high = binomial_bounds(0.05, EXPERIMENTS)  # about 3 to 17 of 200
    assert low <= figures.aa_significant_repeat <= high, figures
    assert low <= figures.aa_significant_revenue <= high, figures
    # the effect is found about as often as the test's power says it should be
    assert 0.6 < figures.expected_power < 0.95, figures
    low, high = binomial_bounds(figures.expected_power, EXPERIMENTS)
    assert low <= figures.injected_detected <= high, figures
