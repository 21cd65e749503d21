package server

import (
	"context"

	"github.com/slipway-dev/slipway/pkg/dispatch"
	"github.com/slipway-dev/slipway/pkg/registry"
)

// The embedded registry's housekeeping: the gate builds hold, the
// collection schedule.

// pushGate is the gate builds hold, nil without an embedded registry.
func (s *Server) pushGate() dispatch.Gate {
	if s.gate == nil {
		return nil
	}
	return s.gate
}

// maintenance is the embedded registry's housekeeping schedule.
func (s *Server) maintenance() registry.Maintenance {
	return registry.Maintenance{
		Interval: s.cfg.RegistryGCInterval, RemoveUntagged: s.cfg.RegistryGCRemoveUntagged,
		UploadMaxAge: s.cfg.RegistryUploadMaxAge, Quiet: s.cfg.RegistryGCQuiet,
	}
}

// CollectRegistry purges the embedded registry's abandoned uploads and
// collects its unreferenced blobs now, as the schedule does; it returns
// registry.ErrBusy while builds push. With an external registry it does
// nothing.
func (s *Server) CollectRegistry(ctx context.Context) error {
	if s.content == nil {
		return nil
	}
	return s.content.RunOnce(ctx, s.maintenance(), s.log)
}
