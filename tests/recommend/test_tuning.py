"""Self-tuning: the held-out slice, the search and what the model endpoint reports (the December sample)."""

from __future__ import annotations

import numpy as np
import pytest

from recommend.model import Params
from recommend.tuning import Purchases, aggregate, holdout, tune
from scripts.online_retail import SAMPLE, category_for, rows
from tests.conftest import Platform
from tests.recommend.conftest import Retail

DAY = 86_400.0


@pytest.fixture(scope="module")
def december() -> Purchases:
    lines = list(rows(SAMPLE))
    return Purchases.from_rows(
        [r.customer_id for r in lines],
        [r.product_id for r in lines],
        np.array([r.occurred_at.timestamp() for r in lines]),
        categories={r.product_id: category_for(r.description) for r in lines},
    )


def blocks(*, same_time: bool, repeats: bool = False, seed: int = 1) -> Purchases:
    """A catalogue without repeats: 300 people, 6 tastes of 20 products each; each person takes 8 products of
    their taste and 2 at random, each once (`repeats`: and buys the first 3 again, a month after the last)."""
    rng = np.random.default_rng(seed)
    customers, products, times = [], [], []
    for person in range(300):
        taste = person % 6
        mine = rng.choice(20, size=8, replace=False) + 20 * taste
        others = rng.choice(np.setdiff1d(np.arange(120), mine), size=2, replace=False)
        for n, product in enumerate([*mine, *others]):
            customers.append(f"p{person}")
            products.append(f"i{product}")
            times.append(0.0 if same_time else person * 3600.0 + n * 2 * DAY)
        if repeats:
            again = times[-1] + 30 * DAY
            for product in mine[:3]:
                customers.append(f"p{person}")
                products.append(f"i{product}")
                times.append(again)
    return Purchases.from_rows(customers, products, np.array(times))


def test_occasions_count_once_and_aggregate_like_the_service() -> None:
    data = Purchases.from_rows(["a", "a", "a", "b"], ["x", "x", "x", "x"], np.array([10.0, 10.0, 50.0, 20.0]))
    assert len(data) == 3 and data.lines == 4  # the two lines at t=10 are one purchase
    pairs = aggregate(data)
    got = sorted(
        zip(pairs.customers, pairs.products, pairs.purchases.tolist(), pairs.first_at, pairs.last_at, strict=True)
    )
    assert got == [("a", "x", 2, 10.0, 50.0), ("b", "x", 1, 20.0, 20.0)]
    assert pairs.interactions == 4


def test_the_slice_is_the_latest_where_time_spreads_and_customers_come_back_else_random() -> None:
    spread = holdout(blocks(same_time=False, repeats=True))
    assert spread is not None and spread.split == "temporal"
    trained = max(spread.training.last_at)
    assert trained < spread.now  # nothing after the cut is trained on
    for flat in (blocks(same_time=True), blocks(same_time=False)):
        # one sitting, or a catalogue nobody buys twice from (whatever its timestamps): a random slice
        data = holdout(flat)
        assert data is not None and data.split == "random"
        # each (customer, product) pair is wholly on one side
        for customer, held in data.everything.items():
            assert not held & {h.product_id for h in data.histories[customer]}


def test_search_beats_the_defaults_on_a_catalogue_of_another_kind() -> None:
    data = blocks(same_time=True)
    fixed = tune(data, budget_seconds=0)
    searched = tune(data, budget_seconds=60)
    assert fixed.score is not None and searched.score is not None
    assert fixed.tried == 0 and searched.tried > 10
    assert searched.params != Params()
    # the defaults' own score is the `ease_fixed` baseline, on the same slice
    assert fixed.score.new == pytest.approx(fixed.baselines["ease_fixed"].new)
    assert searched.score.new > searched.baselines["ease_fixed"].new
    assert searched.score.new > searched.baselines["popularity"].new


def test_the_search_stops_at_its_budget(december: Purchases) -> None:
    report = tune(december, budget_seconds=0.5)
    assert report.seconds < 20  # the budget bounds the search; scoring the baselines and one last try come on top
    assert report.score is not None


async def test_the_model_reports_its_settings_and_the_baselines(platform: Platform, retail: Retail) -> None:
    async with platform.client() as admin:
        model = (await admin.get("/v1/recommend/model")).json()
    assert model["settings"]["ease_lambda"] == Params().ease_lambda  # the suite trains with no search budget
    validation = model["validation"]
    assert validation["split"] in ("temporal", "random")
    assert validation["customers"] > 0 and validation["held_out_purchases"] > 0
    assert set(validation["baselines"]) == {"popularity", "own_most_bought", "ease_fixed"}
    assert validation["score"] == validation["baselines"]["ease_fixed"]
    new = "ndcg_at_10_new_products"
    assert validation["score"][new] > validation["baselines"]["popularity"][new]
