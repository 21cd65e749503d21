// Package infra holds Slipway's cluster deployment: the kustomize base and
// overlays under base/ and overlays/, and the tests that render them with
// kustomize, decode every object into its Knative or Kubernetes Go type,
// run Knative's own defaulting and validation, and check that the roles,
// events, rights and network fence fit together. func.yaml and skaffold.yaml
// at the repository root are checked here as well.
//
// It is a module of its own so that the service's go.mod does not carry
// Knative's and kustomize's dependency graphs.
package infra
