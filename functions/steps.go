package functions

import (
	"net/http"

	"github.com/slipway-dev/slipway/pkg/build/steps"
)

// getSteps answers a build's steps: its stored log read by the steps
// parser against the Dockerfile the build built, when its record holds it
// (a local context's); otherwise from the log alone, without lines. Whoever may read the build may read its steps.
func (a *api) getSteps(w http.ResponseWriter, r *http.Request) error {
	_, b, _, err := a.visibleBuild(r)
	if err != nil {
		return err
	}
	var plan *steps.Plan
	if df, ok := b.Dockerfile(); ok {
		plan, _ = steps.ParsePlan(df) // saved Dockerfiles parse; nil reads the log alone
	}
	log, err := a.Store.ReadLog(r.Context(), b.Image, b.Number, 0)
	if err != nil {
		return err
	}
	state := steps.Build{State: string(b.Status), FinishedAt: b.FinishedAt, Now: a.Now()}
	if b.Failure != nil {
		state.Reason = string(b.Failure.Reason)
	}
	list := steps.Parse(log, plan).Steps(state)
	if list == nil {
		list = []steps.Step{}
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{"steps": list, "lines": plan != nil})
	return nil
}
