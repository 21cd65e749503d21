package runc

// UseHostNetwork makes r run builds in the host's network namespace, as
// it did before builds had their own: the baseline of the benchmark that
// measures what their own costs.
func UseHostNetwork(r *Runner) { r.hostNetwork = true }
