PY ?= .venv/bin/python

.PHONY: test bench bench-quick

test:
	$(PY) -m pytest -q

bench:
	$(PY) -m benchmarks.bench_core 20000

bench-quick:
	$(PY) -m benchmarks.bench_core 2000
