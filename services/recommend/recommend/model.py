"""The recommendation model: trained from purchase history, immutable once built, served from memory.

Training (:func:`train`) takes one row per (customer, product) pair: how many separate purchases, the
quantity, the first and the last purchase time. It learns

- item-to-item weights with EASE (Steck 2019: a closed-form linear item-item model, ``B = I - P / diag(P)``
  with ``P = (XᵀX + λI)⁻¹``) on the most bought products, keeping each row's strongest neighbours;
- how likely each product is bought again: the share of its buyers who bought it on more than one occasion,
  shrunk towards its category's share (a catalogue of films is never re-bought; groceries are);
- popularity with recent purchases weighing more (a seasonal shop sells Christmas lights in October).

Serving (:func:`recommend`) folds in a customer's *current* history at request time (so a new purchase changes
the next answer without retraining): the discover score is the history's EASE row sum; the buy-again score
of a product already bought combines its learned repeat rate with the customer's own frequency and recency (and,
where the tuner finds it pays, how well the product sells now: Christmas lights are re-bought in November);
``mixed`` ranks both on one scale. Nothing here touches the database or the web framework.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse

__all__ = [
    "History",
    "Mode",
    "Model",
    "Params",
    "Pick",
    "ReasonKind",
    "TrainingSet",
    "empty_model",
    "popular",
    "recommend",
    "similar",
    "train",
]

DAY = 86_400.0
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


class Mode(StrEnum):
    discover = "discover"
    buy_again = "buy_again"
    mixed = "mixed"


class ReasonKind(StrEnum):
    bought_together = "bought_together"  # arg: index of the history product that contributed most
    buy_again = "buy_again"  # arg: purchases; interval in days in `interval_days`
    popular = "popular"  # in the product's category (or overall)


@dataclass(frozen=True)
class Params:
    ease_lambda: float = 100.0
    ease_max_items: int = 5000  # EASE inverts an n x n matrix: cap n (the rest are served by popularity)
    neighbours: int = 100
    gram_half_life_days: float = 14.0  # > 0: recent co-purchases weigh more in EASE (0: all count the same)
    popularity_half_life_days: float = 30.0
    history_half_life_days: float = 180.0
    repeat_half_life_days: float = 365.0
    repeat_prior_strength: float = 10.0
    # mixed: weight of the buy-again score against the best discover score
    buy_again_weight: float = 4.0
    frequency_power: float = 1.0
    rate_power: float = 0.5
    popularity_blend: float = 0.05
    min_repeat_rate: float = 0.03  # mixed mode leaves out bought products less likely than this to be re-bought
    trend_power: float = 0.0  # > 0: a bought product that sells well now (recency-weighted popularity) is more due


@dataclass(frozen=True)
class TrainingSet:
    """Columns of one row per (customer, product) pair; times in seconds since the epoch."""

    customers: Sequence[str]
    products: Sequence[str]
    purchases: Ints
    last_at: Floats
    first_at: Floats
    interactions: int
    categories: Mapping[str, str] = field(default_factory=dict)  # product -> category, for the repeat prior
    weights: Floats | None = None  # per row, from feedback (a detractor's order weighs less); 1 when None


@dataclass(frozen=True)
class Model:
    version: int
    trained_at: datetime
    customers: int
    interactions: int
    product_ids: tuple[str, ...]
    index: Mapping[str, int]
    neighbours: sparse.csr_matrix  # n x n, row i: the products bought with product i, weighted
    popularity: Floats  # recency-weighted buyers, scaled to max 1
    repeat_rate: Floats  # probability that a buyer buys again
    reference_time: float  # the latest purchase seen in training
    params: Params = Params()  # the settings it was trained with, and serves with
    report: Mapping[str, Any] = field(default_factory=dict)  # how the settings were chosen (tuning.py)

    @property
    def products(self) -> int:
        return len(self.product_ids)


def empty_model() -> Model:
    return Model(
        version=0,
        trained_at=datetime.fromtimestamp(0, UTC),
        customers=0,
        interactions=0,
        product_ids=(),
        index={},
        neighbours=sparse.csr_matrix((0, 0)),
        popularity=np.zeros(0),
        repeat_rate=np.zeros(0),
        reference_time=0.0,
    )


def _top_k_rows(dense: Floats, k: int) -> sparse.csr_matrix:
    """Keep each row's k largest positive entries."""
    n = dense.shape[0]
    k = min(k, max(n - 1, 1))
    if n == 0:
        return sparse.csr_matrix((0, 0))
    top = np.argpartition(-dense, kth=k - 1, axis=1)[:, :k]
    values = np.take_along_axis(dense, top, axis=1)
    rows = np.repeat(np.arange(n), k)
    keep = values.ravel() > 0
    return sparse.csr_matrix((values.ravel()[keep], (rows[keep], top.ravel()[keep])), shape=(n, n))


