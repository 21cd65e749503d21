package dispatch

import (
	"context"
	"fmt"
	"runtime/debug"

	"github.com/slipway-dev/slipway/pkg/build"
)

// A build runs user input (its Dockerfile, its repository) through parsers
// and libraries that may panic on input nobody foresaw. A panic there fails
// that build with reason internal, naming the cause; it never takes the
// server down. The stack goes to the server's log only.

// executeGuarded is execute, with a panic turned into the build's ending.
func (d *Dispatcher) executeGuarded(ctx context.Context, b build.Build, log *logWriter) (end func(*build.Build) error, built bool) {
	defer func() {
		if p := recover(); p != nil {
			d.o.Log.Error("build panicked", "build", b.ID(), "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			log.Notef("the build stopped on an internal error: %v", p)
			end, built = d.fail(build.ReasonInternal, "the build stopped on an internal error: %v", p), false
		}
	}()
	return d.execute(ctx, b, log)
}

// runGuarded is run, with a panic outside execute (starting or settling the
// build) settled as the build's internal failure.
func (d *Dispatcher) runGuarded(ctx context.Context, r ref) {
	defer func() {
		if p := recover(); p != nil {
			d.o.Log.Error("build panicked", "build", r.id(), "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			settle(ctx, d.o, r, d.fail(build.ReasonInternal, "the build stopped on an internal error: %v", p))
		}
	}()
	d.run(ctx, r)
}
