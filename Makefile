# kudufs — see README.md. `make demo` and `make test` install what they need.
VERSION   := 0.1.0
PREFIX    ?= /usr/local
PYTHON    ?= /usr/bin/python3
PKGS      := fuse3 libcurl jansson inih
BUILD     ?= build
CC        ?= cc
OPTFLAGS  ?= -O2 -g
SANFLAGS  ?=

# pkg-config runs lazily (=), after install-deps has had its chance.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS))
CPPFLAGS  += -D_GNU_SOURCE -DKUDUFS_VERSION='"$(VERSION)"' -I.
CFLAGS    += -std=c11 -Wall -Wextra -Werror -pthread $(OPTFLAGS) $(SANFLAGS) $(PKG_CFLAGS)
LDLIBS    += $(PKG_LIBS) -pthread
LDFLAGS   += $(SANFLAGS)

KUDU_SRC  := kudu/config.c kudu/errors.c kudu/client.c kudu/instances.c kudu/model.c kudu/log.c
CACHE_SRC := cache/cache.c cache/meta.c cache/spool.c cache/capture.c cache/status.c
FS_SRC    := fs/main.c fs/ops.c
LIB_OBJ   := $(patsubst %.c,$(BUILD)/%.o,$(KUDU_SRC) $(CACHE_SRC))
FS_OBJ    := $(patsubst %.c,$(BUILD)/%.o,$(FS_SRC))
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN  := $(patsubst tests/unit/%.c,$(BUILD)/unit/%,$(UNIT_SRC))
TOOL_BIN  := $(BUILD)/tools/kudu_fetch
BIN       ?= kudufs

.PHONY: all deps deps-demo unit test asan demo bench soak install uninstall clean check-tree
all: $(BIN) $(UNIT_BIN) $(TOOL_BIN)

$(BIN): $(LIB_OBJ) $(FS_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/unit/%: tests/unit/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tools/%: tests/tools/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

-include $(LIB_OBJ:.o=.d) $(FS_OBJ:.o=.d)

deps:
	@scripts/install-deps test
deps-demo:
	@scripts/install-deps demo

# The closing line of `make test` is pytest's summary ("N passed in Xs").
test: deps
	@$(MAKE) --no-print-directory all
	KUDUFS_BIN=$(CURDIR)/$(BIN) KUDUFS_UNIT_DIR=$(CURDIR)/$(BUILD)/unit KUDUFS_TOOLS_DIR=$(CURDIR)/$(BUILD)/tools \
	  $(PYTHON) -m pytest -p no:cacheprovider -ra $(PYTEST_ARGS) tests

# ASan + UBSan build in build-asan/, the whole test suite against it; any
# sanitizer report (written to build-asan/san.*) fails the run.
asan: deps
	@rm -rf build-asan/san.*
	@$(MAKE) --no-print-directory BUILD=build-asan BIN=build-asan/kudufs \
	  SANFLAGS='-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined' \
	  OPTFLAGS='-O1 -g' all
	ASAN_OPTIONS=detect_leaks=1:log_path=$(CURDIR)/build-asan/san:abort_on_error=0 \
	UBSAN_OPTIONS=print_stacktrace=1:log_path=$(CURDIR)/build-asan/san \
	KUDUFS_BIN=$(CURDIR)/build-asan/kudufs KUDUFS_UNIT_DIR=$(CURDIR)/build-asan/unit KUDUFS_TOOLS_DIR=$(CURDIR)/build-asan/tools \
	  $(PYTHON) -m pytest -p no:cacheprovider -ra -m 'not slow' $(PYTEST_ARGS) tests
	@if ls build-asan/san.* >/dev/null 2>&1; then \
	  echo "sanitizer reports:"; cat build-asan/san.*; echo "asan: FAILED"; exit 1; \
	else echo "asan: no sanitizer reports"; fi

demo: deps-demo
	@$(MAKE) --no-print-directory $(BIN)
	@KEEP=$(KEEP) scripts/demo

bench: deps
	@$(MAKE) --no-print-directory $(BIN)
	$(PYTHON) tests/bench/bench.py

soak: deps
	@$(MAKE) --no-print-directory $(BIN)
	KUDUFS_BIN=$(CURDIR)/$(BIN) $(PYTHON) -m pytest -p no:cacheprovider -ra -m slow tests

install: $(BIN)
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/kudufs
	install -m 0755 scripts/kudufs-to-blob scripts/kudufs-import-publish-settings $(DESTDIR)$(PREFIX)/bin/
	install -d $(DESTDIR)$(PREFIX)/share/kudufs/webhook
	install -m 0644 scripts/webhook/* $(DESTDIR)$(PREFIX)/share/kudufs/webhook/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/kudufs $(DESTDIR)$(PREFIX)/bin/kudufs-to-blob \
	  $(DESTDIR)$(PREFIX)/bin/kudufs-import-publish-settings
	rm -rf $(DESTDIR)$(PREFIX)/share/kudufs

clean:
	rm -rf $(BUILD) build-asan $(BIN) bench.json
