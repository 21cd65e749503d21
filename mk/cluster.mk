# The cluster tests (test/cluster): a real single-node Kubernetes on this
# machine, offline, and Slipway's five roles against it. Included by the root
# Makefile; `make test` runs test-cluster too. See test/cluster's package doc
# and the root README's deploy section.
#
# The Kubernetes binaries come from the tools module tools/k8s and are
# cached outside the repository (test/cluster/build-k8s.sh: under
# /var/cache/slipway-k8s, keyed by the pin), so only a machine's first run
# builds them (5 to 11 minutes on 2 cores).

GO ?= go
CLUSTER_DEBS := etcd-server containerd runc containernetworking-plugins socat git busybox-static
CLUSTER_DIR ?= /tmp/slipway-cluster

.PHONY: test-cluster deps-cluster k8s-bins

# bin/pause and bin/loopback-cni: the sandbox image's binary and the CNI
# plugin of the test cluster (internal/kubecluster/cmd).
bin/pause bin/loopback-cni: FORCE
	$(GO) build -trimpath -ldflags "-s -w" -o $@ ./internal/kubecluster/cmd/$(@F)

k8s-bins:
	@test/cluster/build-k8s.sh >/dev/null

# test-cluster: build what the cluster needs, then run test/cluster with the
# cluster's settings; its TestMain brings the cluster up and tears it down.
test-cluster: bin/slipway bin/executor bin/pause bin/loopback-cni
	@t0=$$(date +%s); bins=$$(test/cluster/build-k8s.sh) || exit 1; \
	echo "test-cluster: Kubernetes binaries in $$bins ($$(( $$(date +%s) - t0 ))s)"; \
	SLIPWAY_CLUSTER_BIN=$$bins SLIPWAY_CLUSTER_DIR=$(CLUSTER_DIR) SLIPWAY_REPO=$(CURDIR) \
		$(GO) test -count=1 -timeout 40m -v ./test/cluster/

# deps-cluster: the Debian packages the cluster needs (as root).
deps-cluster:
	@missing=""; \
	for p in $(CLUSTER_DEBS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q '^install ok installed$$' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "deps-cluster: installing$$missing"; \
		if [ "$$(id -u)" != 0 ]; then \
			echo "deps-cluster: not root; run as root: apt-get update && apt-get install -y$$missing" >&2; exit 1; \
		fi; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q --no-install-recommends $$missing || { \
			echo "deps-cluster: apt-get could not install$$missing" >&2; exit 1; }; \
	fi

deps: deps-cluster