@dataclass
class EaseCache:
    """The tuner's memory between trainings on one data set: the coded rows and the last EASE solution, so trying
    another number of neighbours or another serving setting costs neither the coding nor a matrix inversion."""

    data: TrainingSet | None = None
    coded: tuple[tuple[str, ...], dict[str, int], Ints, Ints, int, Ints] | None = None
    key: tuple[float, float, int] | None = None
    solution: tuple[Ints, Floats] | None = None


def train(
    data: TrainingSet,
    *,
    version: int,
    params: Params = Params(),
    catalog: Sequence[str] = (),
    ease_cache: EaseCache | None = None,
) -> Model:
    """Build a new model; the caller swaps it in. `catalog` adds products nobody has bought yet.

    `ease_cache` (the tuner's) keeps the last EASE solution, so trying another number of neighbours or another
    serving setting does not invert the matrix again."""
    if ease_cache is not None and ease_cache.data is data and ease_cache.coded is not None:
        product_ids, index, rows, cols, m, codes = ease_cache.coded
    else:
        product_ids = tuple(dict.fromkeys([*data.products, *catalog]))
        index = {product: i for i, product in enumerate(product_ids)}
        customer_index: dict[str, int] = {}
        rows = np.fromiter((customer_index.setdefault(c, len(customer_index)) for c in data.customers), np.int64)
        cols = np.fromiter((index[p] for p in data.products), np.int64, count=len(data.products))
        m = len(customer_index)
        category_codes: dict[str, int] = {}
        category_of = (data.categories.get(p, "") for p in product_ids)
        codes = np.fromiter((category_codes.setdefault(c, len(category_codes)) for c in category_of), np.int64)
        if ease_cache is not None:
            ease_cache.data, ease_cache.coded = data, (product_ids, index, rows, cols, m, codes)
            ease_cache.key = ease_cache.solution = None
    n = len(product_ids)
    reference = float(data.last_at.max()) if len(data.last_at) else 0.0

    # popularity: buyers, each weighted by how recently they last bought
    age_days = (reference - data.last_at) / DAY
    recent = np.power(0.5, age_days / params.popularity_half_life_days)
    if data.weights is not None:
        recent = recent * data.weights
    popularity = np.bincount(cols, weights=recent, minlength=n).astype(np.float64)
    if popularity.max(initial=0) > 0:
        popularity /= popularity.max()

    # repeat rate: share of buyers who bought on more than one occasion, shrunk towards the category's share
    buyers = np.bincount(cols, minlength=n).astype(np.float64)
    repeaters = np.bincount(cols, weights=(data.purchases > 1).astype(np.float64), minlength=n)
    categories = int(codes.max(initial=-1)) + 1
    category_buyers = np.bincount(codes, weights=buyers, minlength=categories)
    category_repeaters = np.bincount(codes, weights=repeaters, minlength=categories)
    overall = repeaters.sum() / max(buyers.sum(), 1.0)
    prior_strength = params.repeat_prior_strength
    category_rate = (category_repeaters + prior_strength * overall) / (category_buyers + prior_strength)
    repeat_rate = (repeaters + prior_strength * category_rate[codes]) / (buyers + prior_strength)

    if params.gram_half_life_days > 0:
        values = np.sqrt(np.power(0.5, age_days / params.gram_half_life_days))
    else:
        values = np.ones(len(cols))
    if data.weights is not None:
        values = values * data.weights
    neighbours = _ease_neighbours(rows, cols, values, m, n, buyers, params, ease_cache)
    return Model(
        version=version,
        trained_at=datetime.now(UTC),
        customers=m,
        interactions=data.interactions,
        product_ids=product_ids,
        index=index,
        neighbours=neighbours,
        popularity=popularity,
        repeat_rate=repeat_rate,
        reference_time=reference,
        params=params,
    )


