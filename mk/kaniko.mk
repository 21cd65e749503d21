# The Kaniko executor and the host packages that local (runc) builds need.
# Included by the root Makefile; also usable alone from the repository's root:
# `make -f mk/kaniko.mk bin/executor`.

GO ?= go

# The tools module that pins github.com/chainguard-dev/kaniko.
KANIKO_MOD := tools/kaniko
KANIKO_PKG := github.com/chainguard-dev/kaniko

# bin/executor: the static Kaniko executor, rebuilt when the pin changes.
# The version stamp is what `executor version` and the build log print.
bin/executor: $(KANIKO_MOD)/go.mod $(KANIKO_MOD)/go.sum
	@mkdir -p $(@D)
	cd $(KANIKO_MOD) && CGO_ENABLED=0 $(GO) build -trimpath \
		-ldflags "-s -w -X $(KANIKO_PKG)/pkg/version.version=$$($(GO) list -m -f '{{.Version}}' $(KANIKO_PKG))" \
		-o $(CURDIR)/$@ $(KANIKO_PKG)/cmd/executor

# Debian packages that local builds and their tests need: runc runs the
# executor, passt (pasta) gives each build its own network, busybox-static makes the base image
# of the tests and of the demo, git fetches contexts.
DEPS_PACKAGES := runc passt busybox-static git

# have,PACKAGE: a shell test that PACKAGE is installed. runc and git count
# when found in PATH, however they were installed.
have = case $(1) in \
	runc|git) command -v $(1) >/dev/null 2>&1 ;; \
	*) dpkg-query -W -f='$${Status}' $(1) 2>/dev/null | grep -q '^install ok installed$$' ;; \
	esac

# deps-build: install the missing DEPS_PACKAGES with apt-get (as root).
.PHONY: deps-build
deps-build:
	@missing=""; \
	for p in $(DEPS_PACKAGES); do \
		$(call have,$$p) || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "deps: installing$$missing"; \
		if [ "$$(id -u)" != 0 ]; then \
			echo "deps: not root; run as root: apt-get update && apt-get install -y$$missing" >&2; exit 1; \
		fi; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q --no-install-recommends $$missing || \
			echo "deps: apt-get could not install$$missing" >&2; \
	fi; \
	if ! command -v runc >/dev/null 2>&1; then \
		echo "deps: runc is missing and could not be installed. Local builds run Kaniko in runc:" >&2; \
		echo "deps: install it with \`apt-get install runc\` (Debian/Ubuntu), or put a runc binary in PATH." >&2; \
		exit 1; \
	fi; \
	for p in $$missing; do \
		$(call have,$$p) || { \
			echo "deps: $$p is missing and could not be installed: run \`apt-get install $$p\`" >&2; exit 1; }; \
	done
