// Package apitest lets tests talk to a Slipway server while checking every
// exchange against the project's OpenAPI document (functions.OpenAPI): a
// response whose status, headers or body the document does not describe
// fails the test. Requests are checked too, but only recorded: tests send
// deliberately bad requests to see them refused.
//
// Package functions' own (internal) tests cannot import apitest, which
// imports functions; use an external test package (functions_test) there.
package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/slipway-dev/slipway/functions"
)

// Client sends requests to one server and validates each request and
// response against the OpenAPI document. Its methods may be called from
// several goroutines, but Do and JSON call t.Fatalf when a request cannot be
// sent at all, which testing only allows on the test's goroutine.
type Client struct {
	// BaseURL is the server's URL without a trailing slash, e.g. an
	// httptest.Server's URL; JSON resolves paths against it.
	BaseURL string
	// HTTP sends the requests. It does not follow redirects, so that the
	// response checked is the one the server gave.
	HTTP *http.Client

	t      testing.TB
	doc    *openapi3.T
	router routers.Router

	mu       sync.Mutex
	problems []string
}

// options are the validation options for every exchange. Defaults are not
// written into requests: the request sent is exactly the one the test built.
func options() *openapi3filter.Options {
	return &openapi3filter.Options{
		AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
		IncludeResponseStatus: true,
		SkipSettingDefaults:   true,
	}
}

// NewClient returns a Client for the server at baseURL. It fails the test
// if the OpenAPI document does not load or validate.
func NewClient(t testing.TB, baseURL string) *Client {
	t.Helper()
	doc, err := LoadDocument()
	if err != nil {
		t.Fatalf("apitest: %v", err)
		return nil
	}
	// Match requests by path only, whatever host the test server has.
	doc.Servers = nil
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatalf("apitest: routing the OpenAPI document: %v", err)
		return nil
	}
	return &Client{
		BaseURL: strings.TrimSuffix(baseURL, "/"),
		HTTP: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}},
		t: t, doc: doc, router: router,
	}
}

// LoadDocument parses and validates functions.OpenAPI. Each call returns a
// new document that the caller may change.
func LoadDocument() (*openapi3.T, error) {
	doc, err := openapi3.NewLoader().LoadFromData(functions.OpenAPI)
	if err != nil {
		return nil, fmt.Errorf("loading the OpenAPI document: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("the OpenAPI document is invalid: %w", err)
	}
	return doc, nil
}

// RequestProblems returns, in order, how the requests sent so far departed
// from the document: one line per request that did, naming its method and
// path. They are logged but do not fail the test.
func (c *Client) RequestProblems() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.problems...)
}

func (c *Client) recordRequestProblem(format string, args ...any) string {
	p := abbreviate(fmt.Sprintf(format, args...), 2000)
	c.mu.Lock()
	c.problems = append(c.problems, p)
	c.mu.Unlock()
	c.t.Logf("apitest: (request not as documented, sent anyway) %s", p)
	return p
}

// Do sends req as it is and returns the response with its body unread (the
// client has read and restored it). It validates the request against the
// document and records any problem (see RequestProblems), and fails the test
// when the response does not match the document: an undocumented status, a
// missing or malformed documented header, or a body that does not match its
// schema. Under /api/ and at /events, a path the document lacks must be
// answered with its NotFound response and a method a documented path lacks
// with its MethodNotAllowed response; elsewhere (the web page, say) an
// undocumented path's response is not checked. A streamed log (query follow=true) is checked for status and
// headers only, and its body is handed over unread.
//
// Do calls t.Fatalf, and returns nil, if the request cannot be sent.
func (c *Client) Do(req *http.Request) *http.Response {
	c.t.Helper()
	var reqBody []byte
	if req.Body != nil && req.Body != http.NoBody {
		var err error
		reqBody, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			c.t.Fatalf("apitest: reading the body of %s %s: %v", req.Method, req.URL.Path, err)
			return nil
		}
		req.Body = io.NopCloser(bytes.NewReader(reqBody))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(reqBody)), nil }
		req.ContentLength = int64(len(reqBody))
	}

	route, params, routeErr := c.findRoute(req, reqBody)
	var reqProblem string
	var reqInput *openapi3filter.RequestValidationInput
	if routeErr == nil {
		reqInput = &openapi3filter.RequestValidationInput{
			Request: validationCopy(req, reqBody), PathParams: params, Route: route, Options: options(),
		}
		if err := openapi3filter.ValidateRequest(req.Context(), reqInput); err != nil {
			reqProblem = c.recordRequestProblem("%s %s: %v", req.Method, req.URL.RequestURI(), err)
		}
	} else {
		reqProblem = c.recordRequestProblem("%s %s: %v", req.Method, req.URL.RequestURI(), routeErr)
		if p := req.URL.Path; strings.HasPrefix(p, "/api/") || p == "/events" {
			reqInput = c.fallbackInput(req, reqBody, routeErr)
		}
	}

	resp, err := c.HTTP.Do(req)
	if err != nil {
		c.t.Fatalf("apitest: %s %s: %v", req.Method, req.URL.RequestURI(), err)
		return nil
	}

	opts := options()
	streamed := req.URL.Query().Get("follow") == "true"
	var respBody []byte
	if streamed {
		opts.ExcludeResponseBody = true
	} else {
		respBody, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(respBody))
		if err != nil {
			c.t.Errorf("apitest: %s %s answered %d but its body could not be read: %v", req.Method, req.URL.RequestURI(), resp.StatusCode, err)
			return resp
		}
	}
	if reqInput == nil {
		return resp
	}
	respInput := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: reqInput,
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Options:                opts,
	}
	if !streamed {
		respInput.SetBodyBytes(respBody)
	}
	if err := openapi3filter.ValidateResponse(req.Context(), respInput); err != nil {
		where := "operation " + reqInput.Route.Method + " " + reqInput.Route.Path
		if routeErr != nil {
			where = routeErr.Error() + " in the document"
		}
		msg := fmt.Sprintf("apitest: %s %s answered %d, which the OpenAPI document does not describe (%s): %s",
			req.Method, req.URL.RequestURI(), resp.StatusCode, where, abbreviate(err.Error(), 4000))
		if ct := resp.Header.Get("Content-Type"); ct != "" {
			msg += "\nContent-Type: " + ct
		}
		if !streamed {
			msg += "\nbody: " + abbreviate(string(respBody), 2000)
		}
		if reqProblem != "" {
			msg += "\n(the request did not match the document either: " + reqProblem + ")"
		}
		c.t.Errorf("%s", msg)
	}
	return resp
}

