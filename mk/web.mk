# The web page (web/ -> pkg/web/assets) and what its tests need.
# Included by the root Makefile; also usable alone from the repository's root:
# `make -f mk/web.mk web-bundle`.
#
# The bundle in pkg/web/assets is committed, so `make build` and `make run`
# need no Node. After changing anything in web/, run `make web-bundle` and
# commit pkg/web/assets: pkg/web/bundle_test.go fails while they differ.

NPM  ?= npm
NODE ?= node

.PHONY: web-bundle deps-web

# web-bundle: install the pinned packages (package-lock.json) and build the
# page into pkg/web/assets, replacing what is there.
web-bundle:
	cd web && $(NPM) ci --no-audit --no-fund && $(NODE) build.mjs

# Debian packages the page's tests need: Chromium for the browser tests
# (driven by chromedp, never downloaded), Node and npm for the bundle check.
WEB_DEPS_CHROMIUM := chromium
WEB_DEPS_NODE     := nodejs npm

# deps-web: install what is missing with apt-get (as root).
deps-web:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing="$$missing $(WEB_DEPS_CHROMIUM)"; \
	command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || missing="$$missing $(WEB_DEPS_NODE)"; \
	if [ -n "$$missing" ]; then \
		echo "deps-web: installing$$missing"; \
		if [ "$$(id -u)" != 0 ]; then \
			echo "deps-web: not root; run as root: apt-get update && apt-get install -y$$missing" >&2; exit 1; \
		fi; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q --no-install-recommends $$missing fonts-liberation fonts-dejavu-core || \
			echo "deps-web: apt-get could not install$$missing" >&2; \
	fi; \
	command -v chromium >/dev/null 2>&1 || { \
		echo "deps-web: Chromium is missing and could not be installed: run \`apt-get install chromium\`" >&2; exit 1; }; \
	command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { \
		echo "deps-web: node or npm is missing and could not be installed: run \`apt-get install nodejs npm\`" >&2; exit 1; }

# `make deps` (what CI runs first) installs these too.
deps: deps-web
