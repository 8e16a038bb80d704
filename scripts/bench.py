"""`make bench`: every benchmark in turn, each printing its table(s). `make bench BENCH_ARGS=points` runs one."""

from __future__ import annotations

import importlib
import sys
import time

BENCHMARKS = (
    "gateway",
    "shared_limits",
    "points",
    "coupon",
    "recommend",
    "recommend_training",
    "survey",
    "purchases",
    "overview",
    "import",
    "experiments",
    "switching",
    "console",
    "webhooks",
)


def main() -> None:
    chosen = sys.argv[1:] or list(BENCHMARKS)
    for name in chosen:
        try:
            module = importlib.import_module(f"scripts.bench_{name}")
        except ModuleNotFoundError:
            print(f"\n(no benchmark for {name} yet)")
            continue
        started = time.perf_counter()
        print(f"\n## {name}", flush=True)
        module.main()
        print(f"\n({name}: {time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
