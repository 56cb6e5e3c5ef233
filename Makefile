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

# one table (tests/bench/table.py --help): 16 and 100 real daemons (a 10-minute soak at 5% loss
# at 100), 1,000 simulated; as root (namespaces)
TABLE_BENCH ?= --real 16 100 --sim 1000 --minutes 10 --soak 600

bench: setup
	$(PY) -m tests.bench.table $(TABLE_BENCH)
	$(PY) -m tests.bench.converge 4 8 16
	$(PY) -m tests.bench.hostile 1000000
	$(PY) -m tests.bench.lean
	$(PY) -m tests.bench.importtime
	$(PY) -m tests.bench.serf 16

clean:
	rm -rf .venv build *.egg-info
