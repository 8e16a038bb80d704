"""Choosing the model's settings from each shop's own data, at every training.

A platform serves shops it has never seen (groceries bought every week, films never bought twice), so no fixed
setting fits all. At each training :func:`tune`

1. holds out the latest slice of the history (the last 15% of purchase occasions by time) where timestamps
   spread (the median customer bought on more than one day) and customers come back for products (at least 1% of
   the (customer, product) pairs bought on several occasions), or, where either is missing (an import with one
   date, ratings given in one sitting, a catalogue nobody buys twice from), a random fifth of the (customer,
   product) pairs;
2. searches a small space of settings on it, one setting at a time from the defaults (coordinate ascent, two
   passes while the time budget lasts): first what ranks products new to the customer (EASE's λ, neighbours kept,
   how recency weighs in the item-item matrix and in the customer's history, the popularity blend), picked by
   NDCG@10 of `mode=discover` on the held-out products the customer had not bought; then what ranks buying again
   (its weight against discovery, the repeat rate's and the frequency's powers, its recency, the cut-off rate, how
   much more due a product is that sells well now), picked by NDCG@10 of `mode=mixed` on every held-out product;
3. scores the baselines on the same slice (popularity, each customer's own most bought, EASE with the fixed
   default settings), so the report says whether tuning paid;
4. and the caller retrains on everything with the chosen settings.

The search is bounded by a time budget (`RECOMMEND_TUNING_BUDGET_SECONDS`); large shops are searched on a
sample of customers and at most 2,000 EASE products. Nothing here touches the database or the web framework.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from recommend.model import (
    Bools,
    EaseCache,
    Floats,
    History,
    Ints,
    Mode,
    Model,
    Params,
    TrainingSet,
    recommend,
    train,
)

__all__ = ["Holdout", "K", "Purchases", "Report", "aggregate", "holdout", "ndcg", "ranked", "settings_dict", "tune"]

K = 10
SLICE = 0.15  # the latest share of purchase occasions held out
RANDOM_SHARE = 0.2  # without spread timestamps: this share of each customer's products
MIN_CUSTOMERS = 20
SPREAD_SECONDS = 86_400.0  # fewer customers on both sides of the time cut: the split is random instead
MIN_REPEAT_SHARE = 0.01  # fewer (customer, product) pairs bought on several occasions: a catalogue without repeats
EVAL_CUSTOMERS = 1_000
SEARCH_EASE_ITEMS = 2_000

# What ranks products new to the customer: needs retraining (cheap when only neighbours change: the EASE
# solution is cached) except the last two.
DISCOVER_SPACE: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("ease_lambda", (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)),
    ("gram_half_life_days", (0.0, 7.0, 14.0, 60.0, 365.0)),
    ("neighbours", (25, 50, 100, 300)),
    ("history_half_life_days", (30.0, 180.0, 3650.0)),
    ("popularity_blend", (0.0, 0.02, 0.05, 0.15, 0.4)),
    ("popularity_half_life_days", (7.0, 30.0, 365.0)),
)
# What ranks buying again: serving settings only (no retraining).
REPEAT_SPACE: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("buy_again_weight", (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)),
    ("rate_power", (0.0, 0.5, 1.0, 2.0)),
    ("frequency_power", (0.5, 1.0, 2.0)),
    ("repeat_half_life_days", (30.0, 120.0, 365.0, 3650.0)),
    ("min_repeat_rate", (0.0, 0.03, 0.1, 0.3)),
    ("trend_power", (0.0, 0.1, 0.25, 0.5, 1.0)),
)
RETRAIN_FIELDS = frozenset(
    {"ease_lambda", "gram_half_life_days", "neighbours", "popularity_half_life_days", "ease_max_items"}
)


@dataclass(frozen=True)
class Purchases:
    """One row per purchase occasion (customer, product, time): codes into the id lists, times in epoch seconds."""

    customer: Ints
    product: Ints
    at: Floats
    customer_ids: Sequence[str]
    product_ids: Sequence[str]
    lines: int  # the raw lines these occasions came from
    categories: Mapping[str, str] = field(default_factory=dict)
    weight: Floats | None = None  # per occasion: feedback (a detractor's order weighs less); 1 when None

    @classmethod
    def from_rows(
        cls,
        customers: Sequence[str],
        products: Sequence[str],
        at: Floats,
        *,
        categories: Mapping[str, str] | None = None,
        weight: Floats | None = None,
    ) -> Purchases:
        """Lines of the same customer, product and time are one occasion (an invoice listing a product twice)."""
        customer_index: dict[str, int] = {}
        product_index: dict[str, int] = {}
        c = np.fromiter((customer_index.setdefault(x, len(customer_index)) for x in customers), np.int64)
        p = np.fromiter((product_index.setdefault(x, len(product_index)) for x in products), np.int64)
        t = np.asarray(at, dtype=np.float64)
        w = np.ones(len(c)) if weight is None else np.asarray(weight, dtype=np.float64)
        if len(c):
            order = np.lexsort((t, p, c))
            c, p, t, w = c[order], p[order], t[order], w[order]
            first = np.ones(len(c), dtype=np.bool_)
            first[1:] = (c[1:] != c[:-1]) | (p[1:] != p[:-1]) | (t[1:] != t[:-1])
            c, p, t, w = c[first], p[first], t[first], w[first]
        return cls(
            c,
            p,
            t,
            list(customer_index),
            list(product_index),
            len(customers),
            dict(categories or {}),
            None if weight is None else w,
        )

    def __len__(self) -> int:
        return len(self.customer)


def aggregate(purchases: Purchases, keep: Bools | None = None) -> TrainingSet:
    """The model's training rows (one per customer and product) from the occasions `keep` selects."""
    c, p, t = purchases.customer, purchases.product, purchases.at
    w = purchases.weight
    if keep is not None:
        c, p, t = c[keep], p[keep], t[keep]
        w = None if w is None else w[keep]
    key = c * max(len(purchases.product_ids), 1) + p
    order = np.argsort(key, kind="stable")
    key, c, p, t = key[order], c[order], p[order], t[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, np.int64)
    counts = np.diff(np.r_[starts, len(key)]).astype(np.int64)
    first_at = np.minimum.reduceat(t, starts) if len(key) else np.zeros(0)
    last_at = np.maximum.reduceat(t, starts) if len(key) else np.zeros(0)
    weights = None
    if w is not None:
        # a pair weighs as the mean of its occasions' weights
        weights = np.add.reduceat(w[order], starts) / counts if len(key) else np.zeros(0)
    customer_ids, product_ids = purchases.customer_ids, purchases.product_ids
    return TrainingSet(
        customers=[customer_ids[i] for i in c[starts]],
        products=[product_ids[i] for i in p[starts]],
        purchases=counts,
        last_at=last_at,
        first_at=first_at,
        interactions=len(key) if keep is not None else purchases.lines,
        categories=purchases.categories,
        weights=weights,
    )


