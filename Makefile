PY ?= .venv/bin/python

.PHONY: test bench bench-quick

test:
	$(PY) -m pytest -q

bench:
	$(PY) -m benchmarks.run

bench-quick:
	$(PY) -m benchmarks.run --quick
