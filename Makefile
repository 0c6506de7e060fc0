# twinproxy: the only entry points. `make test` and `make bench` install what they need.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
LLHTTP := $(CURDIR)/build/deps/llhttp
export LLHTTP
C_DIRS := c-proxy upstreams loadtest/olgen

.PHONY: all deps build test test-unit test-conformance asan test-asan tsan test-tsan fmt lint clean \
        bench bench-quick bench-smoke valgrind perf-per-request perf-capacity fuzz \
        valgrind-conformance lint-c-deep

all: build

deps:
	@bash scripts/deps.sh

build: deps
	@for d in $(C_DIRS); do [ -f $$d/Makefile ] && $(MAKE) -s -C $$d all || exit 1; done

# Unit tests of both twins and of the lab, then the conformance suite against both twins.
test: build test-unit test-conformance

test-unit: build
	@for d in $(C_DIRS); do [ -f $$d/Makefile ] && $(MAKE) -s -C $$d test || exit 1; done
	$(PYTEST) -q py-proxy/tests loadtest/tests

test-conformance: build
	$(PYTEST) -q conformance

# ASan + UBSan builds; CI runs the whole conformance suite against them.
asan: deps
	@$(MAKE) -s -C c-proxy asan
	@$(MAKE) -s -C upstreams all

test-asan: asan
	@$(MAKE) -s -C c-proxy test-asan
	TWINPROXY_IMPLS=c TWINPROXY_C_PROXY=$(CURDIR)/c-proxy/build-asan/c-proxy \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(PYTEST) -q conformance

# ThreadSanitizer build of c-proxy (clang): the unit tests that run threads, then the
# conformance tests that run several workers (threads) or the admin thread against it;
# any data race report fails the test (halt_on_error, and the harness's stderr check).
tsan: deps
	@$(MAKE) -s -C c-proxy tsan
	@$(MAKE) -s -C upstreams all

TSAN_TESTS ?= conformance/test_workers.py conformance/test_admin.py conformance/test_forwarding.py \
              conformance/test_ratelimit.py conformance/test_health.py conformance/test_signals.py
TSAN_SELECT ?= workers or admin or every_worker or fail_timeout_then_back or check_removes
test-tsan: tsan
	@$(MAKE) -s -C c-proxy test-tsan
	TWINPROXY_IMPLS=c TWINPROXY_C_PROXY=$(CURDIR)/c-proxy/build-tsan/c-proxy \
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	  $(PYTEST) -q $(TSAN_TESTS) -k "$(TSAN_SELECT)"

valgrind: build
	@$(MAKE) -s -C c-proxy valgrind

# The conformance subset that walks the data path (forwarding, keep-alive) against c-proxy
# under valgrind memcheck: any error or leak makes the proxy exit 97 and the test fail.
VALGRIND_TESTS ?= conformance/test_forwarding.py conformance/test_keepalive.py
valgrind-conformance: build
	TWINPROXY_IMPLS=c TWINPROXY_C_PROXY=$(CURDIR)/c-proxy/tests/valgrind-c-proxy.sh \
	  $(PYTEST) -q -n 2 $(VALGRIND_TESTS)

# clang-tidy (/.clang-tidy) + cppcheck over every C source (also run by `lint`).
lint-c-deep: deps
	@bash scripts/lint-c-deep.sh all

# libFuzzer harnesses under ASan+UBSan (c-proxy/fuzz/README.md), FUZZ_SECONDS each.
FUZZ_SECONDS ?= 60
fuzz: deps
	@$(MAKE) -s -C c-proxy fuzz FUZZ_SECONDS=$(FUZZ_SECONDS)

fmt:
	@for d in $(C_DIRS); do [ -f $$d/Makefile ] && $(MAKE) -s -C $$d fmt; done
	$(VENV)/bin/ruff format py-proxy conformance loadtest upstreams

lint: deps
	@for d in $(C_DIRS); do [ -f $$d/Makefile ] && $(MAKE) -s -C $$d lint || exit 1; done
	@bash scripts/lint-c-deep.sh all
	$(VENV)/bin/ruff check py-proxy conformance loadtest
	$(VENV)/bin/ruff format --check py-proxy
	cd py-proxy && ../$(VENV)/bin/mypy --strict pyproxy

bench: build
	$(PY) -m loadtest.bench --profile full

bench-quick: build
	$(PY) -m loadtest.bench --profile quick

bench-smoke: build
	$(PY) -m loadtest.bench --profile smoke --force --out build/bench-smoke

# CPU per keep-alive GET (callgrind instructions, strace syscalls; docs/performance.md).
# PERF_IMPLS: c-proxy[=BINARY] py-proxy[=BINARY] nginx haproxy; PERF_ARGS: e.g. -r 2 -n 20000
PERF_IMPLS ?= c-proxy
PERF_ARGS ?=
perf-per-request: build
	bash loadtest/perf/per_request.sh $(PERF_ARGS) $(PERF_IMPLS)

# S1-shaped wrk capacity of c-proxy binaries, alternating them (noisy: wall clock)
PERF_BINARIES ?= c-proxy/build/c-proxy
perf-capacity: build
	bash loadtest/perf/capacity.sh $(PERF_ARGS) $(PERF_BINARIES)

clean:
	@for d in $(C_DIRS); do [ -f $$d/Makefile ] && $(MAKE) -s -C $$d clean; done
	rm -rf build
