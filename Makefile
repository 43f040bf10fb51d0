# buntime: build, test, run, bench, install.
PREFIX ?= /usr/local
DESTDIR ?=
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all build deps test test-node run bench install uninstall lint fmt conformance

all: build

deps:
	bash hack/install-deps.sh

# The product: buntime-runc, buntime, buntime-supervisor, libbuntime_ipc.so (crates/buntime-ipc).
# The test worker (crates/test-worker) is test support: hack/test.sh and
# hack/bench.sh build it.
build: deps
	$(CARGO) build --release --workspace --exclude buntime-test-worker

test: deps
	bash hack/test.sh

# The suite on a real node: a Debian 12 guest (systemd, pure cgroup v2)
# under QEMU, image cached in .build/node (hack/node/README.md).
test-node: deps
	bash hack/node/test.sh

run: build
	bash hack/run.sh

bench: build
	bash hack/bench.sh

# The OCI runtime-tools validation suite against buntime-runc and runc
# (docs/conformance.md). Not part of `test`: it needs the suite's checkout
# (RUNTIME_TOOLS=DIR), Go and runc. RUNTIME=path measures another
# buntime-runc build instead of target/release's (then nothing is built).
RUNTIME_TOOLS ?=
RUNTIME ?=
conformance:
	@if [ -z "$(RUNTIME)" ]; then $(CARGO) build --release --bin buntime-runc --bin buntime --bin buntime-supervisor; fi
	RUNTIME_TOOLS="$(RUNTIME_TOOLS)" RUNTIME="$(RUNTIME)" bash hack/conformance.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	# Without the debug UI (cargo feature `ui`) too.
	$(CARGO) clippy --workspace --all-targets --no-default-features -- -D warnings

fmt:
	$(CARGO) fmt --all

# install / uninstall. Paths: $(DESTDIR)$(PREFIX)/bin (buntime-runc, buntime, buntime-supervisor),
# $(PREFIX)/lib (libbuntime_ipc.so), $(PREFIX)/include (buntime_ipc.h),
# $(PREFIX)/lib/buntime (the worker files `buntime run` mounts),
# $(PREFIX)/share/buntime (policy schema, engine snippets, bundle templates),
# and /etc/buntime (not under PREFIX: the
# runtime looks there): policies/*.json (shipped, replaced on every install)
# and default.json (the node's default policy for containers that name none:
# policies/engine.json; an admin's file, installed only when there is none,
# never overwritten, removed by uninstall only when unchanged). NO_BUILD=1 skips the release build; TARGET_DIR picks the
# binaries (default target/release).
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DATADIR ?= $(PREFIX)/share/buntime
SYSCONFDIR ?= /etc/buntime
TARGET_DIR ?= target/release
SHIPPED_POLICIES := $(filter-out policies/schema.json,$(wildcard policies/*.json))
INSTALL_DEPS := $(if $(NO_BUILD),,build)

install: $(INSTALL_DEPS)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) \
		$(DESTDIR)$(DATADIR) $(DESTDIR)$(SYSCONFDIR)/policies
	install -m 0755 $(TARGET_DIR)/buntime-runc $(TARGET_DIR)/buntime $(TARGET_DIR)/buntime-supervisor $(DESTDIR)$(BINDIR)/
	install -m 0755 $(TARGET_DIR)/libbuntime_ipc.so $(DESTDIR)$(LIBDIR)/
	install -m 0644 crates/buntime-ipc/include/buntime_ipc.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 0644 $(SHIPPED_POLICIES) $(DESTDIR)$(SYSCONFDIR)/policies/
	install -m 0644 policies/schema.json $(DESTDIR)$(DATADIR)/policy-schema.json
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/default.json ]; then \
		echo "install: keeping existing $(DESTDIR)$(SYSCONFDIR)/default.json"; \
		if cmp -s policies/default.json $(DESTDIR)$(SYSCONFDIR)/default.json; then \
			echo "install: it is the strict policies/default.json (buntime run's default, with a 5m timeout and no network); the engine default is $(SYSCONFDIR)/policies/engine.json"; \
		fi; \
	else \
		install -m 0644 policies/engine.json $(DESTDIR)$(SYSCONFDIR)/default.json; \
	fi
	@set -e; for d in integration bundle-templates; do \
		if [ -d $$d ]; then \
			rm -rf $(DESTDIR)$(DATADIR)/$$d; cp -R $$d $(DESTDIR)$(DATADIR)/$$d; \
		fi; \
	done
	# What `buntime run` mounts at /opt/buntime: $(LIBDIR)/buntime, next to
	# $(BINDIR)/buntime (python/ precompiled, bun/, lib/, bin/bun).
	rm -rf $(DESTDIR)$(LIBDIR)/buntime
	install -d $(DESTDIR)$(LIBDIR)/buntime/lib $(DESTDIR)$(LIBDIR)/buntime/bin
	cp -R workers/python $(DESTDIR)$(LIBDIR)/buntime/python
	rm -rf $(DESTDIR)$(LIBDIR)/buntime/python/tests
	cp -R workers/bun $(DESTDIR)$(LIBDIR)/buntime/bun
	/usr/bin/python3 -m compileall -q --invalidation-mode unchecked-hash $(DESTDIR)$(LIBDIR)/buntime/python
	install -m 0755 $(TARGET_DIR)/libbuntime_ipc.so $(DESTDIR)$(LIBDIR)/buntime/lib/
	@if [ -e .build/bun/bun ]; then install -m 0755 "$$(readlink -f .build/bun/bun)" $(DESTDIR)$(LIBDIR)/buntime/bin/bun; \
		else echo "install: no Bun in .build/bun (hack/install-bun.sh): .ts/.js scripts need --interpreter"; fi

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/buntime-runc $(DESTDIR)$(BINDIR)/buntime $(DESTDIR)$(BINDIR)/buntime-supervisor \
		$(DESTDIR)$(LIBDIR)/libbuntime_ipc.so $(DESTDIR)$(INCLUDEDIR)/buntime_ipc.h
	rm -rf $(DESTDIR)$(LIBDIR)/buntime
	rm -f $(addprefix $(DESTDIR)$(SYSCONFDIR)/policies/,$(notdir $(SHIPPED_POLICIES)))
	rm -rf $(DESTDIR)$(DATADIR)
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/default.json ]; then \
		if cmp -s policies/engine.json $(DESTDIR)$(SYSCONFDIR)/default.json; then \
			rm -f $(DESTDIR)$(SYSCONFDIR)/default.json; \
		else \
			echo "uninstall: keeping modified $(DESTDIR)$(SYSCONFDIR)/default.json"; \
		fi; \
	fi
	-rmdir $(DESTDIR)$(SYSCONFDIR)/policies $(DESTDIR)$(SYSCONFDIR) 2>/dev/null || true
