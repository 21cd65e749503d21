package functions

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/slipway-dev/slipway/pkg/auth"
	"github.com/slipway-dev/slipway/pkg/build"
	"github.com/slipway-dev/slipway/pkg/image"
	"github.com/slipway-dev/slipway/pkg/store"
)

// Error is an API error: the HTTP status and the contract's
// {"error":{"code","message"}} body.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Line    int    `json:"line,omitempty"`
	Field   string `json:"field,omitempty"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Common errors.
var (
	errNotFound  = errorf(http.StatusNotFound, "not_found", "no such resource, or you may not see it")
	errForbidden = errorf(http.StatusForbidden, "forbidden", "only the workspace's owner may do this")
)

// asError maps any error to the Error the client sees. Errors it does not
// know become 500 internal, logged with their detail but not shown.
func asError(err error) *Error {
	var e *Error
	var inv *image.InvalidError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &e):
		return e
	case errors.As(err, &inv):
		code := "invalid_argument"
		switch {
		case inv.Field == "context.dockerfile":
			code = "invalid_dockerfile"
		case errors.Is(inv, image.ErrReservedName):
			code = "reserved_name"
		case inv.Field == "rebuild.schedule.cron":
			code = "invalid_cron"
		case inv.Field == "rebuild.schedule.timezone":
			code = "invalid_timezone"
		case strings.HasPrefix(inv.Field, "rebuild"):
			code = "invalid_rebuild"
		}
		return &Error{Status: http.StatusBadRequest, Code: code, Message: inv.Error(), Line: inv.Line, Field: inv.Field}
	case errors.As(err, &mbe):
		return errorf(http.StatusRequestEntityTooLarge, "too_large", "request body is larger than %d bytes", mbe.Limit)
	case errors.Is(err, auth.ErrUnauthenticated):
		return errorf(http.StatusUnauthorized, "unauthenticated", "a valid bearer token is required")
	case errors.Is(err, store.ErrNotFound):
		return errNotFound
	case errors.Is(err, store.ErrNameTaken):
		return errorf(http.StatusConflict, "name_taken", "an image with this name already exists on the platform")
	case errors.Is(err, store.ErrConflict):
		return errorf(http.StatusPreconditionFailed, "precondition_failed", "the image was changed by someone else since you read it: reload it and apply your change again")
	case errors.Is(err, store.ErrBuildActive):
		return errorf(http.StatusConflict, "build_active", "a build of this image is already queued or running")
	case errors.Is(err, store.ErrBadCursor):
		return errorf(http.StatusBadRequest, "invalid_argument", "page_token is not one this server issued")
	case errors.Is(err, build.ErrTransition):
		return errorf(http.StatusConflict, "build_finished", "the build has already finished")
	}
	return errorf(http.StatusInternalServerError, "internal", "internal error")
}

// writeError writes err in the contract's shape; the one place errors meet
// the wire.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	e := asError(err)
	if e.Status >= 500 {
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	}
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="slipway"`)
	}
	writeJSON(w, e.Status, map[string]*Error{"error": e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
