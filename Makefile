# twinproxy: the only entry points. `make test` and `make bench` install what they need.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
LLHTTP := $(CURDIR)/build/deps/llhttp
export LLHTTP
C_DIRS := c-proxy upstreams loadtest/olgen loadtest/nullproxy

.PHONY: all deps build test test-unit test-conformance asan test-asan tsan test-tsan fmt lint clean \
        bench bench-quick bench-smoke valgrind perf-per-request perf-capacity fuzz \
        perf-profile perf-per-request-all \
        valgrind-conformance lint-c-deep install uninstall test-install perf-scrape slow-clients soak

all: build

deps:
	@bash scripts/deps.sh

build: deps
	@for d in $(C_DIRS); do [ -f $$d/Makefile ] && $(MAKE) -s -C $$d all || exit 1; done

# Unit tests of both twins and of the lab, then the conformance suite against both twins.
test: build test-unit test-conformance

test-unit: build
	@for d in $(C_DIRS); do [ -f $$d/Makefile ] && $(MAKE) -s -C $$d test || exit 1; done
	$(PYTEST) -q py-proxy/tests loadtest/tests testkit/tests tests

test-conformance: build
	$(PYTEST) -q conformance

# The randomized soak (conformance/soak.py, docs/conformance.md "Soak") against both twins:
# SOAK_REQUESTS per twin after a warm-up of a tenth of that; `make test` runs the same test
# with 6,000. SOAK_SEED replays a run (the report prints it).
SOAK_REQUESTS ?= 100000
SOAK_SEED ?= 1107
soak: build
	SOAK_REQUESTS=$(SOAK_REQUESTS) SOAK_SEED=$(SOAK_SEED) $(PYTEST) -q -s conformance/test_soak.py

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
	$(VENV)/bin/ruff format py-proxy conformance loadtest upstreams testkit

lint: deps
	@for d in $(C_DIRS); do [ -f $$d/Makefile ] && $(MAKE) -s -C $$d lint || exit 1; done
	@bash scripts/lint-c-deep.sh all
	$(VENV)/bin/ruff check py-proxy conformance loadtest testkit tests
	$(VENV)/bin/ruff format --check py-proxy
	cd py-proxy && ../$(VENV)/bin/mypy --strict pyproxy
	MYPYPATH=py-proxy $(VENV)/bin/mypy --strict testkit/testkit

bench: build
	$(PY) -m loadtest.bench --profile full

bench-quick: build
	$(PY) -m loadtest.bench --profile quick

bench-smoke: build
	$(PY) -m loadtest.bench --profile smoke --force --out build/bench-smoke

# 999 slow clients against each twin: normal-request p50/p99 with and without them,
# outcomes per kind, fds and RSS; rewrites the "Slow clients" section of docs/conformance.md
slow-clients: build
	$(PY) conformance/slowclients.py bench --write

# CPU per keep-alive GET (callgrind instructions, strace syscalls; docs/performance.md).
# PERF_IMPLS: c-proxy[=BINARY] py-proxy[=BINARY] nginx haproxy; PERF_ARGS: e.g. -r 2 -n 20000
PERF_IMPLS ?= c-proxy
PERF_ARGS ?=
perf-per-request: build
	bash loadtest/perf/per_request.sh $(PERF_ARGS) $(PERF_IMPLS)

# Where the time goes (docs/performance.md): each twin pinned at one fixed olgen load, perf
# (C and Python) and py-spy --native (Python), flame graphs and a CPU share table; then
# instructions, syscalls and context switches per request for every contender (c-proxy,
# py-proxy, nginx, HAProxy, the null proxy, direct). Output: $(PROFILE_DIR), default
# results/<UTC time>-<sha>-profile/profile. PROFILE_ARGS: e.g. -d 20 -r 2000.
PROFILE_ARGS ?=
PER_REQUEST_ALL_ARGS ?=
perf-profile: build
	@dir=$${PROFILE_DIR:-results/$$(date -u +%Y%m%dT%H%M%SZ)-$$(git rev-parse --short HEAD)-profile/profile}; \
	  rc=0; bash loadtest/profile/profile.sh -o "$$dir" $(PROFILE_ARGS) || rc=1; \
	  bash loadtest/perf/per_request_all.sh -o "$$dir" $(PER_REQUEST_ALL_ARGS) || rc=1; exit $$rc

# only the per-request table of perf-profile
perf-per-request-all: build
	bash loadtest/perf/per_request_all.sh $(PER_REQUEST_ALL_ARGS)

