package functions

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/auth"
)

// A handler that panics on a request answers 500 in the contract's error
// shape (net/http's own recovery would drop the connection), logs the
// cause, and the server goes on serving.
func TestPanickingHandlerAnswers500(t *testing.T) {
	iss, err := auth.LoadIssuer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := iss.Issue("alice", time.Hour)
	var logs strings.Builder
	a := &api{Deps: Deps{Verifier: iss, Log: slog.New(slog.NewTextHandler(&logs, nil)), MaxBody: 1 << 20}}
	srv := httptest.NewServer(a.authenticate(func(w http.ResponseWriter, r *http.Request) error {
		panic("a parser fell over")
	}))
	defer srv.Close()
	for range 2 {
		req, _ := http.NewRequest("GET", srv.URL, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		var e struct{ Error Error }
		if res.StatusCode != 500 || json.Unmarshal(body, &e) != nil || e.Error.Code != "internal" {
			t.Fatalf("%d %s", res.StatusCode, body)
		}
	}
	if !strings.Contains(logs.String(), "a parser fell over") {
		t.Fatalf("the panic was not logged: %s", logs.String())
	}
}
