package server

// LetBuildsReach lets cfg's local builds reach ports of the host's
// loopback besides the internal registry's: a private base registry that a
// test serves there.
func LetBuildsReach(cfg *Config, ports ...int) { cfg.buildReach = append(cfg.buildReach, ports...) }
