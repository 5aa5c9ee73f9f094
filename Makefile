# Two entry points: `make reproduce` (the embedded reproduction) and `make test`.
# Both create .venv on first use with the Python 3.11 found on PATH.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CORES ?= all

.PHONY: lock setup reproduce critical-path test test-fast bench lint report readme schema readme-check pull record clean-results

# A fresh clone's set-up time goes to benchmarks/setup.json (the README's timings block)
$(STAMP): pyproject.toml
	@date +%s.%N > .setup-start
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@test -d benchmarks || $(BIN)/python -m ambient.pipeline.readme_tables --record-setup $$(cat .setup-start) --benchmarks benchmarks
	@rm -f .setup-start
	touch $(STAMP)

setup: $(STAMP)

# The exact packages of .venv (what the recorded run used), pinned: requirements.lock.
# `pip install -r requirements.lock && pip install --no-deps -e .` rebuilds that environment.
lock: $(STAMP)
	@{ echo "# pip freeze of .venv (make lock): the packages of the recorded run, pinned"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -vi '^pyflakes=='; } > requirements.lock
	@echo "wrote requirements.lock ($$(grep -vc '^#' requirements.lock) packages)"

# The wall time of the whole run goes to benchmarks/reproduce.json, its throughput bound and
# longest chain to benchmarks/critical_path.json (both feed the README's timings block)
reproduce: $(STAMP)
	@start=$$(date +%s.%N); $(BIN)/snakemake --cores $(CORES) && \
	$(BIN)/python -m ambient.pipeline.readme_tables --record-wall $$start --benchmarks benchmarks && \
	$(BIN)/python -m ambient.pipeline.critical_path --json benchmarks/critical_path.json

# Where the last run's wall time went (Snakemake's metadata): throughput bound, longest chain
critical-path: $(STAMP)
	$(BIN)/python -m ambient.pipeline.critical_path

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# The roofline and the speed-ups, side by side on this machine; benchmarks/bench.json feeds `make readme`
bench: $(STAMP)
	$(BIN)/python -m ambient.pipeline.bench --packing --json benchmarks/bench.json

# ruff (pyproject.toml) on the code and notebooks, then Snakemake's own lint of the workflow
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakemake --lint

report: $(STAMP)
	$(BIN)/snakemake --report results/report.html

# The README's results, claims and per-rule time tables, generated from the run's own files
readme: $(STAMP)
	$(BIN)/python -m ambient.pipeline.readme_tables

# The config schema's training and network sections, generated from their dataclasses (ambient/settings.py)
schema: $(STAMP)
	$(BIN)/python -m ambient schema

readme-check: $(STAMP)
	$(BIN)/python -m ambient.pipeline.readme_tables --check

# DVC (docs/dvc.md): the consumer path (dvc pull, mtimes in phase order, dvc status clean), and
# recording the run `make reproduce` made into dvc.lock without running anything again (the temporary
# files of killed writes removed first)
pull: $(STAMP)
	$(BIN)/python -m ambient.pipeline.pull

record: $(STAMP)
	$(BIN)/python -m ambient.pipeline.integrity --clean-temp && $(BIN)/dvc commit --force --no-relink && $(BIN)/dvc status

clean-results:
	rm -rf results logs benchmarks .snakemake
