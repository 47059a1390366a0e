# Starling: `make demo` and `make test` set up everything they need on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages the tests and the demo drive for real (gcc and python3-dev build
# p2psim's optional compiled modules).
DEB_PACKAGES := docker-registry containerd redis-server skopeo prometheus chromium gcc python3-dev
DEB_COMMANDS := docker-registry containerd redis-server skopeo promtool chromium gcc python3-config

.PHONY: all venv deps lint test test-fast demo sim-accel bench bench-cluster model clean

all: test

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Starling needs Python >= 3.11 (found $$($(PYTHON) --version))"; exit 1; }
	@$(PYTHON) -m venv $(VENV) || { \
		echo "python3 -m venv failed: on Debian, apt-get install python3-venv"; exit 1; }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# Installs missing Debian packages when run as root; otherwise says what is missing.
deps:
	@missing=""; for cmd in $(DEB_COMMANDS); do command -v $$cmd >/dev/null || missing="$$missing $$cmd"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing Debian packages:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEB_PACKAGES) >/dev/null; \
		else \
			echo "missing:$$missing (run as root to install, or: apt-get install $(DEB_PACKAGES)); tests needing them will fail"; \
		fi; \
	fi

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: deps venv lint
	$(BIN)/pytest -q

# Unit and integration tests only, no containerd.
test-fast: venv
	$(BIN)/pytest -q -m "not e2e"

demo: deps venv sim-accel
	$(BIN)/python deploy/local/demo.py

# p2psim's hottest modules compiled with mypyc into build/sim-accel (simulations/accel.py):
# about 1.4x faster, same results. Optional: without a C compiler p2psim runs as pure Python.
sim-accel: venv
	@$(BIN)/python -m simulations.accel_build || echo "p2psim runs as pure Python"

# Long (about 15 minutes); results land in bench/results/*.json.
bench: deps venv sim-accel
	$(BIN)/python -m bench.mirror_bench
	$(BIN)/python -m bench.relay_ceiling
	$(BIN)/python -m bench.swarm_bench
	$(BIN)/python -m bench.sched_bench
	$(BIN)/python -m bench.model_bench --json bench/results/model.json
	$(BIN)/python -m bench.sim_bench

# As root (network namespaces, tc): real processes on an emulated network, three scenarios,
# against p2psim; about 15 minutes; results in bench/results/cluster-*.json and *.png.
bench-cluster: deps venv
	$(BIN)/python -m bench.cluster_bench

# The learned evaluator's shipped model: simulated training scenarios
# (simulations/scenarios/training/) write transfer records to build/records, then the
# model is trained on them (about 4 minutes; ~600 MB of records).
model: venv
	$(BIN)/python -m simulations.training --records build/records \
		--out scheduler/learning/default_model.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
