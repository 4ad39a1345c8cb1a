# Widget store: top-level build.
#
#   make            build everything (build/)
#   make deps       install the Debian packages (make up and make test do)
#   make services   the five service binaries only
#   make SAN=1      the same with AddressSanitizer + UBSan (build/asan/)
#   make test       every test: unit, deployment files, then integration
#                   against a real PostgreSQL and Kafka that the harness
#                   starts; unit and integration in both builds, then browser
#   make test-unit  unit tests only (no infrastructure needed)
#   make test-deploy  docker-compose.yml and k8s/ against schemas and code
#   make test-image   build the container image with podman, buy in it
#   make test-browser  headless Chromium against the system `make up` runs
#   make bench      the messaging micro-benchmark
#   make bench-load  the load ladder; make bench-recovery  a crash of each
#                   part under load (BENCHMARKS.md)
#   make up / down  run / stop the whole system locally
#   make format     reformat; make format-check fails on unformatted code

SAN ?= 0
CC ?= cc
PKGS := rdkafka libpq libmicrohttpd libcjson uuid libcrypto

ifeq ($(SAN),1)
BUILD := build/asan
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT := -O1
else
BUILD := build
SANFLAGS :=
OPT := -O2
endif

# Quiet when pkg-config or a library is missing (a fresh machine before
# `make up` or `make test` has installed them); `make all` then says so.
CFLAGS := -std=c11 -Wall -Wextra -Werror $(OPT) -g -pthread $(SANFLAGS) \
	$(shell pkg-config --cflags $(PKGS) 2>/dev/null) -Ishared -Iservices
LDFLAGS := -pthread $(SANFLAGS)
LDLIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm
# Evaluated only where used (unit tests), so the image can build without Check.
CHECK_CFLAGS = $(shell pkg-config --cflags check)
CHECK_LIBS = $(shell pkg-config --libs check)

SHARED_SRC := $(wildcard shared/*.c)
SHARED_OBJ := $(SHARED_SRC:%.c=$(BUILD)/obj/%.o)
SHARED_LIB := $(BUILD)/libshared.a

UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

TOOLS := $(BUILD)/tests/msgtest $(BUILD)/tests/outbox_bench $(BUILD)/tests/loadgen

SERVICES := $(foreach s,$(wildcard services/*/main.c),$(BUILD)/$(patsubst %/main.c,%,$(s)))

.PHONY: deps check-deps all services test test-unit test-deploy test-image test-integration test-browser bench bench-load bench-recovery up down format format-check clean
all: check-deps $(SHARED_LIB) $(UNIT_BIN) $(TOOLS) $(SERVICES)

# The Debian packages (scripts/install-deps.sh; idempotent, quick when all are
# present). `make up` and `make test` run it first, so both work on a fresh
# machine; a plain `make` only checks for the libraries.
deps:
	bash scripts/install-deps.sh

check-deps:
	@pkg-config --exists $(PKGS) 2>/dev/null || { \
		echo "make: libraries missing ($(PKGS)); run 'make deps' (scripts/install-deps.sh) or 'make up'" >&2; \
		exit 1; }

# The five service binaries only (what the container image needs).
services: $(SERVICES)

$(BUILD)/obj/%.o: %.c $(wildcard shared/*.h) services/contracts.h | $(BUILD)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD):
	@mkdir -p $@

$(SHARED_LIB): $(SHARED_OBJ)
	ar rcs $@ $^

$(BUILD)/tests/test_%: tests/unit/test_%.c $(SHARED_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) $< -o $@ $(LDFLAGS) $(SHARED_LIB) $(LDLIBS) $(CHECK_LIBS)

# The api's parked requests and input checks are tested with the api's own
# waiters.c and store.c.
API_UNIT_OBJ := $(BUILD)/obj/services/api/waiters.o $(BUILD)/obj/services/api/store.o
$(BUILD)/tests/test_waiters $(BUILD)/tests/test_store_input: $(BUILD)/tests/test_%: \
		tests/unit/test_%.c $(API_UNIT_OBJ) $(SHARED_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) $< $(API_UNIT_OBJ) -o $@ $(LDFLAGS) \
		$(SHARED_LIB) $(LDLIBS) $(CHECK_LIBS)

$(BUILD)/tests/%: tests/tools/%.c $(SHARED_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< -o $@ $(LDFLAGS) $(SHARED_LIB) $(LDLIBS)

$(BUILD)/tests/%: tests/bench/%.c $(SHARED_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< -o $@ $(LDFLAGS) $(SHARED_LIB) $(LDLIBS)

# The load generator speaks HTTP through libcurl; nothing else links it.
$(BUILD)/tests/loadgen: tests/load/loadgen.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(shell pkg-config --cflags libcurl) $< -o $@ $(LDFLAGS) \
		$(shell pkg-config --libs libcurl) -lm

# Each service: every .c file of services/<name>/ linked with the shared library.
.SECONDEXPANSION:
$(BUILD)/services/%: $$(addprefix $(BUILD)/obj/,$$(subst .c,.o,$$(wildcard services/$$*/*.c))) $(SHARED_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(filter %.o,$^) -o $@ $(LDFLAGS) $(SHARED_LIB) $(LDLIBS)

test-unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

test-integration: all
	BUILD_DIR=$(BUILD) bash tests/integration/run.sh

# docker-compose.yml and k8s/ checked against the schemas and the code.
test-deploy: services
	BUILD_DIR=$(BUILD) bash tests/deploy/run.sh

# The container image built with podman and run against the local
# infrastructure: one purchase to DISPATCHED. Not part of `make test`.
test-image: all
	bash tests/deploy/image.sh

# Every test: unit (normal and sanitizer build), the deployment files, then
# integration (messaging core and end-to-end store) in both builds, then the
# browser test against `make up`.
test:
	bash scripts/install-deps.sh
	$(MAKE) test-unit
	$(MAKE) SAN=1 test-unit
	$(MAKE) test-deploy
	$(MAKE) test-integration
	$(MAKE) SAN=1 test-integration
	$(MAKE) test-browser

# Headless Chromium buys a widget on the page of the running system.
test-browser: all
	bash scripts/up.sh
	bash tests/browser/run.sh

bench: all
	BUILD_DIR=$(BUILD) bash tests/bench/run.sh

# The load ladder of BENCHMARKS.md; LADDER_ARGS to change it, e.g.
# LADDER_ARGS="--rates 50,100 --duration 20".
bench-load: all
	BUILD_DIR=$(BUILD) python3 tests/load/ladder.py $(LADDER_ARGS)

# Each service, PostgreSQL and the broker killed in turn under load: how long
# each was gone, what its crash cost the purchases in flight, invariants after.
# RECOVERY_ARGS to change it, e.g. RECOVERY_ARGS="--targets api,kafka".
bench-recovery: all
	BUILD_DIR=$(BUILD) python3 tests/load/recovery.py $(RECOVERY_ARGS)

# Packages first, then the build (in a new make, which finds the libraries
# just installed), then the system.
up:
	bash scripts/install-deps.sh
	$(MAKE) all
	SKIP_INSTALL=1 bash scripts/up.sh

down:
	bash scripts/down.sh

# Tracked files and new ones not yet added (but not ignored ones, such as build/).
FORMAT_FILES = $(shell git ls-files --cached --others --exclude-standard '*.c' '*.h')
format:
	clang-format -i $(FORMAT_FILES)

format-check:
	clang-format --dry-run --Werror $(FORMAT_FILES)

clean:
	rm -rf build
