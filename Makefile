# tickets-fcgi: plain GNU make. Everything it builds goes to build/.
#
#   make                    build/tickets-fcgi
#   make test-build         build/tickets-fcgi-test: the same with the TEST ONLY
#                           switches (TICKETS_TEST_UNSAFE_NO_LOCK), which the
#                           release binary refuses; only the tests run it
#   make test               the docs' paths, unit tests, integration tests (real MariaDB,
#                           nginx, spawn-fcgi), the benchmark's smoke
#   make run                the whole stack on http://127.0.0.1:8080 (Ctrl-C stops it)
#   make SANITIZE=address,undefined   an instrumented build in build/address,undefined/
#   make WERROR=            keep warnings as warnings
#   make V=1                show whole commands
#   make HARDEN=            no hardening flags of our own (CFLAGS, CPPFLAGS and
#                           LDFLAGS from outside, e.g. dpkg-buildflags, always apply)

VERSION := 0.1.0

CC ?= cc
PKG_CONFIG ?= pkg-config
PYTHON ?= /usr/bin/python3
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share/tickets-fcgi
DOCDIR ?= $(PREFIX)/share/doc/tickets-fcgi
MANDIR ?= $(PREFIX)/share/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
NGINXSNIPPETDIR ?= $(DATADIR)/nginx/snippets
# The units installed into UNITDIR: spawn-fcgi (tickets-fcgi.service) or
# socket-activated (tickets-fcgi.socket/.service and the tickets-fcgi@NAME
# templates for more instances; the Debian package's choice).  Both sets go
# to DATADIR/systemd/ in any case.
SYSTEMD_UNITS ?= spawn-fcgi
INSTALL ?= install
CFLAGS ?= -O2 -g
WERROR ?= -Werror
SANITIZE ?=

LIBS_PKG := fcgi libmariadb jansson libcrypto

WARN := -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes \
	-Wmissing-prototypes -Wformat=2 -Wvla -Wwrite-strings -Wpointer-arith \
	-Wno-unused-parameter -fno-common $(WERROR)
PROJECT_CPPFLAGS := -D_GNU_SOURCE -DTICKETS_VERSION='"$(VERSION)"' -Ifcgi-app
PROJECT_CFLAGS := -std=c11 -pthread $(WARN)

# Hardened by default, as Debian builds its packages (dpkg-buildflags with
# hardening=+all): stack protector, stack clash protection, CET, PIE, full
# RELRO, FORTIFY_SOURCE.  The flags given from outside (CFLAGS, CPPFLAGS,
# LDFLAGS, e.g. debian/rules passes dpkg-buildflags') come after these and
# win.  Checked on the built binary by `make test-hardening`.
HARDEN ?= 1
cc-option = $(shell $(CC) -Werror $(1) -E -x c /dev/null >/dev/null 2>&1 && echo $(1))
ifneq ($(HARDEN),)
PROJECT_CFLAGS += -fPIE -fstack-protector-strong \
	$(call cc-option,-fstack-clash-protection) $(call cc-option,-fcf-protection)
PROJECT_LDFLAGS := -pie -Wl,-z,relro -Wl,-z,now
# FORTIFY_SOURCE needs optimisation (glibc warns without it, and warnings are
# errors) and is left out of sanitizer builds: the _chk variants bypass
# ASan's interceptors (missed reports) and TSan's.  It is also left to the
# outside CPPFLAGS when they set it, so the two never disagree.
ifeq ($(SANITIZE)$(findstring _FORTIFY_SOURCE,$(CPPFLAGS) $(CFLAGS)),)
ifneq ($(filter -O1 -O2 -O3 -Os -Ofast -Og -O,$(CFLAGS)),)
PROJECT_CPPFLAGS += -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=2
endif
endif
else
PROJECT_LDFLAGS :=
endif

ifneq ($(SANITIZE),)
BUILD := build/$(SANITIZE)
PROJECT_CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
PROJECT_LDFLAGS += -fsanitize=$(SANITIZE)
# An outside -D_FORTIFY_SOURCE (dpkg-buildflags) is undone for the same reason.
SAN_CPPFLAGS := -U_FORTIFY_SOURCE
else
BUILD := build
SAN_CPPFLAGS :=
endif