def _ease_neighbours(
    rows: Ints,
    cols: Ints,
    values: Floats,
    m: int,
    n: int,
    buyers: Floats,
    params: Params,
    cache: EaseCache | None = None,
) -> sparse.csr_matrix:
    if m == 0 or n == 0:
        return sparse.csr_matrix((n, n))
    key = (params.ease_lambda, params.gram_half_life_days, params.ease_max_items)
    if cache is not None and cache.key == key and cache.solution is not None:
        chosen, weights = cache.solution
    else:
        bought = np.flatnonzero(buyers >= 2)
        chosen = bought[np.argsort(-buyers[bought], kind="stable")[: params.ease_max_items]]
        if len(chosen) < 2:
            return sparse.csr_matrix((n, n))
        local = np.full(n, -1, dtype=np.int64)
        local[chosen] = np.arange(len(chosen))
        keep = local[cols] >= 0
        x = sparse.csr_matrix((values[keep], (rows[keep], local[cols[keep]])), shape=(m, len(chosen)))
        gram = (x.T @ x).toarray()
        gram[np.diag_indices_from(gram)] += params.ease_lambda
        inverse = np.linalg.inv(gram)
        weights = -inverse / np.diag(inverse)
        np.fill_diagonal(weights, 0.0)
        if cache is not None:
            cache.key, cache.solution = key, (chosen, weights)  # one at a time: a 5,000-product one is 200 MB
    top = _top_k_rows(weights, params.neighbours).tocoo()
    return sparse.csr_matrix((top.data, (chosen[top.row], chosen[top.col])), shape=(n, n))


@dataclass(frozen=True, slots=True)
class History:
    """One customer's current history of one product, as read at request time."""

    product_id: str
    purchases: int
    last_at: float
    first_at: float
    weight: float = 1.0  # feedback: less for a product of an order rated as a detractor


@dataclass(frozen=True, slots=True)
class Pick:
    index: int
    score: float
    reason: ReasonKind
    because: int = -1  # bought_together: the history product's index
    purchases: int = 0
    interval_days: float = 0.0


def _gather(model: Model, idx: Ints, weights: Floats) -> tuple[Ints, Ints, Floats]:
    """The neighbour entries of the history's rows, weighted: (history position, product, value).

    Done on the CSR arrays directly: scipy's row slicing costs more than the arithmetic at this size."""
    matrix = model.neighbours
    starts = matrix.indptr[idx]
    lengths = matrix.indptr[idx + 1] - starts
    total = int(lengths.sum())
    shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    positions = shift + np.arange(total)
    owners = np.repeat(np.arange(len(idx)), lengths)
    values = matrix.data[positions] * weights[owners]
    return owners, matrix.indices[positions].astype(np.int64), values


def recommend(
    model: Model,
    history: Sequence[History],
    *,
    allowed: Bools,
    now: float,
    mode: Mode = Mode.mixed,
    limit: int = 10,
    params: Params | None = None,
    explain: bool = True,
) -> list[Pick]:
    """Personal picks among `allowed` products (a mask over the model's products); may be fewer than `limit`
    (the caller fills up with popular products). `params` defaults to the model's own settings; `explain=False`
    (offline scoring) skips finding the history product behind each pick."""
    params = model.params if params is None else params
    known = [h for h in history if h.product_id in model.index]
    if not known or model.products == 0:
        return []
    idx = np.fromiter((model.index[h.product_id] for h in known), np.int64, count=len(known))
    purchases = np.fromiter((h.purchases for h in known), np.float64, count=len(known))
    last_at = np.fromiter((h.last_at for h in known), np.float64, count=len(known))
    first_at = np.fromiter((h.first_at for h in known), np.float64, count=len(known))
    feedback = np.fromiter((h.weight for h in known), np.float64, count=len(known))
    age_days = np.maximum(now - last_at, 0.0) / DAY

    picks: list[Pick] = []
    if mode is not Mode.buy_again:
        weights = np.power(0.5, age_days / params.history_half_life_days) * feedback
        owners, columns, values = _gather(model, idx, weights)
        discover = np.bincount(columns, weights=values, minlength=model.products)
        top = discover.max(initial=0.0)
        scores = discover / top if top > 0 else discover
        scores = scores + params.popularity_blend * model.popularity
        candidates = allowed.copy()
        candidates[idx] = False
        candidates &= discover > 0
        picks.extend(_discover_picks(scores, candidates, idx, owners, columns, values, limit, explain))

    if mode is not Mode.discover:
        again = _buy_again_scores(model, idx, purchases, age_days, params) * feedback
        interval = np.where(purchases > 1, (last_at - first_at) / DAY / np.maximum(purchases - 1, 1), 0.0)
        usable = allowed[idx] & (again > 0)
        if mode is Mode.mixed:
            usable &= model.repeat_rate[idx] >= params.min_repeat_rate
            again = again * params.buy_again_weight
        chosen = np.flatnonzero(usable)
        if len(chosen) > limit:
            chosen = chosen[np.argpartition(-again[chosen], limit - 1)[:limit]]
        for j in chosen:
            picks.append(
                Pick(
                    int(idx[j]),
                    float(again[j]),
                    ReasonKind.buy_again,
                    purchases=int(purchases[j]),
                    interval_days=float(interval[j]),
                )
            )
    picks.sort(key=lambda p: -p.score)
    return picks[:limit]


