# kudufs — see README.md. `make demo` and `make test` install what they need.
# The version lives in debian/changelog (dpkg-buildpackage reads it there).
VERSION   := $(shell head -n 1 debian/changelog | cut -d'(' -f2 | cut -d')' -f1)
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
DATADIR   ?= $(PREFIX)/share
MANDIR    ?= $(DATADIR)/man
UNITDIR   ?= $(PREFIX)/lib/systemd/system
COMPDIR   ?= $(DATADIR)/bash-completion/completions
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

KUDU_SRC  := kudu/config.c kudu/errors.c kudu/platform.c kudu/client.c kudu/instances.c kudu/model.c kudu/log.c
CACHE_SRC := cache/cache.c cache/meta.c cache/spool.c cache/capture.c cache/status.c
FS_SRC    := fs/main.c fs/ops.c
LIB_OBJ   := $(patsubst %.c,$(BUILD)/%.o,$(KUDU_SRC) $(CACHE_SRC))
FS_OBJ    := $(patsubst %.c,$(BUILD)/%.o,$(FS_SRC))
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN  := $(patsubst tests/unit/%.c,$(BUILD)/unit/%,$(UNIT_SRC))
TOOL_BIN  := $(BUILD)/tools/kudu_fetch
BIN       ?= kudufs

.PHONY: all deps deps-demo deps-lint unit test asan lint format demo bench soak install uninstall clean check-tree man deb
all: $(BIN) $(UNIT_BIN) $(TOOL_BIN)