@dataclass(frozen=True)
class Holdout:
    split: str  # "temporal" or "random"
    training: TrainingSet
    histories: dict[str, list[History]]  # evaluated customers' training history
    everything: dict[str, set[str]]  # evaluated customer -> held-out products
    new: dict[str, set[str]]  # evaluated customer -> held-out products not bought before
    now: float
    held_out: int  # occasions


def _histories(data: TrainingSet, wanted: set[str]) -> dict[str, list[History]]:
    out: dict[str, list[History]] = defaultdict(list)
    for i, customer in enumerate(data.customers):
        if customer in wanted:
            out[customer].append(
                History(data.products[i], int(data.purchases[i]), float(data.last_at[i]), float(data.first_at[i]))
            )
    return dict(out)


def _spread(purchases: Purchases) -> bool:
    """Whether time orders a customer's purchases: the median customer with several purchases made them on more
    than one day. Ratings given in one sitting (a film catalogue) do not; a shop's baskets over months do."""
    c, at = purchases.customer, purchases.at
    first = np.full(len(purchases.customer_ids), np.inf)
    last = np.full(len(purchases.customer_ids), -np.inf)
    np.minimum.at(first, c, at)
    np.maximum.at(last, c, at)
    several = np.bincount(c, minlength=len(purchases.customer_ids)) > 1
    if not several.any():
        return False
    return bool(np.median(last[several] - first[several]) >= SPREAD_SECONDS)


def _repeats(purchases: Purchases) -> bool:
    """Whether customers come back for the same product: at least 1% of the (customer, product) pairs were bought on
    more than one occasion. A catalogue without repeats (films, books, or a shop's pairs each counted once) is not."""
    pair = purchases.customer * max(len(purchases.product_ids), 1) + purchases.product
    pairs, counts = np.unique(pair, return_counts=True)
    return len(pairs) > 0 and bool((counts > 1).mean() >= MIN_REPEAT_SHARE)


