# bench-api: the API's cost against the HTTP stack's own (test/bench/apibench):
# the real server and a baseline serving the same bytes, each pinned to one
# core, loaded in interleaved pairs; prints median ratios per CPU-second and a
# create's p99 under 200 vs 10 clients. Figures only: nothing is asserted.
# BENCH_API_FLAGS passes flags (e.g. -rounds 9, -duration 3s, -smoke).
.PHONY: bench-api
bench-api: bin/slipway
	$(GO) build -o bin/apibench ./test/bench/apibench
	./bin/apibench -slipway bin/slipway $(BENCH_API_FLAGS)
