"""Offline evaluation of the recommender on UCI Online Retail (`make eval-recommend`).

Temporal split: train on clean purchases before 2011-10-01, test on 2011-10-01 .. 2011-12-09 (cancellations, rows
without a customer and non-product codes dropped by scripts/online_retail.py). Test customers are those with
purchases in both periods. Two protocols:

- repeat counted: every product a customer bought in the test period is relevant; already bought products may
  be recommended;
- new products only: relevant are test products the customer had not bought before; already bought products are
  never recommended; customers without any new product are left out.

NDCG@10 (binary relevance), precision@10 and recall@10 for our model (the service's own code, imported from the
recommend package), popularity, each customer's own most-bought products, and implicit's ALS fitted in the same run.

Data: Chen, Sain and Guo (2012), "Data mining for the online retail industry", UCI Machine Learning Repository
dataset 352, CC BY 4.0.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit warns (and slows) with threaded BLAS

import numpy as np
from scipy import sparse

from recommend.model import History, Mode, Model, Params, TrainingSet, recommend, train
from scripts.online_retail import FULL, category_for, rows

SPLIT = datetime(2011, 10, 1, tzinfo=UTC)
END = datetime(2011, 12, 10, tzinfo=UTC)
VALIDATION = (datetime(2011, 7, 1, tzinfo=UTC), datetime(2011, 10, 1, tzinfo=UTC))
K = 10


@dataclass
class Split:
    training: TrainingSet
    histories: dict[str, list[History]]  # customer -> training history
    test: dict[str, set[str]]  # customer -> products bought in the test period (customers in both periods)
    products: list[str]


def load(path: str | None = None) -> Split:
    occasions: dict[tuple[str, str], set[str]] = defaultdict(set)
    first: dict[tuple[str, str], float] = {}
    last: dict[tuple[str, str], float] = {}
    test: dict[str, set[str]] = defaultdict(set)
    categories: dict[str, str] = {}
    interactions = 0
    for row in rows(FULL if path is None else __import__("pathlib").Path(path)):
        if row.product_id not in categories:
            categories[row.product_id] = category_for(row.description)
        if row.occurred_at >= END:
            continue
        if row.occurred_at >= SPLIT:
            test[row.customer_id].add(row.product_id)
            continue
        key = (row.customer_id, row.product_id)
        when = row.occurred_at.timestamp()
        occasions[key].add(row.invoice)
        first[key] = min(first.get(key, when), when)
        last[key] = max(last.get(key, when), when)
        interactions += 1
    keys = list(occasions)
    training = TrainingSet(
        customers=[c for c, _ in keys],
        products=[p for _, p in keys],
        purchases=np.fromiter((len(occasions[k]) for k in keys), np.int64, count=len(keys)),
        last_at=np.fromiter((last[k] for k in keys), np.float64, count=len(keys)),
        first_at=np.fromiter((first[k] for k in keys), np.float64, count=len(keys)),
        interactions=interactions,
        categories=categories,
    )
    histories: dict[str, list[History]] = defaultdict(list)
    for k in keys:
        histories[k[0]].append(History(k[1], len(occasions[k]), last[k], first[k]))
    both = {c: items for c, items in test.items() if c in histories}
    return Split(training, dict(histories), both, sorted(categories))


@dataclass
class Scores:
    ndcg: float
    precision: float
    recall: float
    users: int


def evaluate(recs: dict[str, list[str]], truth: dict[str, set[str]]) -> Scores:
    discounts = 1.0 / np.log2(np.arange(2, K + 2))
    ndcg = precision = recall = 0.0
    for customer, relevant in truth.items():
        ranked = recs.get(customer, [])[:K]
        hits = np.array([p in relevant for p in ranked] + [False] * (K - len(ranked)), dtype=np.float64)
        ideal = discounts[: min(len(relevant), K)].sum()
        ndcg += float(hits @ discounts) / ideal
        precision += hits.sum() / K
        recall += hits.sum() / len(relevant)
    n = max(len(truth), 1)
    return Scores(ndcg / n, precision / n, recall / n, len(truth))


Recommender = Callable[[str, bool], list[str]]  # (customer, new_only) -> ranked products


def run_protocols(name: str, recommender: Recommender, split: Split) -> list[tuple[str, str, Scores]]:
    repeat_truth = split.test
    new_truth: dict[str, set[str]] = {}
    for customer, items in split.test.items():
        bought = {h.product_id for h in split.histories[customer]}
        fresh = items - bought
        if fresh:
            new_truth[customer] = fresh
    out = []
    for protocol, truth, new_only in (("repeat counted", repeat_truth, False), ("new products only", new_truth, True)):
        recs = {customer: recommender(customer, new_only) for customer in truth}
        out.append((protocol, name, evaluate(recs, truth)))
    return out


def ours(model: Model, split: Split, params: Params) -> Recommender:
    allowed = np.ones(model.products, dtype=np.bool_)
    now = SPLIT.timestamp()

    def run(customer: str, new_only: bool) -> list[str]:
        picks = recommend(
            model,
            split.histories[customer],
            allowed=allowed,
            now=now,
            mode=Mode.discover if new_only else Mode.mixed,
            limit=K,
            params=params,
        )
        ranked = [model.product_ids[p.index] for p in picks]
        if len(ranked) < K:  # as the service does: fill up with popular products
            seen = set(ranked) | ({h.product_id for h in split.histories[customer]} if new_only else set())
            for i in np.argsort(-model.popularity):
                product = model.product_ids[i]
                if product not in seen:
                    ranked.append(product)
                    if len(ranked) == K:
                        break
        return ranked

    return run


def popularity(split: Split) -> Recommender:
    counts: dict[str, int] = defaultdict(int)
    for product in split.training.products:
        counts[product] += 1
    ranked = sorted(counts, key=lambda p: -counts[p])

    def run(customer: str, new_only: bool) -> list[str]:
        if not new_only:
            return ranked[:K]
        bought = {h.product_id for h in split.histories[customer]}
        return [p for p in ranked[: K + len(bought)] if p not in bought][:K]

    return run


def most_bought(split: Split, fallback: Recommender) -> Recommender:
    def run(customer: str, new_only: bool) -> list[str]:
        if new_only:
            return fallback(customer, True)
        history = sorted(split.histories[customer], key=lambda h: (-h.purchases, -h.last_at))
        ranked = [h.product_id for h in history[:K]]
        return ranked + [p for p in fallback(customer, False) if p not in ranked][: K - len(ranked)]

    return run


def _matrix(split: Split) -> tuple[dict[str, int], list[str], sparse.csr_matrix]:
    customers = {c: i for i, c in enumerate(dict.fromkeys(split.training.customers))}
    products = {p: i for i, p in enumerate(dict.fromkeys(split.training.products))}
    matrix = sparse.csr_matrix(
        (
            split.training.purchases.astype(np.float32),
            (
                np.fromiter((customers[c] for c in split.training.customers), np.int64),
                np.fromiter((products[p] for p in split.training.products), np.int64),
            ),
        ),
        shape=(len(customers), len(products)),
    )
    return customers, list(products), matrix


def item_knn(split: Split, neighbours: int = 100) -> Recommender:
    """implicit's item-item nearest neighbours with BM25 weighting."""
    from implicit.nearest_neighbours import BM25Recommender

    customers, names, matrix = _matrix(split)
    model = BM25Recommender(K=neighbours)
    model.fit(matrix, show_progress=False)

    def run(customer: str, new_only: bool) -> list[str]:
        u = customers[customer]
        ids, _ = model.recommend(u, matrix[u], N=K, filter_already_liked_items=new_only)
        return [names[i] for i in ids]

    return run


