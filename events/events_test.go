package events

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/slipway-dev/slipway/pkg/store"
)

func TestReadRequestModes(t *testing.T) {
	data := `{"id":"ws1","owner":"alice","members":["bob"]}`
	binary := httptest.NewRequest("POST", "/events", strings.NewReader(data))
	for k, v := range map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "1", "Ce-Source": "/platform", "Ce-Type": WorkspaceCreated, "Content-Type": "application/json"} {
		binary.Header.Set(k, v)
	}
	structured := httptest.NewRequest("POST", "/events", strings.NewReader(
		`{"specversion":"1.0","id":"1","source":"/platform","type":"`+WorkspaceCreated+`","datacontenttype":"application/json","data":`+data+`}`))
	structured.Header.Set("Content-Type", "application/cloudevents+json")
	for name, r := range map[string]*httptest.ResponseRecorder{"binary": nil, "structured": nil} {
		req := binary
		if name == "structured" {
			req = structured
		}
		_ = r
		e, err := ReadRequest(req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ws, err := DecodeWorkspace(e)
		if err != nil || ws.ID != "ws1" || ws.Owner != "alice" || len(ws.Members) != 1 {
			t.Fatalf("%s: %+v, %v", name, ws, err)
		}
		if Key(e) != "/platform\x001" {
			t.Fatalf("%s: key %q", name, Key(e))
		}
	}
}

func TestMalformed(t *testing.T) {
	for name, body := range map[string]string{
		"not json":   `{`,
		"no id":      `{"specversion":"1.0","source":"/p","type":"x"}`,
		"bad spec":   `{"specversion":"9.9","id":"1","source":"/p","type":"x"}`,
		"empty body": ``,
	} {
		r := httptest.NewRequest("POST", "/events", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/cloudevents+json")
		if _, err := ReadRequest(r); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
	e, _ := New(WorkspaceCreated, "ws1", map[string]any{"owner": "alice"})
	if _, err := DecodeWorkspace(e); !errors.Is(err, ErrMalformed) {
		t.Errorf("workspace without id: %v", err)
	}
	e, _ = New(WorkspaceUpdated, "ws1", map[string]any{"id": "ws1"})
	if _, err := DecodeWorkspace(e); !errors.Is(err, ErrMalformed) {
		t.Errorf("update without owner: %v", err)
	}
	e, _ = New(WorkspaceDeleted, "ws1", map[string]any{"id": "ws1"})
	if _, err := DecodeWorkspace(e); err != nil {
		t.Errorf("delete needs only an id: %v", err)
	}
}

// FuzzReadRequest feeds arbitrary bodies and headers to the event decoder:
// it may refuse them, never panic, and what it accepts is a valid event.
func FuzzReadRequest(f *testing.F) {
	f.Add("application/cloudevents+json", "", `{"specversion":"1.0","id":"1","source":"/p","type":"platform.workspace.created","data":{"id":"ws1","owner":"a"}}`)
	f.Add("application/json", "1.0", `{"id":"ws1","owner":"a","members":["b"]}`)
	f.Add("application/cloudevents-batch+json", "", `[{}]`)
	f.Add("text/plain", "0.3", "\x00\xff")
	f.Fuzz(func(t *testing.T, contentType, specVersion, body string) {
		r := httptest.NewRequest("POST", "/events", bytes.NewReader([]byte(body)))
		r.Header.Set("Content-Type", contentType)
		if specVersion != "" {
			r.Header.Set("Ce-Specversion", specVersion)
			r.Header.Set("Ce-Id", "1")
			r.Header.Set("Ce-Source", "/p")
			r.Header.Set("Ce-Type", WorkspaceUpdated)
		}
		e, err := ReadRequest(r)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not marked malformed: %v", err)
			}
			return
		}
		if e.ID() == "" || e.Type() == "" {
			t.Fatalf("accepted an event without id or type: %v", e)
		}
		if ws, err := DecodeWorkspace(e); err == nil && ws.ID == "" {
			t.Fatal("decoded a workspace without id")
		}
	})
}

