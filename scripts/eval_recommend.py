"""Offline evaluation of the recommender (`make eval-recommend`): every protocol the data allows, against tuned
and untuned baselines, and a held-out data set of another kind.

UCI Online Retail (cancellations, rows without a customer and non-product codes dropped by
scripts/online_retail.py):

- temporal, repeats counted: train on purchases before 2011-10-01, test 2011-10-01 .. 2011-12-09; customers who
  bought in both periods; every product they bought in the test period is relevant, bought ones included;
- temporal, new products only: the same, relevant are the test products the customer had not bought before, and
  no bought product may be recommended;
- temporal, customers with few purchases: the repeats-counted protocol on customers with at most 3 purchase
  occasions before the split;
- random pairs: every (customer, product) pair counted once (as a catalogue without repeats would be), at its first
  purchase; a random fifth of the pairs is the test set (seed 0), customers with pairs on both sides.

Held out (never used while developing the model or the tuner): MovieLens 100K, ratings as interactions, a random
fifth of the pairs as the test set.

Our model is the service's own code: :func:`recommend.tuning.tune` chooses its settings on a slice of the training
data only (as the service does at each training), then it is trained on all
of it. The tuner runs its whole search here (no time limit, so the table does not depend on the machine's load);
the service runs the same search within its time budget. ALS (implicit) is tuned on the very same slice over 18
settings (factors, regularisation, weighting), picked per protocol.
NDCG@10 with binary relevance, precision@10 and recall@10.

Data: Chen, Sain and Guo (2012), UCI Machine Learning Repository dataset 352, CC BY 4.0; MovieLens 100K: Harper
and Konstan (2015), see scripts/eval_recommend_movielens.py.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from recommend.model import History, Params, train
from recommend.tuning import K, Purchases, aggregate, holdout, ranked, settings_dict, tune
from scripts import eval_recommend_baselines as base
from scripts.online_retail import FULL, category_for, rows

SPLIT = datetime(2011, 10, 1, tzinfo=UTC)
END = datetime(2011, 12, 10, tzinfo=UTC)
FEW = 3


@dataclass
class Protocol:
    name: str
    truth: dict[str, set[str]]
    new_only: bool


@dataclass
class Case:
    data_set: str
    training: Purchases
    now: float
    protocols: list[Protocol]


@dataclass
class Scores:
    ndcg: float
    precision: float
    recall: float
    customers: int


def evaluate(ranking: Mapping[str, Sequence[str]], truth: Mapping[str, set[str]]) -> Scores:
    discounts = 1.0 / np.log2(np.arange(2, K + 2))
    ndcg = precision = recall = 0.0
    for customer, relevant in truth.items():
        top = ranking.get(customer, [])[:K]
        hits = np.array([p in relevant for p in top] + [False] * (K - len(top)), dtype=np.float64)
        ndcg += float(hits @ discounts) / discounts[: min(len(relevant), K)].sum()
        precision += hits.sum() / K
        recall += hits.sum() / len(relevant)
    n = max(len(truth), 1)
    return Scores(ndcg / n, precision / n, recall / n, len(truth))


def _purchases(lines: Sequence[tuple[str, str, float]], categories: Mapping[str, str]) -> Purchases:
    return Purchases.from_rows(
        [c for c, _, _ in lines],
        [p for _, p, _ in lines],
        np.fromiter((t for _, _, t in lines), np.float64, count=len(lines)),
        categories=categories,
    )


def _random_pairs(
    name: str, lines: Sequence[tuple[str, str, float]], categories: Mapping[str, str], seed: int = 0
) -> Case:
    first: dict[tuple[str, str], float] = {}
    for c, p, t in lines:
        if (c, p) not in first or t < first[(c, p)]:
            first[(c, p)] = t
    pairs = sorted(first)
    rng = np.random.default_rng(seed)
    test = rng.random(len(pairs)) < 0.2
    training = [(c, p, first[(c, p)]) for (c, p), held in zip(pairs, test, strict=True) if not held]
    trained = {c for c, _, _ in training}
    truth: dict[str, set[str]] = defaultdict(set)
    for (c, p), held in zip(pairs, test, strict=True):
        if held and c in trained:
            truth[c].add(p)
    now = max(t for _, _, t in training)
    return Case(name, _purchases(training, categories), now, [Protocol("random pairs, each once", dict(truth), True)])


def online_retail() -> list[Case]:
    categories: dict[str, str] = {}
    before: list[tuple[str, str, float]] = []
    everything: list[tuple[str, str, float]] = []
    test: dict[str, set[str]] = defaultdict(set)
    for row in rows(FULL):
        categories.setdefault(row.product_id, category_for(row.description))
        if row.occurred_at >= END:
            continue
        line = (row.customer_id, row.product_id, row.occurred_at.timestamp())
        everything.append(line)
        if row.occurred_at >= SPLIT:
            test[row.customer_id].add(row.product_id)
        else:
            before.append(line)
    occasions: dict[str, set[float]] = defaultdict(set)
    bought: dict[str, set[str]] = defaultdict(set)
    for c, p, t in before:
        occasions[c].add(t)
        bought[c].add(p)
    both = {c: items for c, items in test.items() if c in occasions}
    new = {c: items - bought[c] for c, items in both.items() if items - bought[c]}
    few = {c: items for c, items in both.items() if len(occasions[c]) <= FEW}
    temporal = Case(
        "Online Retail",
        _purchases(before, categories),
        SPLIT.timestamp(),
        [
            Protocol("temporal, repeats counted", both, False),
            Protocol("temporal, new products only", new, True),
            Protocol(f"temporal, customers with at most {FEW} purchases", few, False),
        ],
    )
    return [temporal, _random_pairs("Online Retail", everything, categories)]


def movielens() -> Case | None:
    from scripts.eval_recommend_movielens import ratings

    lines = ratings()
    if lines is None:
        return None
    return _random_pairs("MovieLens 100K (held out)", lines, {}, seed=0)


def _histories(training: Purchases) -> dict[str, list[History]]:
    data = aggregate(training)
    out: dict[str, list[History]] = defaultdict(list)
    for i, c in enumerate(data.customers):
        out[c].append(
            History(data.products[i], int(data.purchases[i]), float(data.last_at[i]), float(data.first_at[i]))
        )
    return dict(out)


Row = tuple[str, str, str, Scores]  # data set, protocol, model, scores


def run_case(case: Case, budget: float, *, with_implicit: bool = True) -> list[Row]:
    started = time.perf_counter()
    data = aggregate(case.training)
    histories = _histories(case.training)
    report = tune(case.training, budget_seconds=budget)
    model = train(data, version=1, params=report.params)
    tuned_at = time.perf_counter()
    defaults = settings_dict(Params())
    changed = {k: v for k, v in settings_dict(report.params).items() if defaults[k] != v}
    print(
        f"\n{case.data_set}: {len(case.training):,} purchase occasions, {len(histories):,} customers;"
        f" tuned on a {report.split} slice in {tuned_at - started:.1f} s ({report.tried} settings);"
        f" changed from the defaults: {changed or 'nothing'}",
        flush=True,
    )
    if report.score is not None:
        print(f"  validation slice: ours {report.score.as_dict()}, baselines "
              f"{ {k: v.as_dict() for k, v in report.baselines.items()} }", flush=True)  # fmt: skip

    def ours(customer: str, new_only: bool) -> list[str]:
        return ranked(model, histories.get(customer, ()), now=case.now, new_only=new_only)

    pop = base.popularity(data, histories)
    rankers: dict[str, base.Ranker] = {
        "ours (self-tuned)": ours,
        "EASE, fixed settings": base.ease_fixed(data, histories, case.now),
        "popularity": pop,
        "own most bought": base.most_bought(histories, pop),
    }
    if with_implicit:
        rankers["implicit item-kNN (BM25, 100)"] = base.item_knn(data, pop)
        validation = holdout(case.training)
        if validation is not None:
            for_repeats, for_new = base.tune_als(validation)
            print(
                f"  ALS tuned on the same slice: {for_repeats.label()} (repeats), {for_new.label()} (new)", flush=True
            )
            fitted = {s: base.als(data, s, pop) for s in {for_repeats, for_new}}
            rankers["implicit ALS, tuned"] = lambda c, new_only: fitted[for_new if new_only else for_repeats](
                c, new_only
            )
    out: list[Row] = []
    for protocol in case.protocols:
        for name, run in rankers.items():
            if name == "own most bought" and protocol.new_only:
                continue  # the same as popularity there
            ranking = {c: run(c, protocol.new_only) for c in protocol.truth}
            out.append((case.data_set, protocol.name, name, evaluate(ranking, protocol.truth)))
    print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)
    return out


def table(results: Sequence[Row]) -> str:
    lines = [
        "| data set | protocol | model | NDCG@10 | precision@10 | recall@10 | customers |",
        "|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in results:
        groups[(row[0], row[1])].append(row)
    for rows_ in groups.values():
        best = max(r[3].ndcg for r in rows_)
        for data_set, protocol, name, s in sorted(rows_, key=lambda r: -r[3].ndcg):
            mark = "**" if s.ndcg == best else ""
            lines.append(
                f"| {data_set} | {protocol} | {mark}{name}{mark} | {mark}{s.ndcg:.3f}{mark} | {s.precision:.3f} |"
                f" {s.recall:.3f} | {s.customers:,} |"
            )
    return "\n".join(lines)


def verdict(results: Sequence[Row]) -> list[str]:
    groups: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for data_set, protocol, name, s in results:
        groups[(data_set, protocol)][name] = s.ndcg
    out = []
    for (data_set, protocol), scores in groups.items():
        ours = scores.pop("ours (self-tuned)")
        best_name = max(scores, key=lambda n: scores[n])
        word = "ahead" if ours > scores[best_name] else "BEHIND"
        best = f"{best_name}, {scores[best_name]:.3f}"
        out.append(f"{data_set}, {protocol}: ours {ours:.3f} {word} of the best baseline ({best})")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--budget",
        type=float,
        default=float("inf"),
        help="tuning budget in seconds (default: the whole search, whatever the machine's load; the service: 30)",
    )
    parser.add_argument("--no-implicit", action="store_true", help="skip the item-kNN and ALS baselines")
    parser.add_argument("--no-heldout", action="store_true", help="skip MovieLens 100K")
    parser.add_argument("--only", choices=("temporal", "random", "heldout"), help="run one case")
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="cases run side by side in this many processes (default: one per core; the scores do not change)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    cases: list[Case] = []
    if args.only in (None, "temporal", "random"):
        temporal, random_pairs = online_retail()
        cases += [c for c, k in ((temporal, "temporal"), (random_pairs, "random")) if args.only in (None, k)]
    if not args.no_heldout and args.only in (None, "heldout"):
        held = movielens()
        if held is not None:
            cases.append(held)
    results: list[Row] = []
    if args.jobs > 1 and len(cases) > 1:
        # each case in a process of its own (the search is single-threaded numpy): the table keeps the cases' order
        with ProcessPoolExecutor(max_workers=min(args.jobs, len(cases))) as pool:
            runs = [pool.submit(run_case, case, args.budget, with_implicit=not args.no_implicit) for case in cases]
            for run in runs:
                results += run.result()
    else:
        for case in cases:
            results += run_case(case, args.budget, with_implicit=not args.no_implicit)
    print()
    print(table(results))
    print()
    print("\n".join(verdict(results)))
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
