# sbuml: make demo runs the main job on the default image, make test runs the tests.
# Both install what they need first (Debian packages, Go modules).

SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin:$(HOME)/go/bin
GO ?= go
BIN := bin/sbuml
# Debian packages sbuml needs at run time and in tests (python3: the static web
# server the web tests publish to; debootstrap: the Debian image; syslinux,
# syslinux-common, mtools, dosfstools, fdisk: disks that boot by BIOS;
# qemu-utils: qcow2 imports; openssh-client: the scrapbook's ssh key and
# sbuml ssh; gcc, libc6-dev: the C ckpt() library's test program;
# chromium: the browser the tests of sbuml ui drive).
DEB_PACKAGES := qemu-system-x86 busybox-static e2fsprogs cpio python3 \
	debootstrap syslinux syslinux-common mtools dosfstools fdisk qemu-utils openssh-client \
	gcc libc6-dev chromium
TEST_TIMEOUT ?= 25m
# make install puts the binaries, man pages, shell completions, the desktop
# entry and the MIME type of .sbuml links under $(DESTDIR)$(PREFIX).
PREFIX ?= /usr/local
DESTDIR ?=
SBUML_BIN ?= $(BIN)
GUEST_BIN ?= bin/sbuml-guest
# sbuml --version says what it was built from.
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)
COMMIT := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: all build deps test demo bench vet clean ui-assets install install-files

all: build

# deps installs missing Debian packages (apt-get; needs root) and the Go modules.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@# The guest image is built from packages fetched with apt-get download: the lists must know them.
	@apt-cache policy linux-image-cloud-amd64 2>/dev/null | grep -q 'Candidate: [0-9]' || { \
		echo "updating the apt package lists (the guest kernel is fetched from them)"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq; else sudo apt-get update -qq; fi; }
	@command -v $(GO) >/dev/null || { echo "installing Go from Debian (the go.mod toolchain is fetched through the module proxy)"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null; }
	@$(GO) mod download

# sbuml-guest, the agent every image sbuml builds carries, is a static binary
# that sbuml finds next to itself.
build: deps
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/sbuml
	CGO_ENABLED=0 $(GO) build -ldflags "-s -w" -o bin/sbuml-guest ./cmd/sbuml-guest

vet:
	$(GO) vet ./...

install: build install-files

# install-files installs what make build made, without building (the CLI
# tests run it into a temporary DESTDIR). Outside a DESTDIR it registers
# the MIME type with xdg-mime when that is installed, else with
# update-mime-database when that is.
install-files:
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(PREFIX)/share/zsh/site-functions \
		$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d $(DESTDIR)$(PREFIX)/share/applications \
		$(DESTDIR)$(PREFIX)/share/mime/packages
	install -m 0755 $(SBUML_BIN) $(DESTDIR)$(PREFIX)/bin/sbuml
	install -m 0755 $(GUEST_BIN) $(DESTDIR)$(PREFIX)/bin/sbuml-guest
	$(SBUML_BIN) man --dir $(DESTDIR)$(PREFIX)/share/man/man1
	$(SBUML_BIN) completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/sbuml
	$(SBUML_BIN) completion zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_sbuml
	$(SBUML_BIN) completion fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/sbuml.fish
	install -m 0644 docs/sbuml.desktop $(DESTDIR)$(PREFIX)/share/applications/sbuml.desktop
	install -m 0644 docs/sbuml-mime.xml $(DESTDIR)$(PREFIX)/share/mime/packages/sbuml.xml
	@if [ -n "$(DESTDIR)" ]; then :; \
	elif command -v xdg-mime >/dev/null; then \
		xdg-mime install --novendor $(PREFIX)/share/mime/packages/sbuml.xml && \
		xdg-mime default sbuml.desktop application/x-sbuml; \
	elif command -v update-mime-database >/dev/null; then \
		update-mime-database $(PREFIX)/share/mime; \
	fi

# The S3 tests run versitygw, which the first run on a host builds with go
# install from the module proxy (minutes): internal/s3test builds it before
# the suite, so that the build does not count against the suite's timeout.
test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 30m ./internal/s3test
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

demo: build
	./scripts/demo.sh

bench: deps
	$(GO) test -run '^$$' -bench . -benchtime 3x ./...

# ui-assets refreshes the browser libraries sbuml ui embeds from npm, at the
# versions pinned in the script; the result is checked in.
ui-assets:
	./scripts/ui-assets.sh

clean:
	rm -rf bin
