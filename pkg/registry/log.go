package registry

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
)

// LogWriter returns a writer for Distribution's JSON log lines (logrus)
// that passes each on to log at a level that fits it, with a few fields
// rather than the whole request: a client sent to fetch a token (401) or
// asking for what is not there (404) is routine, logged at debug; other
// refusals at info; the registry's own failures as errors.
func LogWriter(log *slog.Logger) io.Writer { return logWriter{log} }

type logWriter struct{ log *slog.Logger }

// fields kept from a line, under shorter names.
var logFields = [][2]string{
	{"err.code", "code"}, {"err.message", "error"}, {"http.request.method", "method"},
	{"http.request.uri", "uri"}, {"http.response.status", "status"}, {"vars.name", "repository"},
	{"auth.user.name", "subject"}, {"error", "cause"},
}

// routine are the error codes of ordinary refusals.
var routine = map[string]bool{
	"UNAUTHORIZED": true, "MANIFEST_UNKNOWN": true, "BLOB_UNKNOWN": true, "NAME_UNKNOWN": true,
	"BLOB_UPLOAD_UNKNOWN": true, "DENIED": true,
}

func (w logWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimSpace(string(p)), "\n") {
		w.line(line)
	}
	return len(p), nil
}

func (w logWriter) line(line string) {
	var entry map[string]any
	if err := json.Unmarshal([]byte(line), &entry); err != nil {
		if len(line) > 512 {
			line = line[:512] + "…"
		}
		w.log.Warn("registry", "line", line)
		return
	}
	msg, _ := entry["msg"].(string)
	code, _ := entry["err.code"].(string)
	// Codes are logged as their description ("manifest unknown").
	code = strings.ToUpper(strings.ReplaceAll(code, " ", "_"))
	if code != "" {
		entry["err.code"] = code
	}
	status, _ := entry["http.response.status"].(float64)
	var level slog.Level
	switch lv, _ := entry["level"].(string); {
	case strings.HasPrefix(msg, "error authorizing context"):
		level = slog.LevelDebug // a 401: the client fetches a token and comes back
	case status >= 500:
		level = slog.LevelError
	case routine[code] || status == 401 || status == 404:
		level = slog.LevelDebug
	case code != "" && code != "UNKNOWN" || status >= 400:
		level = slog.LevelInfo
	case lv == "warning":
		level = slog.LevelWarn
	case lv == "info":
		level = slog.LevelInfo
	case lv == "debug" || lv == "trace":
		level = slog.LevelDebug
	default:
		level = slog.LevelError
	}
	if !w.log.Enabled(context.Background(), level) {
		return
	}
	attrs := []any{}
	for _, f := range logFields {
		if v, ok := entry[f[0]]; ok && v != "" {
			if s, ok := v.(string); ok && len(s) > 256 {
				v = s[:256] + "…"
			}
			attrs = append(attrs, f[1], v)
		}
	}
	if len(msg) > 256 {
		msg = msg[:256] + "…"
	}
	w.log.Log(context.Background(), level, "registry: "+msg, attrs...)
}
