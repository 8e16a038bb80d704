"""Training on a million interactions (issue 14's goal: under 60 s on 2 cores, tuning included).

The whole Online Retail history (397k clean purchase lines) three times over, each copy with customers of its own
(1.19 million lines, 13,000 customers, the same 3,659 products), trained as the service's training child does:
occasions from the lines, :func:`recommend.tuning.tune` within the service's default budget (30 s), then the final
model on everything and its stored form. Reading the lines from PostgreSQL comes on top (the recommend benchmark's
"training" row measures the service end to end on the 397k lines).

Each step is reported in wall seconds and in CPU seconds of this process (one BLAS thread, so CPU is what the step
costs on an idle core; on a shared machine the wall time is longer). The service bounds the search by wall time;
here its 30 s are counted in CPU seconds of this process, so the search tries what it would on an idle core however
busy the machine, and the CPU total is the wall time an idle core would take (RECOMMEND_BENCH_WALL_BUDGET=1 counts
wall time, as the service does). The chosen settings (those that differ from the defaults) and the validation
scores are printed under the table.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the training child (one BLAS thread)

import numpy as np

from recommend.model import Params, train
from recommend.store import dumps
from recommend.tuning import Purchases, aggregate, settings_dict, tune
from scripts.benchlib import print_table
from scripts.online_retail import FULL, category_for, rows

COPIES = 3
BUDGET = 30.0
# the budget in CPU seconds of this process: the search tries what it would on an idle core, however busy the machine
# (then the CPU column is what the wall time would be on an idle core); RECOMMEND_BENCH_WALL_BUDGET=1: wall time, as
# the service counts it
CPU_BUDGET = os.environ.get("RECOMMEND_BENCH_WALL_BUDGET", "") != "1"


def main() -> None:
    customers: list[str] = []
    products: list[str] = []
    times: list[float] = []
    categories: dict[str, str] = {}
    for row in rows(FULL):
        categories.setdefault(row.product_id, category_for(row.description))
        for copy in range(COPIES):
            customers.append(f"{row.customer_id}#{copy}")
            products.append(row.product_id)
            times.append(row.occurred_at.timestamp())
    marks = [(time.perf_counter(), time.process_time())]
    purchases = Purchases.from_rows(customers, products, np.array(times), categories=categories)
    marks.append((time.perf_counter(), time.process_time()))
    report = tune(purchases, budget_seconds=BUDGET, clock=time.process_time if CPU_BUDGET else time.perf_counter)
    marks.append((time.perf_counter(), time.process_time()))
    model = train(aggregate(purchases), version=1, params=report.params)
    blob = dumps(model)
    marks.append((time.perf_counter(), time.process_time()))
    steps = [
        "occasions from the lines",
        f"tuning (budget {BUDGET:.0f} s {'CPU' if CPU_BUDGET else 'wall'}, {report.split} slice,"
        f" {report.tried} settings tried)",
        "final training on everything + stored form",
    ]
    rows_ = [
        [step, after[0] - before[0], after[1] - before[1]]
        for step, before, after in zip(steps, marks[:-1], marks[1:], strict=True)
    ]
    wall, cpu = marks[-1][0] - marks[0][0], marks[-1][1] - marks[0][1]
    rows_.append(["total", wall, cpu])
    print_table(
        f"Training on {len(customers):,} purchase lines ({len(purchases):,} occasions, {model.customers:,} customers)",
        ["step", "seconds (wall)", "seconds (CPU)"],
        rows_,
    )
    defaults = settings_dict(Params())
    changed = {k: v for k, v in settings_dict(report.params).items() if defaults[k] != v}
    print(f"\nchosen settings (changed from the defaults): {changed or 'none'}")
    print(f"validation: {report.as_dict()}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"model {len(blob) / 2**20:.1f} MiB stored; load average {load};"
        f" goal under 60 s: {'met' if wall < 60 else 'NOT met'} in wall time here,"
        f" {'met' if cpu < 60 else 'NOT met'} in CPU time (the wall time of an idle core)"
    )


if __name__ == "__main__":
    main()
