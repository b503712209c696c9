# The commands a user and CI run. Every Go module of the repository is
# covered: the root, and otel/, bench/ and safety/ once they exist.
MODULES := . $(wildcard otel bench safety)
STATICCHECK := $(shell go env GOPATH)/bin/staticcheck
# Integration tests never skip under make: redis-server is installed first.
export REDISLOCK_REQUIRE_REDIS := 1

.PHONY: test lint bench bench-smoke fuzz demo redis-server

## test: every test of every module, with -race (fuzz seed corpora included),
## then the allocation budgets, which only hold without -race
test: redis-server
	@set -e; for m in $(MODULES); do echo "== go test -race $$m"; (cd $$m && go test -race -count=1 ./...); done
	@set -e; for m in $(MODULES); do echo "== allocation budgets $$m"; (cd $$m && go test -count=1 -run='Alloc' ./...); done

## test-stress: the root package and internal/, otel/ and safety/ (-short)
## with -race -count=STRESS_COUNT (default 5) while two niced busy loops keep
## both CPUs loaded, as on a busy CI machine; the loops are killed by their
## pid when it ends, pass or fail. Not part of CI: it takes several minutes
STRESS_COUNT ?= 5
.PHONY: test-stress
test-stress: SHELL := /bin/bash
test-stress: redis-server
	@nice -n 19 bash -c 'while :; do :; done' & b1=$$!; \
	nice -n 19 bash -c 'while :; do :; done' & b2=$$!; \
	trap 'kill $$b1 $$b2 2>/dev/null' EXIT; trap 'exit 130' INT TERM; \
	echo "== busy loops $$b1 $$b2"; status=0; \
	echo "== go test -race -count=$(STRESS_COUNT) . ./internal/..."; \
	go test -race -count=$(STRESS_COUNT) -timeout=30m . ./internal/... || status=1; \
	for m in $(filter otel safety,$(MODULES)); do \
	  short=; if [ $$m = safety ]; then short=-short; fi; \
	  echo "== go test -race -count=$(STRESS_COUNT) $$short $$m"; \
	  (cd $$m && go test -race -count=$(STRESS_COUNT) $$short -timeout=30m ./...) || status=1; \
	done; \
	exit $$status

## lint: gofmt, go vet and staticcheck on every module
lint: $(STATICCHECK)
	@set -e; test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt: files above need formatting" >&2; exit 1; }
	@set -e; for m in $(MODULES); do echo "== lint $$m"; (cd $$m && go vet ./... && $(STATICCHECK) ./...); done

$(STATICCHECK):
	go install honnef.co/go/tools/cmd/staticcheck@v0.8.2

## bench: the library's own benchmarks against a real redis-server
bench: redis-server
	go test -run='^$$' -bench=. -benchmem -count=6 .

## bench-compare: the library beside its peers (bench/), as a benchstat table;
## BENCH_ROUNDS=N repeats the whole run N times, interleaving the libraries
## (BENCH_ROUNDS=10 BENCH_COUNT=1 on a noisy machine).
## With BENCH_BASE=<commit>, it compares this work tree with that commit
## instead: the root's uncontended and contended benchmarks (BASE_BENCH) and
## bench/'s contended handoff of lib=redislock (BASE_HANDOFF), both builds
## made first, then run in interleaved rounds (base, head, base, head...),
## into bench/base.txt and bench/head.txt and one benchstat table.
BENCHSTAT := $(shell go env GOPATH)/bin/benchstat
BENCH_COUNT ?= 10
BENCH_ROUNDS ?= 1
BASE_BENCH ?= ObtainRelease|Contended
BASE_HANDOFF ?= ContendedHandoff/shape=/lib=redislock$$
.PHONY: bench-compare
bench-compare: redis-server $(BENCHSTAT)
ifeq ($(BENCH_BASE),)
	@set -e; cd bench; rm -f compare.txt; \
	for r in $$(seq $(BENCH_ROUNDS)); do \
	  go test -run='^$$' -bench=. -benchmem -count=$(BENCH_COUNT) -timeout=0 . | tee -a compare.txt; \
	done; \
	if grep -q -e '^FAIL' -e '^--- FAIL' -e '^panic:' compare.txt; then echo "bench-compare: a benchmark failed" >&2; exit 1; fi; \
	echo; echo "== $(BENCHSTAT) -col /lib bench/compare.txt"; $(BENCHSTAT) -col /lib compare.txt