# pkg-config is asked only when something is compiled, so that `make clean`
# and `make install-deps` work before the libraries are installed.
# <mysql.h> belongs to the db files (fcgi-app/db_*.c, behind db.h): only
# they get libmariadb's include path, so that on Debian, where <mysql.h> is
# not on the default path, an #include of it anywhere else fails to build.
PKG_CFLAGS = $(shell $(PKG_CONFIG) --cflags $(filter-out libmariadb,$(LIBS_PKG)))
MARIADB_CFLAGS = $(shell $(PKG_CONFIG) --cflags libmariadb)
$(BUILD)/obj/db_%.o: PKG_CFLAGS += $(MARIADB_CFLAGS)
PKG_LIBS = $(shell $(PKG_CONFIG) --libs $(LIBS_PKG))
CMOCKA_LIBS = $(shell $(PKG_CONFIG) --libs cmocka)

ifeq ($(V),1)
Q :=
else
Q := @
endif

APP_SRCS := $(wildcard fcgi-app/*.c)
APP_OBJS := $(patsubst fcgi-app/%.c,$(BUILD)/obj/%.o,$(APP_SRCS))
LIB_OBJS := $(filter-out $(BUILD)/obj/main.o,$(APP_OBJS))
TEST_BIN := $(BUILD)/tickets-fcgi-test
# the files that hold TEST ONLY code (#ifdef TICKETS_TEST_BUILD)
TEST_ONLY_SRCS := config routes tickets
TEST_OBJS := $(filter-out $(TEST_ONLY_SRCS:%=$(BUILD)/obj/%.o),$(APP_OBJS)) \
	$(TEST_ONLY_SRCS:%=$(BUILD)/obj/%-test.o)
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))

.PHONY: all man test-build test unit integration run install uninstall clean format install-deps \
	check-docs sanitize-test test-browser test-cluster test-galera test-install bench bench-smoke \
	test-faults fuzz verify test-hardening test-man test-prometheus test-deb

all: $(BUILD)/tickets-fcgi $(BUILD)/tickets-fcgi.8

# The man page: man/tickets-fcgi.8.in with its SETTINGS section printed by
# the app's own option table (the one --help prints), so they cannot drift.
man: $(BUILD)/tickets-fcgi.8

$(BUILD)/man-settings: man/man-settings.c $(LIB_OBJS)
	@mkdir -p $(@D)
	@echo "  CC      $<"
	$(Q)$(CC) $(PROJECT_CPPFLAGS) $(CPPFLAGS) $(SAN_CPPFLAGS) $(PKG_CFLAGS) $(PROJECT_CFLAGS) $(CFLAGS) \
		$(PROJECT_LDFLAGS) $(LDFLAGS) -o $@ $< $(LIB_OBJS) $(PKG_LIBS)

$(BUILD)/tickets-fcgi.8: man/tickets-fcgi.8.in $(BUILD)/man-settings
	@echo "  GEN     $@"
	$(Q)$(BUILD)/man-settings >$@.settings
	$(Q)sed -e 's/@VERSION@/$(VERSION)/' -e '/^@SETTINGS@$$/{r $@.settings' -e 'd}' $< >$@.tmp
	$(Q)rm -f $@.settings && mv $@.tmp $@

$(BUILD)/tickets-fcgi: $(APP_OBJS)
	@echo "  LINK    $@"
	$(Q)$(CC) $(PROJECT_CFLAGS) $(CFLAGS) $(PROJECT_LDFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

test-build: $(TEST_BIN)

$(TEST_BIN): $(TEST_OBJS)
	@echo "  LINK    $@"
	$(Q)$(CC) $(PROJECT_CFLAGS) $(CFLAGS) $(PROJECT_LDFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

# A test build differs in TEST_ONLY_SRCS: config.c accepts the TEST ONLY
# switch, routes.c and tickets.c have the claim without the lock.
$(BUILD)/obj/%-test.o: fcgi-app/%.c Makefile
	@mkdir -p $(@D)
	@echo "  CC      $< (test build)"
	$(Q)$(CC) $(PROJECT_CPPFLAGS) -DTICKETS_TEST_BUILD $(CPPFLAGS) $(SAN_CPPFLAGS) $(PKG_CFLAGS) $(PROJECT_CFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/obj/%.o: fcgi-app/%.c Makefile
	@mkdir -p $(@D)
	@echo "  CC      $<"
	$(Q)$(CC) $(PROJECT_CPPFLAGS) $(CPPFLAGS) $(SAN_CPPFLAGS) $(PKG_CFLAGS) $(PROJECT_CFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(LIB_OBJS)
	@mkdir -p $(@D)
	@echo "  CC      $<"
	$(Q)$(CC) $(PROJECT_CPPFLAGS) $(CPPFLAGS) $(SAN_CPPFLAGS) $(PKG_CFLAGS) $(PROJECT_CFLAGS) $(CFLAGS) \
		$(PROJECT_LDFLAGS) $(LDFLAGS) -o $@ $< $(LIB_OBJS) $(CMOCKA_LIBS) $(PKG_LIBS)

-include $(APP_OBJS:.o=.d) $(BUILD)/obj/config-test.d

install-deps:
	$(Q)scripts/install-deps.sh

# test and run install missing Debian packages first (as root), then build.
test:
	$(Q)scripts/install-deps.sh
	$(Q)$(MAKE) --no-print-directory check-docs
	$(Q)$(MAKE) --no-print-directory unit
	$(Q)$(MAKE) --no-print-directory integration
	$(Q)$(MAKE) --no-print-directory bench-smoke

# Every path the README and docs/ name exists (links, anchors, code spans).
check-docs:
	$(Q)$(PYTHON) tests/docs/check_paths.py

unit: $(UNIT_BINS)
	$(Q)failed=0; for t in $(UNIT_BINS); do echo "== $$t"; $$t || failed=1; done; \
	if [ $$failed -ne 0 ]; then echo "unit tests FAILED"; exit 1; fi

integration: $(BUILD)/tickets-fcgi $(TEST_BIN)
	$(Q)TICKETS_BIN=$(CURDIR)/$(BUILD)/tickets-fcgi TICKETS_TEST_BIN=$(CURDIR)/$(TEST_BIN) $(PYTHON) -m pytest -q tests/integration $(PYTEST_ARGS)

# The claim and concurrency tests again, against an AddressSanitizer +
# UBSan build and a ThreadSanitizer build of the app; the harness fails a
# run whose app stderr reports a sanitizer finding.  Unit tests run under
# ThreadSanitizer too (the coalescing table is shared between threads), and
# the keep-alive tests exercise the connection layer's loop and queue.
SANITIZE_TESTS := tests/integration/test_concurrency.py tests/integration/test_claim.py \
	tests/integration/test_keepalive.py tests/integration/test_pacing.py \
	tests/integration/test_flash.py

sanitize-test:
	$(Q)for san in address,undefined thread; do \
		echo "== SANITIZE=$$san"; \
		$(MAKE) --no-print-directory SANITIZE=$$san all test-build || exit 1; \
		TICKETS_BIN=$(CURDIR)/build/$$san/tickets-fcgi \
		TICKETS_TEST_BIN=$(CURDIR)/build/$$san/tickets-fcgi-test \
			$(PYTHON) -m pytest -q $(SANITIZE_TESTS) || exit 1; \
	done
	$(Q)$(MAKE) --no-print-directory SANITIZE=thread unit

# Browser tests (Debian chromium + playwright-core, the PHP example under
# php-fpm); installs chromium, php8.2-fpm/-cli/-curl and the pinned npm
# package if missing.  Kept out of `make test` (a large install); CI runs it.
test-browser: $(BUILD)/tickets-fcgi
	$(Q)TICKETS_BIN=$(CURDIR)/$(BUILD)/tickets-fcgi tests/browser/run.sh

# The fault matrix of docs/RELIABILITY.md (also replays fuzz/); about a
# minute.  With SANITIZE=... it runs against that instrumented build.
test-faults: $(BUILD)/tickets-fcgi $(TEST_BIN)
	$(Q)TICKETS_BIN=$(CURDIR)/$(BUILD)/tickets-fcgi TICKETS_TEST_BIN=$(CURDIR)/$(TEST_BIN) $(PYTHON) -m pytest -q tests/faults $(PYTEST_ARGS)

# libFuzzer targets of fuzz/ for FUZZ_SECONDS in all (needs clang and
# libclang-rt-14-dev); keep a crash in fuzz/regressions/<target>/.
FUZZ_SECONDS ?= 60
fuzz:
	$(Q)fuzz/run.sh fuzz $(FUZZ_SECONDS)

# Model-check the claim protocol with spin (docs/PROTOCOL.md): the real
# protocol must hold, each broken variant must fail with a trace; 2-4 min.
verify:
	$(Q)model/verify.sh

# Several "hosts" in network namespaces: app hosts on TCP, a database host,
# nginx in front; a storm of claims, then one app host's link cut.
test-cluster: $(BUILD)/tickets-fcgi
	$(Q)TICKETS_BIN=$(CURDIR)/$(BUILD)/tickets-fcgi TICKETS_CLUSTER_REQUIRED=1 \
		timeout -k 30 -s TERM 300 $(PYTHON) -m pytest -q tests/cluster $(PYTEST_ARGS)

# Three MariaDB Galera nodes behind HAProxy (deploy/haproxy/), app hosts
# and nginx in network namespaces: storms, the writer SIGKILLed, a node cut
# off, the old writer back by IST, every node a writer; about 4 minutes.
# Installs galera-4, haproxy and rsync when missing (as root).
test-galera: $(BUILD)/tickets-fcgi
	$(Q)TICKETS_BIN=$(CURDIR)/$(BUILD)/tickets-fcgi tests/galera/run.sh $(PYTEST_ARGS)

# make install into a DESTDIR, the layout checked; the systemd units verified.
test-install: $(BUILD)/tickets-fcgi
	$(Q)tests/install/test_install.sh
	$(Q)TICKETS_BIN=$(CURDIR)/$(BUILD)/tickets-fcgi $(PYTHON) -m pytest -q tests/install $(PYTEST_ARGS)

# The built binary is hardened as promised (readelf, nm, objdump).
test-hardening: $(BUILD)/tickets-fcgi
	$(Q)tests/hardening/check_binary.sh $(BUILD)/tickets-fcgi

# tickets-fcgi(8) renders cleanly and lists exactly the settings of --help.
test-man: $(BUILD)/tickets-fcgi $(BUILD)/tickets-fcgi.8
	$(Q)TICKETS_BIN=$(CURDIR)/$(BUILD)/tickets-fcgi TICKETS_MAN=$(CURDIR)/$(BUILD)/tickets-fcgi.8 \
		$(PYTHON) -m pytest -q tests/man $(PYTEST_ARGS)

# The alert rules: promtool check and unit tests, then a real Prometheus
# scraping two instances of a test stack with the shipped scrape config.
# Installs Debian's prometheus if missing (as root).
test-prometheus: $(BUILD)/tickets-fcgi
	$(Q)scripts/install-deps.sh prometheus
	$(Q)promtool check rules deploy/prometheus/tickets-fcgi.rules.yml
	$(Q)cd tests/prometheus && promtool test rules tickets-fcgi.rules.test.yml
	$(Q)TICKETS_BIN=$(CURDIR)/$(BUILD)/tickets-fcgi $(PYTHON) -m pytest -q tests/prometheus $(PYTEST_ARGS)

# The Debian package from a clean clone of HEAD: build, lintian, install,
# check, remove, purge (tests/deb/run.sh; as root; a few minutes).
test-deb:
	$(Q)tests/deb/run.sh

# The benchmark (docs/PERFORMANCE.md): about 7 minutes; never part of
# make test, which only runs its 10-second smoke so the script does not rot.
bench: all
	$(Q)$(MAKE) --no-print-directory -C bench
	$(Q)TICKETS_BIN=$(CURDIR)/$(BUILD)/tickets-fcgi $(PYTHON) bench/run $(BENCH_ARGS)

bench-smoke: all
	$(Q)$(MAKE) --no-print-directory -C bench
	$(Q)TICKETS_BIN=$(CURDIR)/$(BUILD)/tickets-fcgi $(PYTHON) bench/run --smoke

run:
	$(Q)scripts/install-deps.sh
	$(Q)$(MAKE) --no-print-directory all
	$(Q)TICKETS_BIN=$(CURDIR)/$(BUILD)/tickets-fcgi $(PYTHON) scripts/run-stack

# Production files only: the binary, its man page, the SQL a deployment
# runs (schema and grants; not the demo data nor the benchmark's SQL), the
# nginx site and snippets, the systemd units, sysusers and tmpfiles
# snippets, the Prometheus rules and the docs.
install: $(BUILD)/tickets-fcgi $(BUILD)/tickets-fcgi.8
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(DATADIR)/sql \
		$(DESTDIR)$(DATADIR)/nginx $(DESTDIR)$(NGINXSNIPPETDIR) $(DESTDIR)$(DOCDIR) \
		$(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(DATADIR)/prometheus
	$(INSTALL) -m 0755 $(BUILD)/tickets-fcgi $(DESTDIR)$(BINDIR)/tickets-fcgi
	$(INSTALL) -m 0644 $(BUILD)/tickets-fcgi.8 $(DESTDIR)$(MANDIR)/man8/tickets-fcgi.8
	$(INSTALL) -m 0644 sql/schema.sql sql/grants.sql $(DESTDIR)$(DATADIR)/sql/
	$(INSTALL) -m 0644 nginx/tickets.conf $(DESTDIR)$(DATADIR)/nginx/
	$(INSTALL) -m 0644 nginx/snippets/*.conf $(DESTDIR)$(NGINXSNIPPETDIR)/
	$(INSTALL) -m 0644 deploy/prometheus/tickets-fcgi.rules.yml \
		deploy/prometheus/prometheus.yml.example $(DESTDIR)$(DATADIR)/prometheus/
	$(INSTALL) -m 0644 README.md docs/DEPLOYMENT.md $(DESTDIR)$(DOCDIR)/
	$(INSTALL) -d $(DESTDIR)$(DATADIR)/web/static
	$(INSTALL) -m 0644 web/index.html $(DESTDIR)$(DATADIR)/web/
	$(INSTALL) -m 0644 web/static/* $(DESTDIR)$(DATADIR)/web/static/
	$(INSTALL) -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) \
		$(DESTDIR)$(DATADIR)/systemd/spawn-fcgi $(DESTDIR)$(DATADIR)/systemd/socket-activated
	$(Q)for f in spawn-fcgi/tickets-fcgi.service socket-activated/tickets-fcgi.service \
			socket-activated/tickets-fcgi.socket socket-activated/tickets-fcgi@.service \
			socket-activated/tickets-fcgi@.socket; do \
		sed 's|/usr/bin/tickets-fcgi|$(BINDIR)/tickets-fcgi|' deploy/systemd/$$f \
			>$(DESTDIR)$(DATADIR)/systemd/$$f && chmod 0644 $(DESTDIR)$(DATADIR)/systemd/$$f || exit 1; \
	done
	$(INSTALL) -m 0644 deploy/systemd/env.example $(DESTDIR)$(DATADIR)/systemd/env.example
	$(INSTALL) -m 0644 $(DESTDIR)$(DATADIR)/systemd/$(SYSTEMD_UNITS)/* $(DESTDIR)$(UNITDIR)/
	$(INSTALL) -m 0644 deploy/sysusers.d/tickets-fcgi.conf $(DESTDIR)$(SYSUSERSDIR)/tickets-fcgi.conf
	$(INSTALL) -m 0644 deploy/tmpfiles.d/tickets-fcgi.conf $(DESTDIR)$(TMPFILESDIR)/tickets-fcgi.conf

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/tickets-fcgi $(DESTDIR)$(MANDIR)/man8/tickets-fcgi.8
	rm -f $(DESTDIR)$(UNITDIR)/tickets-fcgi.service $(DESTDIR)$(UNITDIR)/tickets-fcgi.socket \
		$(DESTDIR)$(UNITDIR)/tickets-fcgi@.service $(DESTDIR)$(UNITDIR)/tickets-fcgi@.socket
	rm -f $(DESTDIR)$(SYSUSERSDIR)/tickets-fcgi.conf $(DESTDIR)$(TMPFILESDIR)/tickets-fcgi.conf
	rm -f $(patsubst nginx/snippets/%,$(DESTDIR)$(NGINXSNIPPETDIR)/%,$(wildcard nginx/snippets/*.conf))
	rm -rf $(DESTDIR)$(DATADIR) $(DESTDIR)$(DOCDIR)

format:
	clang-format -i fcgi-app/*.c fcgi-app/*.h tests/unit/*.c

clean:
	rm -rf build
