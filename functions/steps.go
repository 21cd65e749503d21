package functions

import (
	"net/http"

	"github.com/slipway-dev/slipway/pkg/build/steps"
)

// getSteps answers a build's steps: its stored log read by the steps
// parser against the Dockerfile the build built, when the image still holds
// it (a local context not changed since); otherwise from the log alone,
// without lines. Whoever may read the build may read its steps.
func (a *api) getSteps(w http.ResponseWriter, r *http.Request) error {
	img, _, err := a.imageRole(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	n, err := buildNumber(r)
	if err != nil {
		return err
	}
	b, err := a.Store.GetBuild(r.Context(), img.ID, n)
	if err != nil {
		return err
	}
	var plan *steps.Plan
	if df, ok := img.DockerfileAt(b.DefinitionRev); ok {
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
