# The OCI distribution-spec conformance suite, run against `slipway serve`
# and against plain CNCF Distribution, whose results it must equal.
# Included by the root Makefile; the suite and Distribution's registry
# command are pinned in their own tools module (tools/conformance), so
# neither reaches the service's go.mod.

GO ?= go

CONFORMANCE_MOD := tools/conformance

# bin/conformance and bin/registry: the suite and plain Distribution,
# rebuilt when the pins change.
bin/conformance bin/registry &: $(CONFORMANCE_MOD)/go.mod $(CONFORMANCE_MOD)/go.sum
	@mkdir -p bin
	cd $(CONFORMANCE_MOD) && CGO_ENABLED=0 $(GO) build -trimpath -o $(CURDIR)/bin/ \
		github.com/opencontainers/distribution-spec/conformance \
		github.com/distribution/distribution/v3/cmd/registry

# test-conformance: both runs, compared test by test (tools/conformance/run.sh;
# CONFORMANCE_AUTH, CONFORMANCE_SUBJECT and CONFORMANCE_REPO1/2 set it up).
# The reports stay in CONFORMANCE_OUT.
CONFORMANCE_OUT ?= $(CURDIR)/.conformance
.PHONY: test-conformance
test-conformance: bin/slipway bin/conformance bin/registry
	rm -rf $(CONFORMANCE_OUT)
	$(CONFORMANCE_MOD)/run.sh $(CONFORMANCE_OUT)