// findRoute finds the documented operation for req. HEAD is routed like GET,
// as Go's mux serves it.
func (c *Client) findRoute(req *http.Request, body []byte) (*routers.Route, map[string]string, error) {
	find := validationCopy(req, body)
	if req.Method == http.MethodHead {
		find.Method = http.MethodGet
	}
	route, params, err := c.router.FindRoute(find)
	if err == nil && req.Method == http.MethodHead {
		route.Method = http.MethodHead
	}
	return route, params, err
}

// fallbackInput describes what the API must answer for a path or method the
// document lacks: its NotFound or MethodNotAllowed response. It returns
// nil when the document has no such response (then nothing is checked).
func (c *Client) fallbackInput(req *http.Request, body []byte, routeErr error) *openapi3filter.RequestValidationInput {
	status, name := http.StatusNotFound, "NotFound"
	if errors.Is(routeErr, routers.ErrMethodNotAllowed) {
		status, name = http.StatusMethodNotAllowed, "MethodNotAllowed"
	}
	ref := c.doc.Components.Responses[name]
	if ref == nil {
		return nil
	}
	op := openapi3.NewOperation()
	op.Responses = openapi3.NewResponses(openapi3.WithStatus(status, ref))
	return &openapi3filter.RequestValidationInput{
		Request: validationCopy(req, body),
		Route:   &routers.Route{Spec: c.doc, Path: req.URL.Path, Method: req.Method, Operation: op},
		Options: options(),
	}
}

// validationCopy returns a copy of req with its own copy of body, so that
// validation can read (and even rewrite) it without touching what is sent.
func validationCopy(req *http.Request, body []byte) *http.Request {
	cp := req.Clone(req.Context())
	if body != nil {
		cp.Body = io.NopCloser(bytes.NewReader(body))
	} else {
		cp.Body = http.NoBody
	}
	return cp
}

// abbreviate cuts s to at most max bytes, marking the cut.
func abbreviate(s string, max int) string {
	if len(s) > max {
		return s[:max] + fmt.Sprintf("... (%d bytes in all)", len(s))
	}
	return s
}

// JSON sends method path (relative to BaseURL, e.g. "/api/v1/info") through
// Do and returns the response and its whole body. token, when not empty, is
// sent as a bearer token. body, when not nil, is the request body: a []byte,
// json.RawMessage or string is sent as it is, anything else JSON-encoded,
// and Content-Type is application/json unless headers says otherwise.
// headers are name, value pairs added to the request.
//
// JSON calls t.Fatalf, and returns nil, nil, if the request cannot be built
// or sent.
func (c *Client) JSON(method, path, token string, body any, headers ...string) (*http.Response, []byte) {
	c.t.Helper()
	if len(headers)%2 != 0 {
		c.t.Fatalf("apitest: JSON: headers must be name, value pairs; got %q", headers)
		return nil, nil
	}
	var r io.Reader
	if body != nil {
		switch b := body.(type) {
		case []byte:
			r = bytes.NewReader(b)
		case json.RawMessage:
			r = bytes.NewReader(b)
		case string:
			r = strings.NewReader(b)
		default:
			enc, err := json.Marshal(b)
			if err != nil {
				c.t.Fatalf("apitest: JSON: encoding the body of %s %s: %v", method, path, err)
				return nil, nil
			}
			r = bytes.NewReader(enc)
		}
	}
	req, err := http.NewRequest(method, c.BaseURL+path, r)
	if err != nil {
		c.t.Fatalf("apitest: JSON: %s %s: %v", method, path, err)
		return nil, nil
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp := c.Do(req)
	if resp == nil {
		return nil, nil
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(data))
	if err != nil {
		c.t.Errorf("apitest: JSON: reading the body of %s %s: %v", method, path, err)
	}
	return resp, data
}