$(BIN): $(LIB_OBJ) $(FS_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/unit/%: tests/unit/%.c tests/unit/check.h tests/unit/fake_submit.h $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $(filter-out %.h,$^) $(LDLIBS)

$(BUILD)/tools/%: tests/tools/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

-include $(LIB_OBJ:.o=.d) $(FS_OBJ:.o=.d)

deps:
	@scripts/install-deps test
deps-demo:
	@scripts/install-deps demo
deps-lint:
	@scripts/install-deps lint

# The closing line of `make test` is pytest's summary ("N passed in Xs").
test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory fuzz-build
	KUDUFS_BIN=$(CURDIR)/$(BIN) KUDUFS_UNIT_DIR=$(CURDIR)/$(BUILD)/unit KUDUFS_TOOLS_DIR=$(CURDIR)/$(BUILD)/tools \
	  $(PYTHON) -m pytest -p no:cacheprovider -ra $(PYTEST_ARGS) tests

# ASan + UBSan build in build-asan/, the whole test suite against it; any
# sanitizer report (written to build-asan/san.*) fails the run.
asan: deps
	@rm -rf build-asan/san.*
	@$(MAKE) --no-print-directory BUILD=build-asan BIN=build-asan/kudufs \
	  SANFLAGS='-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined' \
	  OPTFLAGS='-O1 -g' all
	@$(MAKE) --no-print-directory fuzz-build
	ASAN_OPTIONS=detect_leaks=1:log_path=$(CURDIR)/build-asan/san:abort_on_error=0 \
	UBSAN_OPTIONS=print_stacktrace=1:log_path=$(CURDIR)/build-asan/san \
	KUDUFS_BIN=$(CURDIR)/build-asan/kudufs KUDUFS_UNIT_DIR=$(CURDIR)/build-asan/unit KUDUFS_TOOLS_DIR=$(CURDIR)/build-asan/tools \
	  $(PYTHON) -m pytest -p no:cacheprovider -ra -m 'not slow and not soak' $(PYTEST_ARGS) tests
	@if ls build-asan/san.* >/dev/null 2>&1; then \
	  echo "sanitizer reports:"; cat build-asan/san.*; echo "asan: FAILED"; exit 1; \
	else echo "asan: no sanitizer reports"; fi

# The house rules as tools (README, Development): clang-tidy and cppcheck
# with the build's own flags, clang-format, shellcheck, pyflakes3.
lint: deps-lint
	@scripts/lint -- $(CPPFLAGS) $(CFLAGS)

# Rewrite the C sources in place to .clang-format's layout.
format: deps-lint
	clang-format -i $(sort $(wildcard kudu/*.[ch] cache/*.[ch] fs/*.[ch] tests/unit/*.[ch] tests/tools/*.c tests/fuzz/*.c))

demo: deps-demo
	@$(MAKE) --no-print-directory $(BIN)
	@KEEP=$(KEEP) scripts/demo

bench: deps
	@$(MAKE) --no-print-directory $(BIN)
	$(PYTHON) tests/bench/bench.py

# The soak (tests/test_soak.py, SOAK_MINUTES, default 10; figures in
# build/soak.json), then the multi-GiB tests.
SOAK_MINUTES ?= 10
soak: deps
	@$(MAKE) --no-print-directory $(BIN)
	KUDUFS_BIN=$(CURDIR)/$(BIN) SOAK_MINUTES=$(SOAK_MINUTES) $(PYTHON) -m pytest -p no:cacheprovider -ra -m soak $(PYTEST_ARGS) tests
	KUDUFS_BIN=$(CURDIR)/$(BIN) $(PYTHON) -m pytest -p no:cacheprovider -ra -m slow $(PYTEST_ARGS) tests

# Man pages: scdoc sources in man/, rendered into $(BUILD)/man/ (not committed).
MAN_SRC   := $(wildcard man/*.scd)
MAN_OUT   := $(patsubst man/%.scd,$(BUILD)/man/%,$(MAN_SRC))
UNITS     := $(wildcard scripts/systemd/*.service)
man: $(MAN_OUT)
$(BUILD)/man/%: man/%.scd
	@mkdir -p $(dir $@)
	scdoc < $< > $@.tmp && mv $@.tmp $@

# The unit files name /usr/bin and /usr/share (the Debian package's PREFIX);
# install rewrites them for any other PREFIX.
install: $(BIN) man
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(DATADIR)/kudufs/webhook \
	  $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(COMPDIR) $(DESTDIR)$(UNITDIR)
	install -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/kudufs
	install -m 0755 scripts/kudufs-to-blob scripts/kudufs-import-publish-settings $(DESTDIR)$(BINDIR)/
	install -m 0644 scripts/webhook/* $(DESTDIR)$(DATADIR)/kudufs/webhook/
	install -m 0644 $(filter %.1,$(MAN_OUT)) $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 $(filter %.5,$(MAN_OUT)) $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 scripts/completion/kudufs.bash $(DESTDIR)$(COMPDIR)/kudufs
	ln -sf kudufs $(DESTDIR)$(COMPDIR)/kudufs-to-blob
	ln -sf kudufs $(DESTDIR)$(COMPDIR)/kudufs-import-publish-settings
	install -m 0644 scripts/completion/fusermount3.bash $(DESTDIR)$(COMPDIR)/fusermount3
	for u in $(UNITS); do \
	  sed -e 's|/usr/bin/kudufs|$(BINDIR)/kudufs|g' -e 's|/usr/share/kudufs/|$(DATADIR)/kudufs/|g' \
	    "$$u" > $(DESTDIR)$(UNITDIR)/$${u##*/} && chmod 0644 $(DESTDIR)$(UNITDIR)/$${u##*/} || exit 1; \
	done

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/kudufs $(DESTDIR)$(BINDIR)/kudufs-to-blob \
	  $(DESTDIR)$(BINDIR)/kudufs-import-publish-settings
	rm -rf $(DESTDIR)$(DATADIR)/kudufs
	rm -f $(patsubst man/%.scd,$(DESTDIR)$(MANDIR)/man1/%,$(filter %.1.scd,$(MAN_SRC))) \
	  $(patsubst man/%.scd,$(DESTDIR)$(MANDIR)/man5/%,$(filter %.5.scd,$(MAN_SRC)))
	rm -f $(DESTDIR)$(COMPDIR)/kudufs $(DESTDIR)$(COMPDIR)/kudufs-to-blob \
	  $(DESTDIR)$(COMPDIR)/kudufs-import-publish-settings $(DESTDIR)$(COMPDIR)/fusermount3
	rm -f $(patsubst scripts/systemd/%,$(DESTDIR)$(UNITDIR)/%,$(UNITS))

# The Debian package, built by dpkg-buildpackage from debian/ in a copy of the
# tree (tracked and new files, not ignored ones) under $(BUILD)/deb, so the
# source tree stays clean; the .deb lands in $(BUILD)/.
DEB_ARCH   = $(shell dpkg --print-architecture)
# The package's own build must not inherit this make's settings (BUILD=... on
# the command line is exported: its `make clean` would remove our BUILD).
DEB_ENV    = -u MAKEFLAGS -u MFLAGS -u MAKELEVEL $(foreach v,BUILD BIN PREFIX DESTDIR BINDIR DATADIR MANDIR UNITDIR COMPDIR CC CFLAGS LDFLAGS CPPFLAGS,-u $(v))
DEB        = $(BUILD)/kudufs_$(VERSION)_$(DEB_ARCH).deb
deb:
	@scripts/install-deps deb
	rm -rf $(BUILD)/deb && mkdir -p $(BUILD)/deb/kudufs-$(VERSION)
	git ls-files -z --cached --others --exclude-standard | \
	  tar --null --ignore-failed-read -T - -cf - | tar -xf - -C $(BUILD)/deb/kudufs-$(VERSION)
	cd $(BUILD)/deb/kudufs-$(VERSION) && env $(DEB_ENV) dpkg-buildpackage -b -us -uc
	mv $(BUILD)/deb/kudufs_$(VERSION)_$(DEB_ARCH).deb $(DEB)
	rm -rf $(BUILD)/deb
	@echo "make deb: $(DEB)"

clean:
	rm -rf $(BUILD) build-asan build-fuzz $(BIN) bench.json

# ---- fuzzing (libFuzzer; clang, ASan + UBSan) -------------------------------
# Harnesses tests/fuzz/fuzz_NAME.c, seed corpus tests/fuzz/corpus/NAME/.
# `make fuzz FUZZ_SECONDS=N` runs each harness N s (new inputs go to
# build-fuzz/corpus/NAME, crashes to build-fuzz/artifacts/); `make test` runs
# each one for a short smoke (KUDUFS_FUZZ_SECONDS, see tests/test_fuzz.py).
FUZZ_SRC      := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_NAMES    := $(patsubst tests/fuzz/fuzz_%.c,%,$(FUZZ_SRC))
FUZZ_SECONDS  ?= 60
FUZZ_SANFLAGS := -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer

.PHONY: fuzz fuzz-build fuzz-bins
fuzz-build:
	@$(MAKE) --no-print-directory BUILD=build-fuzz CC=clang OPTFLAGS='-O1 -g' \
	  SANFLAGS='$(FUZZ_SANFLAGS)' fuzz-bins
fuzz-bins: $(patsubst %,$(BUILD)/fuzz/fuzz_%,$(FUZZ_NAMES))

$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(LIB_OBJ) $(BUILD)/fs/ops.o
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -fsanitize=fuzzer $(LDFLAGS) -o $@ $^ $(LDLIBS)

fuzz: deps fuzz-build
	@for h in $(FUZZ_NAMES); do \
	  mkdir -p build-fuzz/corpus/$$h build-fuzz/artifacts || exit 1; \
	  echo "fuzz $$h: $(FUZZ_SECONDS) s"; \
	  build-fuzz/fuzz/fuzz_$$h -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	    -artifact_prefix=build-fuzz/artifacts/$$h- -print_final_stats=1 \
	    build-fuzz/corpus/$$h tests/fuzz/corpus/$$h || { echo "fuzz $$h: FAILED (see build-fuzz/artifacts/)"; exit 1; }; \
	done; echo "fuzz: $(FUZZ_NAMES) ran $(FUZZ_SECONDS) s each, no crash"