def als(split: Split, factors: int = 64, iterations: int = 20, regularization: float = 0.05) -> Recommender:
    from implicit.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import bm25_weight

    customers, names, matrix = _matrix(split)
    weighted = bm25_weight(matrix, K1=100, B=0.8).tocsr().astype(np.float32)
    model = AlternatingLeastSquares(
        factors=factors, iterations=iterations, regularization=regularization, random_state=42
    )
    model.fit(weighted, show_progress=False)

    def run(customer: str, new_only: bool) -> list[str]:
        u = customers[customer]
        ids, _ = model.recommend(u, weighted[u], N=K, filter_already_liked_items=new_only)
        return [names[i] for i in ids]

    return run


def table(results: Sequence[tuple[str, str, Scores]]) -> str:
    lines = ["| protocol | model | NDCG@10 | precision@10 | recall@10 | customers |", "|---|---|---|---|---|---|"]
    for protocol, name, s in results:
        lines.append(f"| {protocol} | {name} | {s.ndcg:.3f} | {s.precision:.3f} | {s.recall:.3f} | {s.users:,} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", action="store_true", help="also try a few parameter variants of our model")
    parser.add_argument("--no-als", action="store_true", help="skip the ALS and item-kNN baselines")
    parser.add_argument(
        "--validation",
        action="store_true",
        help="the split the parameters were chosen on: train before 2011-07-01, test 2011-07-01 .. 2011-09-30",
    )
    args = parser.parse_args(argv)
    global SPLIT, END
    if args.validation:
        SPLIT, END = VALIDATION

    started = time.perf_counter()
    split = load()
    loaded = time.perf_counter()
    print(
        f"train: {len(split.training.customers):,} customer-product pairs, {split.training.interactions:,} rows;"
        f" test customers: {len(split.test):,} (loaded in {loaded - started:.1f} s)",
        flush=True,
    )
    params = Params()
    model = train(split.training, version=1, params=params)
    trained = time.perf_counter()
    print(f"our model trained in {trained - loaded:.1f} s", flush=True)

    results = run_protocols("ours: EASE (recent-weighted) + learned repeat", ours(model, split, params), split)
    pop = popularity(split)
    results += run_protocols("popularity", pop, split)
    results += [r for r in run_protocols("own most-bought", most_bought(split, pop), split) if r[0] == "repeat counted"]
    if not args.no_als:
        results += run_protocols("implicit ALS (64 factors, BM25)", als(split), split)
        results += run_protocols("implicit item-kNN (BM25, 100 neighbours)", item_knn(split), split)
    if args.grid:
        for variant in grid():
            variant_model = train(split.training, version=1, params=variant) if _retrain(variant, params) else model
            results += run_protocols(_label(variant, params), ours(variant_model, split, variant), split)
    results.sort(key=lambda r: (r[0] != "repeat counted", -r[2].ndcg))
    print()
    print(table(results))
    print(f"\n({time.perf_counter() - started:.0f} s)")