func TestLocalDeliveryKeepsPublishOrder(t *testing.T) {
	p, err := NewPublisher("", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(time.Second)
	var mu sync.Mutex
	var got []string
	p.Subscribe(BuildQueued, func(_ context.Context, e cloudevents.Event) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, e.Subject())
		return nil
	})
	fails := 0
	p.Subscribe(BuildCancelled, func(context.Context, cloudevents.Event) error {
		mu.Lock()
		defer mu.Unlock()
		if fails++; fails < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	for i := range 50 {
		p.Publish(BuildQueued, fmt.Sprint(i), map[string]int{"n": i})
	}
	mu.Lock()
	order := fmt.Sprint(got)
	mu.Unlock()
	if want := fmt.Sprint(func() (s []string) {
		for i := range 50 {
			s = append(s, fmt.Sprint(i))
		}
		return
	}()); order != want {
		t.Fatalf("delivered in the order %s", order)
	}
	// A failing handler is retried until it takes the event.
	p.Publish(BuildCancelled, "x", nil)
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := fails
		mu.Unlock()
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d attempts, want 3", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A handler that panics on an event is recovered: the publisher's caller (an
// HTTP handler, a build slot) goes on, and the other handlers get the event.
func TestPanickingHandlerIsRecovered(t *testing.T) {
	var logs strings.Builder
	p, err := NewPublisher("", slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(time.Second)
	p.Subscribe(BuildQueued, func(context.Context, cloudevents.Event) error { panic("handler fell over") })
	got := 0
	p.Subscribe(BuildQueued, func(context.Context, cloudevents.Event) error { got++; return nil })
	p.Publish(BuildQueued, "img-1", map[string]int{"n": 1})
	if got != 1 {
		t.Fatalf("the second handler got %d events", got)
	}
	if !strings.Contains(logs.String(), "handler fell over") {
		t.Fatalf("the panic was not logged: %s", logs.String())
	}
}

func TestWorkspaceOrder(t *testing.T) {
	data := `{"id":"ws1","owner":"alice"}`
	at := time.Date(2026, 12, 1, 9, 0, 0, 123456789, time.UTC)
	received := at.Add(time.Hour)
	structured := func(extra string) string {
		return `{"specversion":"1.0","id":"1","source":"/platform","type":"` + WorkspaceUpdated + `"` + extra + `,"datacontenttype":"application/json","data":` + data + `}`
	}
	for _, c := range []struct {
		name    string
		headers map[string]string // binary mode when set
		body    string
		want    store.Order
		bad     bool
	}{
		{name: "binary time", headers: map[string]string{"Ce-Time": at.Format(time.RFC3339Nano)}, body: data, want: store.Order{Time: at}},
		{name: "binary sequence", headers: map[string]string{"Ce-Sequence": "0042"}, body: data, want: store.Order{Sequence: "0042"}},
		{name: "structured both", body: structured(`,"time":"` + at.Format(time.RFC3339Nano) + `","sequence":"7"`), want: store.Order{Sequence: "7", Time: at}},
		{name: "structured integer sequence", body: structured(`,"sequence":7`), want: store.Order{Sequence: "7"}},
		{name: "neither", body: structured(``), want: store.Order{Time: received}},
		{name: "empty sequence", body: structured(`,"sequence":""`), bad: true},
		{name: "binary neither", headers: map[string]string{}, body: data, want: store.Order{Time: received}},
	} {
		r := httptest.NewRequest("POST", "/events", strings.NewReader(c.body))
		if c.headers != nil {
			for k, v := range map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "1", "Ce-Source": "/platform", "Ce-Type": WorkspaceUpdated, "Content-Type": "application/json"} {
				r.Header.Set(k, v)
			}
			for k, v := range c.headers {
				r.Header.Set(k, v)
			}
		} else {
			r.Header.Set("Content-Type", "application/cloudevents+json")
		}
		e, err := ReadRequest(r)
		if err != nil {
			if c.bad && errors.Is(err, ErrMalformed) {
				continue
			}
			t.Fatalf("%s: %v", c.name, err)
		}
		got, err := WorkspaceOrder(e, received)
		if c.bad {
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("%s: WorkspaceOrder = %+v, %v; want ErrMalformed", c.name, got, err)
			}
			continue
		}
		if err != nil || got.Sequence != c.want.Sequence || !got.Time.Equal(c.want.Time) {
			t.Errorf("%s: WorkspaceOrder = %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}
}