def _buy_again_scores(model: Model, idx: Ints, purchases: Floats, age_days: Floats, params: Params) -> Floats:
    """Repeat rate of the product, raised by how often this customer bought it, lowered by how long ago."""
    rate = np.power(model.repeat_rate[idx], params.rate_power)
    frequency = np.power(purchases, params.frequency_power)
    recency = np.power(0.5, age_days / params.repeat_half_life_days)
    result: Floats = rate * frequency * recency
    if params.trend_power:
        result = result * np.power(model.popularity[idx], params.trend_power)
    top = result.max(initial=0.0)
    return result / top if top > 0 else result


def _discover_picks(
    scores: Floats,
    candidates: Bools,
    idx: Ints,
    owners: Ints,
    columns: Ints,
    values: Floats,
    limit: int,
    explain: bool = True,
) -> list[Pick]:
    pool = np.flatnonzero(candidates)
    if len(pool) == 0:
        return []
    if len(pool) > limit:
        pool = pool[np.argpartition(-scores[pool], limit - 1)[:limit]]
    if not explain:
        return [Pick(int(i), float(scores[i]), ReasonKind.bought_together) for i in pool]
    # the history product that contributed most to each pick explains it ("bought together with Kettle")
    relevant = np.isin(columns, pool)
    owners, columns, values = owners[relevant], columns[relevant], values[relevant]
    picks = []
    for i in pool:
        mine = columns == i
        because = idx[owners[mine][np.argmax(values[mine])]]
        picks.append(Pick(int(i), float(scores[i]), ReasonKind.bought_together, because=int(because)))
    return picks


def popular(model: Model, *, allowed: Bools, limit: int, exclude: Sequence[int] = ()) -> list[Pick]:
    mask = allowed.copy()
    if len(exclude):
        mask[np.asarray(exclude, dtype=np.int64)] = False
    pool = np.flatnonzero(mask)
    if len(pool) > limit:
        pool = pool[np.argpartition(-model.popularity[pool], limit - 1)[:limit]]
    ranked = sorted(pool.tolist(), key=lambda i: -model.popularity[i])
    return [Pick(i, float(model.popularity[i]), ReasonKind.popular) for i in ranked]


def similar(model: Model, product_id: str, *, allowed: Bools, limit: int) -> list[Pick]:
    i = model.index.get(product_id)
    if i is None:
        return []
    row = model.neighbours.getrow(i)
    order = np.argsort(-row.data)
    picks = []
    for j in order:
        col = int(row.indices[j])
        if allowed[col] and col != i:
            picks.append(Pick(col, float(row.data[j]), ReasonKind.bought_together, because=i))
            if len(picks) >= limit:
                break
    return picks


def describe_interval(days: float) -> str:
    """ "every month", for the buy-again reason."""
    if days <= 0:
        return ""
    for limit, words in ((10, "every week"), (20, "every two weeks"), (45, "every month"), (75, "every two months")):
        if days < limit:
            return words
    return "every few months" if days < 150 else f"about every {math.ceil(days / 30)} months"