TRAINING_FIELDS = (
    "ease_lambda",
    "ease_max_items",
    "neighbours",
    "gram_half_life_days",
    "popularity_half_life_days",
    "repeat_prior_strength",
)


def _retrain(variant: Params, base: Params) -> bool:
    return any(getattr(variant, f) != getattr(base, f) for f in TRAINING_FIELDS)


def _label(variant: Params, base: Params) -> str:
    changed = [
        f"{k}={getattr(variant, k)}" for k in variant.__dataclass_fields__ if getattr(variant, k) != getattr(base, k)
    ]
    return "ours " + ", ".join(changed)


def grid() -> list[Params]:
    """Variants around the defaults (the defaults were chosen with `--grid --validation`)."""
    base = Params()
    return [
        replace(base, gram_half_life_days=0.0, ease_lambda=300.0),
        replace(base, gram_half_life_days=30.0),
        replace(base, ease_lambda=300.0),
        replace(base, rate_power=0.0),
        replace(base, rate_power=1.0),
        replace(base, buy_again_weight=2.0),
        replace(base, buy_again_weight=8.0),
        replace(base, repeat_half_life_days=120.0),
        replace(base, popularity_blend=0.1, popularity_half_life_days=7.0),
    ]


if __name__ == "__main__":
    main()
