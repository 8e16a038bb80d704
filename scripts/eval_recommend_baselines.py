"""The baselines of `make eval-recommend`: popularity, each customer's own most bought, implicit's item-kNN, EASE with
fixed settings, and implicit's ALS tuned on the same validation slice as our model (a tuned baseline, not a weak
one). Each is a :data:`Ranker`: (customer, new_only) -> products ranked, at most K."""

from __future__ import annotations

import itertools
import os
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit warns (and slows) with threaded BLAS

import numpy as np
from scipy import sparse

from recommend.model import History, Params, TrainingSet, train
from recommend.tuning import Holdout, K, ndcg, ranked

Ranker = Callable[[str, bool], list[str]]
Histories = Mapping[str, Sequence[History]]


def popularity(training: TrainingSet, histories: Histories) -> Ranker:
    counts: dict[str, int] = defaultdict(int)
    for product in training.products:
        counts[product] += 1
    order = sorted(counts, key=lambda p: -counts[p])

    def run(customer: str, new_only: bool) -> list[str]:
        bought = {h.product_id for h in histories.get(customer, ())} if new_only else set()
        return [p for p in order[: K + len(bought)] if p not in bought][:K]

    return run


def most_bought(histories: Histories, fallback: Ranker) -> Ranker:
    """Own most bought (ties: the latest first), filled with popular products; for new products it is popularity."""

    def run(customer: str, new_only: bool) -> list[str]:
        if new_only:
            return fallback(customer, True)
        mine = sorted(histories.get(customer, ()), key=lambda h: (-h.purchases, -h.last_at))
        out = [h.product_id for h in mine[:K]]
        return out + [p for p in fallback(customer, False) if p not in out][: K - len(out)]

    return run


def ease_fixed(training: TrainingSet, histories: Histories, now: float) -> Ranker:
    """Our model with the fixed default settings (what the service did before it tuned itself)."""
    model = train(training, version=1, params=Params())

    def run(customer: str, new_only: bool) -> list[str]:
        return ranked(model, histories.get(customer, ()), now=now, new_only=new_only)

    return run


@dataclass
class Matrix:
    customers: dict[str, int]
    products: list[str]
    counts: sparse.csr_matrix  # purchases per (customer, product)


def matrix(training: TrainingSet) -> Matrix:
    customers = {c: i for i, c in enumerate(dict.fromkeys(training.customers))}
    products = {p: i for i, p in enumerate(dict.fromkeys(training.products))}
    counts = sparse.csr_matrix(
        (
            training.purchases.astype(np.float32),
            (
                np.fromiter((customers[c] for c in training.customers), np.int64, count=len(training.customers)),
                np.fromiter((products[p] for p in training.products), np.int64, count=len(training.products)),
            ),
        ),
        shape=(len(customers), len(products)),
    )
    return Matrix(customers, list(products), counts)


def _from_implicit(model: Any, m: Matrix, weighted: sparse.csr_matrix, fallback: Ranker) -> Ranker:
    def run(customer: str, new_only: bool) -> list[str]:
        u = m.customers.get(customer)
        if u is None:
            return fallback(customer, new_only)
        ids, _ = model.recommend(u, weighted[u], N=K, filter_already_liked_items=new_only)
        return [m.products[i] for i in ids]

    return run


def item_knn(training: TrainingSet, fallback: Ranker, neighbours: int = 100) -> Ranker:
    """implicit's item-item nearest neighbours, BM25-weighted."""
    from implicit.nearest_neighbours import BM25Recommender

    m = matrix(training)
    model = BM25Recommender(K=neighbours)
    model.fit(m.counts, show_progress=False)
    return _from_implicit(model, m, m.counts, fallback)


@dataclass(frozen=True)
class AlsSettings:
    factors: int
    regularization: float
    weighting: str  # "bm25" or "log" (confidence 1 + 20·log(1 + purchases))
    iterations: int = 15

    def label(self) -> str:
        return f"{self.factors} factors, λ {self.regularization:g}, {self.weighting}"


ALS_GRID = tuple(
    AlsSettings(f, r, w) for f, r, w in itertools.product((32, 64, 128), (0.01, 0.1, 1.0), ("bm25", "log"))
)


def _weigh(counts: sparse.csr_matrix, weighting: str) -> sparse.csr_matrix:
    from implicit.nearest_neighbours import bm25_weight

    if weighting == "bm25":
        return bm25_weight(counts, K1=100, B=0.8).tocsr().astype(np.float32)
    weighted = counts.copy()
    weighted.data = (1.0 + 20.0 * np.log1p(weighted.data)).astype(np.float32)
    return weighted


def als(training: TrainingSet, settings: AlsSettings, fallback: Ranker) -> Ranker:
    from implicit.als import AlternatingLeastSquares

    m = matrix(training)
    weighted = _weigh(m.counts, settings.weighting)
    model = AlternatingLeastSquares(
        factors=settings.factors,
        regularization=settings.regularization,
        iterations=settings.iterations,
        random_state=42,
    )
    model.fit(weighted, show_progress=False)
    return _from_implicit(model, m, weighted, fallback)


def tune_als(validation: Holdout) -> tuple[AlsSettings, AlsSettings]:
    """The ALS settings that score best on our model's own validation slice: (repeats counted, new products)."""
    fallback = popularity(validation.training, validation.histories)
    best: dict[bool, tuple[float, AlsSettings]] = {}
    for settings in ALS_GRID:
        run = als(validation.training, settings, fallback)
        for new_only, truth in ((False, validation.everything), (True, validation.new)):
            score = ndcg({c: run(c, new_only) for c in truth}, truth)
            if new_only not in best or score > best[new_only][0]:
                best[new_only] = (score, settings)
    return best[False][1], best[True][1]
