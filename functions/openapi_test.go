package functions

import (
	"context"
	"github.com/slipway-dev/slipway/pkg/auth"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
)

// openapiOperationsServedElsewhere are in the document but served by
// pkg/server, not by New; pkg/server's tests check them.
var openapiOperationsServedElsewhere = []string{
	"GET /health/liveness",
	"GET /health/readiness",
	"GET /metrics",
}

// openapiPublicOperations need no bearer token.
var openapiPublicOperations = []string{
	"GET /health/liveness",
	"GET /health/readiness",
	"GET /metrics",
	"POST /hooks/v1/images/{id}/git", // the git hosts sign their deliveries instead
}

func openapiLoad(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(OpenAPI)
	if err != nil {
		t.Fatalf("loading openapi.yaml: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml is not a valid OpenAPI 3 document: %v", err)
	}
	return doc
}

// openapiOperations returns the document's operations as "METHOD /path".
func openapiOperations(doc *openapi3.T) map[string]*openapi3.Operation {
	ops := map[string]*openapi3.Operation{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			ops[strings.ToUpper(method)+" "+path] = op
		}
	}
	return ops
}

// openapiRegisteredRoutes parses the package's (non-test) Go files and
// returns the pattern of every route(...), mux.Handle(...) and
// mux.HandleFunc(...) call, so that a route added to New without being
// documented fails TestOpenAPIDocumentsEveryRoute.
func openapiRegisteredRoutes(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var patterns []string
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 || !openapiIsRegistration(call.Fun) {
				return true
			}
			if openapiIsParameter(call.Args[0]) {
				// A wrapper such as route forwarding its own pattern
				// parameter: its calls are collected instead.
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				t.Errorf("%s: a route is registered with a pattern that is not a string literal; this test cannot check that it is documented",
					fset.Position(call.Pos()))
				return true
			}
			p, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatalf("%s: %v", fset.Position(lit.Pos()), err)
			}
			patterns = append(patterns, p)
			return true
		})
	}
	return patterns
}

// openapiIsParameter reports whether e is a parameter of the function it is
// in, as the parser resolves identifiers within a file.
func openapiIsParameter(e ast.Expr) bool {
	id, ok := e.(*ast.Ident)
	if !ok || id.Obj == nil { //nolint:staticcheck // the parser's resolution is enough here
		return false
	}
	_, ok = id.Obj.Decl.(*ast.Field) //nolint:staticcheck
	return ok
}

// openapiIsRegistration reports whether fun is route or mux.Handle(Func).
func openapiIsRegistration(fun ast.Expr) bool {
	switch f := fun.(type) {
	case *ast.Ident:
		return f.Name == "route"
	case *ast.SelectorExpr:
		x, ok := f.X.(*ast.Ident)
		return ok && x.Name == "mux" && (f.Sel.Name == "Handle" || f.Sel.Name == "HandleFunc")
	}
	return false
}

func TestOpenAPIDocumentIsValid(t *testing.T) {
	doc := openapiLoad(t)
	if doc.OpenAPI != "3.0.3" {
		t.Errorf("openapi: %q, want 3.0.3", doc.OpenAPI)
	}
	if !strings.Contains(doc.Info.Description, "ETag") {
		t.Error("info.description does not explain the ETag semantics")
	}
}

func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	doc := openapiLoad(t)
	registered := map[string]bool{}
	for _, p := range openapiRegisteredRoutes(t) {
		method, path, ok := strings.Cut(p, " ")
		if !ok || method == "" || !strings.HasPrefix(path, "/") {
			t.Errorf("route %q has no method: every route must name one so that it can be documented", p)
			continue
		}
		registered[method+" "+path] = true
	}
	if len(registered) < 10 {
		t.Fatalf("found only %d routes in the package's source; has New's registration changed shape? %v", len(registered), registered)
	}
	documented := openapiOperations(doc)
	for _, op := range openapiOperationsServedElsewhere {
		if documented[op] == nil {
			t.Errorf("openapi.yaml does not document %s (served by pkg/server)", op)
		}
		delete(documented, op)
	}
	for op := range registered {
		if documented[op] == nil {
			t.Errorf("New registers %s but openapi.yaml does not document it", op)
		}
	}
	for op := range documented {
		if !registered[op] {
			t.Errorf("openapi.yaml documents %s but New does not register it", op)
		}
	}
}

func TestOpenAPIOperationsAreComplete(t *testing.T) {
	doc := openapiLoad(t)
	for name, op := range openapiOperations(doc) {
		public := slices.Contains(openapiPublicOperations, name)
		security := doc.Security
		if op.Security != nil {
			security = *op.Security
		}
		switch {
		case public && len(security) != 0:
			t.Errorf("%s needs no token but the document asks for one", name)
		case !public && (len(security) != 1 || security[0]["bearerAuth"] == nil):
			t.Errorf("%s needs a bearer token but the document does not say so", name)
		case !public && op.Responses.Status(http.StatusUnauthorized) == nil:
			t.Errorf("%s needs a bearer token but does not document 401", name)
		}
		if op.OperationID == "" || op.Summary == "" {
			t.Errorf("%s has no operationId or summary", name)
		}
		if op.RequestBody != nil && op.RequestBody.Value.Content.Get("application/json") != nil && !strings.HasSuffix(name, " /events") {
			for _, status := range []int{http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType} {
				if op.Responses.Status(status) == nil {
					t.Errorf("%s reads a JSON body but does not document %d", name, status)
				}
			}
		}
		_, path, _ := strings.Cut(name, " ")
		if !strings.HasPrefix(path, "/api/") && path != "/events" {
			continue
		}
		for code, resp := range op.Responses.Map() {
			status, err := strconv.Atoi(code)
			if err != nil || status < 400 {
				continue
			}
			mt := resp.Value.Content.Get("application/json")
			if mt == nil || mt.Schema == nil || !openapiIsError(mt.Schema) {
				t.Errorf("%s: response %s is not the Error schema", name, code)
			}
		}
	}
}

// openapiIsError reports whether s is, or is all of, the Error schema.
func openapiIsError(s *openapi3.SchemaRef) bool {
	if s.Ref == "#/components/schemas/Error" {
		return true
	}
	for _, sub := range s.Value.AllOf {
		if sub.Ref == "#/components/schemas/Error" {
			return true
		}
	}
	return false
}

func TestOpenAPIIsServed(t *testing.T) {
	iss, err := auth.LoadIssuer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(New(Deps{Verifier: iss, MaxBody: 1 << 20, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	defer srv.Close()
	tok, _ := iss.Issue("alice", time.Minute)
	req, _ := http.NewRequest("GET", srv.URL+"/api/v1/openapi.yaml", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/yaml" || string(body) != string(OpenAPI) {
		t.Errorf("GET /api/v1/openapi.yaml: %d %q, %d bytes; want 200 application/yaml with the embedded document",
			resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
	}
}