else
	@set -e; top=$$(pwd); tmp=$$(mktemp -d); \
	trap 'git -C "$$top" worktree remove --force "$$tmp/base" >/dev/null 2>&1; rm -rf "$$tmp"' EXIT; \
	git worktree add -q --detach "$$tmp/base" "$(BENCH_BASE)"; \
	for side in base head; do \
	  src="$$top"; if [ $$side = base ]; then src="$$tmp/base"; fi; \
	  (cd "$$src" && go test -c -o "$$tmp/$$side-root.test" .); \
	  (cd "$$src/bench" && go test -c -o "$$tmp/$$side-bench.test" .); \
	done; \
	rm -f bench/base.txt bench/head.txt; \
	for r in $$(seq $(BENCH_ROUNDS)); do for side in base head; do \
	  echo "== round $$r: $$side"; \
	  "$$tmp/$$side-root.test" -test.run='^$$' -test.bench='$(BASE_BENCH)' -test.benchmem -test.count=$(BENCH_COUNT) -test.timeout=0 | tee -a bench/$$side.txt; \
	  (cd bench && "$$tmp/$$side-bench.test" -test.run='^$$' -test.bench='$(BASE_HANDOFF)' -test.benchmem -test.count=$(BENCH_COUNT) -test.timeout=0) | tee -a bench/$$side.txt; \
	done; done; \
	if grep -q -e '^FAIL' -e '^--- FAIL' -e '^panic:' bench/base.txt bench/head.txt; then echo "bench-compare: a benchmark failed" >&2; exit 1; fi; \
	echo; echo "== $(BENCHSTAT) bench/base.txt bench/head.txt ($(BENCH_BASE) vs the work tree)"; $(BENCHSTAT) bench/base.txt bench/head.txt
endif

$(BENCHSTAT):
	go install golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da

## bench-plot: BenchmarkContendedHandoff (BENCH_PLOT_N acquisitions a case),
## then the CDF of its waits, a panel per shape, into bench/waits.png; its
## output goes to bench/waits.txt, the raw waits to BENCH_WAITS_DIR (kept when
## given, else a temporary directory that is removed)
BENCH_PLOT_N ?= 3000
.PHONY: bench-plot
bench-plot: redis-server
	@set -e; cd bench; dir="$(BENCH_WAITS_DIR)"; tmp=; \
	if [ -z "$$dir" ]; then dir=$$(mktemp -d); tmp=$$dir; fi; mkdir -p "$$dir"; \
	BENCH_WAITS_DIR="$$dir" go test -run='^$$' -bench='ContendedHandoff' -benchtime=$(BENCH_PLOT_N)x -count=1 -timeout=0 . | tee waits.txt; \
	if grep -q -e '^FAIL' -e '^--- FAIL' -e '^panic:' waits.txt; then echo "bench-plot: a benchmark failed" >&2; exit 1; fi; \
	go run ./cmd/waitcdf -dir "$$dir" -o waits.png; \
	if [ -n "$$tmp" ]; then rm -rf "$$tmp"; fi; echo "wrote bench/waits.png"

## bench-smoke: every benchmark of every module once, so a broken one is caught
bench-smoke: redis-server
	@set -e; for m in $(MODULES); do (cd $$m && go test -run='^$$' -bench=. -benchtime=1x ./...); done

## fuzz: each fuzz target for FUZZTIME (default 30s)
FUZZTIME ?= 30s
fuzz:
	@set -e; for f in $$(go test -list='^Fuzz' . | grep ^Fuzz); do go test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) .; done

## demo: the runnable demo on an embedded miniredis
demo:
	go run ./cmd/redislock bench

## redis-server: install redis-server when missing (Debian, as root), or say how
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "redis-server is missing: installing Debian's package"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "redis-server is missing; install it with: sudo apt-get install -y redis-server" >&2; exit 1; \
	  fi; }
