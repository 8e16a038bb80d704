# Reciprocity: `make run` starts the platform, `make test` runs the whole suite. `make help` lists the rest.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := libs/kit services/coupon services/points services/recommend services/survey gateway
PYPROJECTS := $(foreach p,$(PACKAGES),$(p)/pyproject.toml)
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test lint format bench eval-recommend demo import clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): constraints.txt requirements-dev.txt $(PYPROJECTS)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -r requirements-dev.txt $(addprefix -e ,$(PACKAGES))
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install every package (pinned by constraints.txt)

run: install ## start the database (embedded unless DATABASE_URL), migrate, run all five processes
	$(BIN)/python scripts/run.py

test: install ## run the whole suite (embedded PostgreSQL, or TEST_DATABASE_URL when set)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install ## ruff, mypy, and SQL only in repositories, tables and migrations
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python scripts/check_sql_placement.py

format: install ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install ## benchmarks, printed as tables with their ceilings measured in the same run
	$(BIN)/python -m scripts.bench $(BENCH_ARGS)

eval-recommend: install ## offline evaluation of the recommender: every protocol, tuned baselines, MovieLens 100K held out (long: the full search)
	$(BIN)/python -m scripts.eval_recommend

import: install ## KIND=purchases|balances|codes|opt-outs FILE=path [CAMPAIGN=id] [MAP="ours=theirs ..."]: import into a running platform
	$(BIN)/python -m scripts.importer $(KIND) $(FILE) $(if $(CAMPAIGN),--campaign $(CAMPAIGN)) $(foreach m,$(MAP),--map $(m)) $(if $(REFERENCE_PREFIX),--reference-prefix $(REFERENCE_PREFIX))

demo: install ## replay the Online Retail sample into a running `make run` platform
	$(BIN)/python -m scripts.demo

clean: ## remove the virtualenv and local data (.data holds the embedded database)
	rm -rf $(VENV) .data test-artifacts