# S1-shaped wrk capacity of c-proxy binaries, alternating them (noisy: wall clock)
PERF_BINARIES ?= c-proxy/build/c-proxy
perf-capacity: build
	bash loadtest/perf/capacity.sh $(PERF_ARGS) $(PERF_BINARIES)

# CPU per stats scrape of each contender (docs/benchmarking.md "Scrape cost"); pointing
# PERF_SCRAPE_OUT at a results folder adds the table to that folder's report.
PERF_SCRAPE_OUT ?= build/perf-scrape
PERF_SCRAPE_ARGS ?=
perf-scrape: build
	$(PY) -m loadtest.perf.scrape_cost -o $(PERF_SCRAPE_OUT) $(PERF_SCRAPE_ARGS)

# Install (docs/operations.md "Installing"): PREFIX=/usr/local, DESTDIR= for staging.
# PYTHON: the interpreter the installed py-proxy runs (it needs httptools 0.9.0 and PyYAML;
# uvloop for --loop uvloop); TWINPROXY_PYTHON overrides it when py-proxy runs.
PREFIX     ?= /usr/local
DESTDIR    ?=
PYTHON     ?= python3
BINDIR     := $(PREFIX)/bin
PYLIBDIR   := $(PREFIX)/lib/twinproxy
DOCDIR     := $(PREFIX)/share/doc/twinproxy
MAN1DIR    := $(PREFIX)/share/man/man1
SYSCONFDIR ?= $(PREFIX)/etc
MANPAGES   := c-proxy.1 py-proxy.1 twinproxy-upstream.1
install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(PYLIBDIR)/pyproxy $(DESTDIR)$(DOCDIR) \
	  $(DESTDIR)$(MAN1DIR) $(DESTDIR)$(SYSCONFDIR)/twinproxy
	install -m 755 c-proxy/build/c-proxy $(DESTDIR)$(BINDIR)/c-proxy
	install -m 755 upstreams/build/upstream $(DESTDIR)$(BINDIR)/twinproxy-upstream
	install -m 644 py-proxy/pyproxy/*.py $(DESTDIR)$(PYLIBDIR)/pyproxy/
	printf '%s\n' 'httptools==0.9.0' 'PyYAML' 'uvloop  # only for --loop uvloop' \
	  > $(DESTDIR)$(PYLIBDIR)/requirements.txt
	printf '%s\n' '#!/bin/sh' '# py-proxy, the Python twin of twinproxy (make install; py-proxy(1)).' \
	  'PYTHONPATH="$(PYLIBDIR)$${PYTHONPATH:+:$$PYTHONPATH}"' 'export PYTHONPATH' \
	  'exec "$${TWINPROXY_PYTHON:-$(PYTHON)}" -c '"'"'import sys; sys.argv[0] = "py-proxy"; from pyproxy.main import main; main()'"'"' "$$@"' \
	  > $(DESTDIR)$(BINDIR)/py-proxy
	chmod 755 $(DESTDIR)$(BINDIR)/py-proxy
	install -m 644 README.md docs/*.md $(wildcard docs/*.json) $(DESTDIR)$(DOCDIR)/
	install -m 644 $(addprefix docs/man/,$(MANPAGES)) $(DESTDIR)$(MAN1DIR)/
	@# an edited config is never overwritten
	[ -e $(DESTDIR)$(SYSCONFDIR)/twinproxy/twinproxy.yaml ] || \
	  install -m 644 twinproxy.yaml $(DESTDIR)$(SYSCONFDIR)/twinproxy/twinproxy.yaml
	@$(PYTHON) -c 'import httptools, yaml' 2>/dev/null || echo "install: note: $(PYTHON) lacks" \
	  "httptools/PyYAML: install $(PYLIBDIR)/requirements.txt for it, or run make install" \
	  "PYTHON=/path/to/a/python that has them (py-proxy(1))"

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/c-proxy $(DESTDIR)$(BINDIR)/py-proxy \
	  $(DESTDIR)$(BINDIR)/twinproxy-upstream $(addprefix $(DESTDIR)$(MAN1DIR)/,$(MANPAGES))
	rm -rf $(DESTDIR)$(PYLIBDIR) $(DESTDIR)$(DOCDIR)
	@echo "uninstall: $(DESTDIR)$(SYSCONFDIR)/twinproxy/ kept (your config)"

# make install into a temporary prefix, then run what it installed (tests/test_install.py)
test-install: build
	$(PYTEST) -q tests/test_install.py

clean:
	@for d in $(C_DIRS); do [ -f $$d/Makefile ] && $(MAKE) -s -C $$d clean; done
	rm -rf build