def holdout(purchases: Purchases, *, seed: int = 0, max_customers: int = EVAL_CUSTOMERS) -> Holdout | None:
    """The validation slice, or None when the history is too small to hold anything out."""
    n = len(purchases)
    if n < 20:
        return None
    rng = np.random.default_rng(seed)
    at = purchases.at
    cutoff = float(np.quantile(at, 1.0 - SLICE))
    later = at >= cutoff
    # a time slice where time orders the purchases and customers come back for products (what sells next season, what
    # they buy again); a random slice for a catalogue without repeats (what else fits this customer's taste)
    split = "temporal" if _spread(purchases) and _repeats(purchases) else "random"
    if split == "temporal":
        before = np.zeros(len(purchases.customer_ids), dtype=np.bool_)
        before[purchases.customer[~later]] = True
        both = np.unique(purchases.customer[later & before[purchases.customer]])
        if len(both) < MIN_CUSTOMERS or later.all():
            split = "random"
    if split == "random":
        # each (customer, product) pair goes wholly to one side: a catalogue without repeats is scored fairly
        pair = purchases.customer * max(len(purchases.product_ids), 1) + purchases.product
        pairs = np.unique(pair)
        chosen = pairs[rng.random(len(pairs)) < RANDOM_SHARE]
        later = np.isin(pair, chosen)
        cutoff = float(at.max()) + 1.0
    training = aggregate(purchases, ~later)
    trained_customers = {purchases.customer_ids[i] for i in np.unique(purchases.customer[~later])}
    truth: dict[str, set[str]] = defaultdict(set)
    for c, p in zip(purchases.customer[later], purchases.product[later], strict=True):
        customer = purchases.customer_ids[c]
        if customer in trained_customers:
            truth[customer].add(purchases.product_ids[p])
    if len(truth) < 5:
        return None
    customers = sorted(truth)
    if len(customers) > max_customers:
        customers = sorted(rng.choice(customers, size=max_customers, replace=False).tolist())
    histories = _histories(training, set(customers))
    everything = {c: truth[c] for c in customers}
    new = {}
    for c in customers:
        fresh = truth[c] - {h.product_id for h in histories[c]}
        if fresh:
            new[c] = fresh
    now = cutoff if split == "temporal" else float(at.max())
    return Holdout(split, training, histories, everything, new, now, int(later.sum()))


def ndcg(ranking: Mapping[str, Sequence[str]], truth: Mapping[str, set[str]]) -> float:
    """Mean NDCG@10 with binary relevance over the customers of `truth` (a missing ranking scores 0)."""
    if not truth:
        return 0.0
    discounts = 1.0 / np.log2(np.arange(2, K + 2))
    total = 0.0
    for customer, relevant in truth.items():
        ranked_ = ranking.get(customer, ())[:K]
        gain = sum(discounts[i] for i, p in enumerate(ranked_) if p in relevant)
        total += gain / discounts[: min(len(relevant), K)].sum()
    return total / len(truth)


def ranked(
    model: Model, history: Sequence[History], *, now: float, new_only: bool, params: Params | None = None
) -> list[str]:
    """What the service answers (without catalog filters): personal picks, then popular products."""
    allowed = np.ones(model.products, dtype=np.bool_)
    picks = recommend(
        model,
        history,
        allowed=allowed,
        now=now,
        mode=Mode.discover if new_only else Mode.mixed,
        limit=K,
        params=params,
        explain=False,
    )
    out = [model.product_ids[p.index] for p in picks]
    if len(out) < K:
        seen = set(out) | ({h.product_id for h in history} if new_only else set())
        for i in np.argsort(-model.popularity, kind="stable")[: K + len(seen)]:
            product = model.product_ids[i]
            if product not in seen:
                out.append(product)
                if len(out) == K:
                    break
    return out


@dataclass
class Score:
    everything: float  # NDCG@10 of mode=mixed over every held-out product
    new: float  # NDCG@10 of mode=discover over the held-out products the customer had not bought

    def as_dict(self) -> dict[str, float]:
        return {"ndcg_at_10": round(float(self.everything), 4), "ndcg_at_10_new_products": round(float(self.new), 4)}


def _score(model: Model, data: Holdout, params: Params | None = None, *, parts: str = "both") -> Score:
    everything = new = 0.0
    if parts in ("both", "everything"):
        everything = ndcg(
            {c: ranked(model, data.histories[c], now=data.now, new_only=False, params=params) for c in data.everything},
            data.everything,
        )
    if parts in ("both", "new"):
        new = ndcg(
            {c: ranked(model, data.histories[c], now=data.now, new_only=True, params=params) for c in data.new},
            data.new,
        )
    return Score(everything, new)


