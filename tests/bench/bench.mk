# `make bench` (included by the Makefile): Envoy without the filter, with the
# no-op filter, with ours, and the test host with ours, in alternating wrk
# rounds; writes BENCHMARKS.md. ROUNDS=, DURATION= (seconds) override.
.PHONY: bench
bench:
	python3 tests/bench/bench.py
