# buntime: build, test, run, bench, install.
PREFIX ?= /usr/local
DESTDIR ?=
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all build deps test run bench install uninstall lint fmt

all: build

deps:
	bash hack/install-deps.sh

build: deps
	$(CARGO) build --release --workspace

test: deps
	bash hack/test.sh

run: build
	bash hack/run.sh

bench: build
	bash hack/bench.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 target/release/buntime-runc target/release/buntime $(DESTDIR)$(PREFIX)/bin/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/buntime-runc $(DESTDIR)$(PREFIX)/bin/buntime