def _baselines(data: Holdout) -> dict[str, Score]:
    counts: dict[str, int] = defaultdict(int)
    for product in data.training.products:
        counts[product] += 1
    by_popularity = sorted(counts, key=lambda p: -counts[p])

    def popular(customer: str, new_only: bool) -> list[str]:
        bought = {h.product_id for h in data.histories[customer]} if new_only else set()
        return [p for p in by_popularity[: K + len(bought)] if p not in bought][:K]

    def own(customer: str) -> list[str]:
        mine = sorted(data.histories[customer], key=lambda h: (-h.purchases, -h.last_at))
        out = [h.product_id for h in mine[:K]]
        return out + [p for p in popular(customer, False) if p not in out][: K - len(out)]

    return {
        "popularity": Score(
            ndcg({c: popular(c, False) for c in data.everything}, data.everything),
            ndcg({c: popular(c, True) for c in data.new}, data.new),
        ),
        # for products new to the customer, "own most bought" has nothing: it is popularity there
        "own_most_bought": Score(
            ndcg({c: own(c) for c in data.everything}, data.everything),
            ndcg({c: popular(c, True) for c in data.new}, data.new),
        ),
    }


@dataclass
class Report:
    params: Params
    split: str
    score: Score | None
    baselines: dict[str, Score]
    tried: int
    seconds: float
    customers: int = 0
    held_out: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "customers": self.customers,
            "held_out_purchases": self.held_out,
            "score": None if self.score is None else self.score.as_dict(),
            "baselines": {name: s.as_dict() for name, s in self.baselines.items()},
            "settings_tried": self.tried,
            "search_seconds": round(self.seconds, 2),
        }


def tune(
    purchases: Purchases,
    *,
    budget_seconds: float,
    base: Params = Params(),
    seed: int = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> Report:
    """The settings to train with, and how they scored on the held-out slice.

    With a zero budget nothing is searched: the defaults are scored with the baselines (cheap), so the report
    still says where the model stands. An infinite budget runs the whole search (at most two sweeps), the same
    on any machine: the offline evaluation does that. `clock` measures the budget (wall time in the service;
    `time.process_time` makes the search do on a busy machine what it does on an idle core: the benchmark)."""
    started = clock()
    data = holdout(purchases, seed=seed)
    if data is None:
        return Report(base, "none", None, {}, 0, clock() - started)
    search_base = replace(base, ease_max_items=min(base.ease_max_items, SEARCH_EASE_ITEMS))
    cache = EaseCache()
    baselines = _baselines(data)
    # a random split puts each (customer, product) pair wholly on one side: buying again cannot be judged on it
    repeats = data.split == "temporal" and bool((data.training.purchases > 1).any())
    # without products new to the customers (a shop of pure repeats), discovery is judged on everything
    use_new = len(data.new) >= 5
    tried = 0
    models: dict[tuple[Any, ...], Model] = {}

    def model_for(params: Params) -> Model:
        key = tuple(getattr(params, f) for f in sorted(RETRAIN_FIELDS))
        if key not in models:
            models.clear()
            models[key] = train(data.training, version=0, params=params, ease_cache=cache)
        return models[key]

    def objective(params: Params, stage: str) -> float:
        nonlocal tried
        tried += 1
        model = model_for(params)
        if stage == "discover" and use_new:
            return _score(model, data, params, parts="new").new
        return _score(model, data, params, parts="everything").everything

    baselines["ease_fixed"] = _score(model_for(search_base), data, search_base)
    best = search_base
    scores = {"discover": 0.0, "repeat": 0.0}
    for _sweep in range(2):
        improved = False
        for stage, space in (("discover", DISCOVER_SPACE), ("repeat", REPEAT_SPACE)):
            if (stage == "repeat" and not repeats) or clock() - started > budget_seconds:
                continue
            # discovery settings also move the mixed ranking: each stage starts from a fresh reference score
            scores[stage] = objective(best, stage)
            for name, values in space:
                for value in values:
                    if clock() - started > budget_seconds:
                        break
                    if getattr(best, name) == value:
                        continue
                    candidate = replace(best, **{name: type(getattr(best, name))(value)})
                    result = objective(candidate, stage)
                    if result > scores[stage] + 1e-9:
                        best, scores[stage], improved = candidate, result, True
        if not improved:
            break
    chosen = replace(best, ease_max_items=base.ease_max_items)
    final = baselines["ease_fixed"] if best == search_base else _score(model_for(best), data, best)
    return Report(
        chosen,
        data.split,
        final,
        baselines,
        tried,
        clock() - started,
        customers=len(data.everything),
        held_out=data.held_out,
    )


def settings_dict(params: Params) -> dict[str, float]:
    return {name: float(getattr(params, name)) for name in params.__dataclass_fields__}
