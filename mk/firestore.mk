# The Firestore store's tests (pkg/store/firestore) against Firestore
# emulators. Included by the root Makefile; also usable alone from the
# repository's root: `make -f mk/firestore.mk test-firestore`.
#
# test-firestore runs them against the npm emulator (@firestore-emulator/server,
# pinned in .ci/firestore-emulator/package-lock.json; needs node and npm),
# which does not honour transactions: there the conformance suite skips itself
# and the smoke tests run. Then, when Google's official emulator is installed
# (Debian package google-cloud-cli-firestore-emulator, or `gcloud components
# install cloud-firestore-emulator`), it runs them all against that one too,
# with SLIPWAY_FIRESTORE_OFFICIAL=1; when it is not, it says so and skips it.

GO ?= go
FIRESTORE_EMULATOR_DIR := .ci/firestore-emulator

# npm ci installs exactly the lock file; npm writes node_modules/.package-lock.json
# on every install, which makes it the stamp of this one.
$(FIRESTORE_EMULATOR_DIR)/node_modules/.package-lock.json: $(FIRESTORE_EMULATOR_DIR)/package.json $(FIRESTORE_EMULATOR_DIR)/package-lock.json
	cd $(FIRESTORE_EMULATOR_DIR) && npm ci --ignore-scripts --no-audit --no-fund
	@touch $@

# firestore-test,KIND,ENV: start the KIND emulator on a free loopback port, run
# the package's tests against it with the environment ENV added, and stop it
# however they end. An official emulator that is not installed (start.sh exits
# 3) is skipped.
define firestore-test
	@pidfile=$$(mktemp); log=$$(mktemp); \
	trap 'kill -- -$$(cat $$pidfile) 2>/dev/null; rm -f $$pidfile $$log' EXIT; \
	host=$$(FIRESTORE_EMULATOR_PIDFILE=$$pidfile FIRESTORE_EMULATOR_LOG=$$log $(FIRESTORE_EMULATOR_DIR)/start.sh $(1)); rc=$$?; \
	if [ $$rc = 3 ]; then echo "test-firestore: skipped the $(1) emulator"; exit 0; fi; \
	[ $$rc = 0 ] || exit $$rc; \
	echo "test-firestore: the $(1) emulator at $$host"; \
	FIRESTORE_EMULATOR_HOST=$$host $(2) $(GO) test -count=1 ./pkg/store/firestore/
endef

.PHONY: test-firestore
test-firestore: $(FIRESTORE_EMULATOR_DIR)/node_modules/.package-lock.json
	$(call firestore-test,npm,)
	$(call firestore-test,official,SLIPWAY_FIRESTORE_OFFICIAL=1)
