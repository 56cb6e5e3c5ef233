# Two commands do everything on a fresh Debian bookworm machine, as root:
#   make demo   a lab of real daemons in network namespaces, every node's showmap, then cleanup
#   make test   lint, type check and every test (unit, namespaces, packaging, systemd containers, Ansible)
PY := .venv/bin/python

.PHONY: setup demo test lint bench clean
setup:
	@bash tools/setup.sh

demo: setup
	$(PY) -m tests.lab.demo

lint: setup
	$(PY) -m ruff check omdisc tests
	$(PY) -m mypy

test: lint
	$(PY) -m pytest -v -p no:cacheprovider tests

# the simulated table (tests/bench/sim.py --help): about an hour today, nearly all of it the engines at 1,000 nodes
SIM_BENCH ?= --sizes 100 1000 --storm-max 1000 --minutes 10

bench: setup
	$(PY) -m tests.bench.sim $(SIM_BENCH)
	$(PY) -m tests.bench.converge 4 8 16
	$(PY) -m tests.bench.hostile 1000000
	$(PY) -m tests.bench.lean

clean:
	rm -rf .venv build *.egg-info
