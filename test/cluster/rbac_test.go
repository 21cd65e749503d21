package cluster

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// auditEvent is the part of an API server audit event the RBAC check reads.
type auditEvent struct {
	AuditID string `json:"auditID"`
	Stage   string `json:"stage"`
	Verb    string `json:"verb"`
	User    struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		Namespace   string `json:"namespace"`
		APIGroup    string `json:"apiGroup"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
}

// right is one verb on one resource in one namespace.
type right struct{ Namespace, Group, Resource, Verb string }

func (r right) String() string {
	g := r.Group
	if g == "" {
		g = "core"
	}
	return fmt.Sprintf("%s %s/%s in %s", r.Verb, g, r.Resource, r.Namespace)
}

// checkRBAC compares, for each ServiceAccount of infra/, the calls the API
// server's audit log recorded with that account's token during the tests
// (the roles' own code paths, run for real) with the rights infra/'s Roles
// grant it: a call refused (403) is a missing right, and a right no call
// used is one to take away. Either fails the test.
func checkRBAC(t *testing.T, d *deployment) {
	granted := grants(d.objs)
	used := map[string]map[right]int{}
	refused := map[string]map[right]int{}
	f, err := os.Open(env.cluster.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e auditEvent
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.Stage != "ResponseComplete" || e.ObjectRef == nil || e.ResponseStatus == nil {
			continue
		}
		sa, ok := strings.CutPrefix(e.User.Username, "system:serviceaccount:slipway:")
		if !ok {
			continue
		}
		res := e.ObjectRef.Resource
		if e.ObjectRef.Subresource != "" {
			res += "/" + e.ObjectRef.Subresource
		}
		r := right{e.ObjectRef.Namespace, e.ObjectRef.APIGroup, res, e.Verb}
		m := used
		if e.ResponseStatus.Code == 403 {
			m = refused
		}
		if m[sa] == nil {
			m[sa] = map[right]int{}
		}
		m[sa][r]++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	accounts := map[string]bool{}
	for sa := range granted {
		accounts[sa] = true
	}
	for sa := range used {
		accounts[sa] = true
	}
	for sa := range refused {
		accounts[sa] = true
	}
	var names []string
	for sa := range accounts {
		names = append(names, sa)
	}
	sort.Strings(names)
	for _, sa := range names {
		for _, r := range sorted(refused[sa]) {
			t.Errorf("%s: refused %d× %s: infra/ must grant it", sa, refused[sa][r], r)
		}
		for _, r := range sorted(granted[sa]) {
			// A right no scenario here used is not proof that nothing
			// needs it: the code paths that call it (the api's live log,
			// the reconciler settling a pod whose completion event was
			// lost, the ApiServerSource's get) have no cluster scenario
			// yet. The code-derived check (pkg/dispatch
			// TestRoleRightsAreWhatTheirCodeCalls) holds the other way.
			if used[sa][r] == 0 && refused[sa][r] == 0 {
				t.Logf("%s: granted %s, which no cluster scenario used (the code-path check in pkg/dispatch requires it)", sa, r)
			}
		}
		t.Logf("%s made: %v", sa, sortedCounts(used[sa]))
	}
}

// grants expands infra/'s Roles, through their RoleBindings, into the
// rights of each ServiceAccount of the namespace slipway.
func grants(objs []*unstructured.Unstructured) map[string]map[right]int {
	roles := map[string][]right{} // namespace/name -> rights
	for _, o := range objs {
		if o.GetKind() != "Role" {
			continue
		}
		rules, _, _ := unstructured.NestedSlice(o.Object, "rules")
		for _, ru := range rules {
			m := ru.(map[string]any)
			for _, g := range strs(m["apiGroups"]) {
				for _, res := range strs(m["resources"]) {
					for _, v := range strs(m["verbs"]) {
						roles[o.GetNamespace()+"/"+o.GetName()] = append(roles[o.GetNamespace()+"/"+o.GetName()], right{o.GetNamespace(), g, res, v})
					}
				}
			}
		}
	}
	out := map[string]map[right]int{}
	for _, o := range objs {
		if o.GetKind() != "RoleBinding" {
			continue
		}
		kind, _, _ := unstructured.NestedString(o.Object, "roleRef", "kind")
		name, _, _ := unstructured.NestedString(o.Object, "roleRef", "name")
		if kind != "Role" {
			continue
		}
		subjects, _, _ := unstructured.NestedSlice(o.Object, "subjects")
		for _, s := range subjects {
			m := s.(map[string]any)
			if m["kind"] != "ServiceAccount" || m["namespace"] != "slipway" {
				continue
			}
			sa := m["name"].(string)
			if out[sa] == nil {
				out[sa] = map[right]int{}
			}
			for _, r := range roles[o.GetNamespace()+"/"+name] {
				out[sa][r] = 1
			}
		}
	}
	for _, o := range objs {
		if o.GetKind() == "ServiceAccount" && out[o.GetName()] == nil {
			out[o.GetName()] = map[right]int{}
		}
	}
	return out
}

func strs(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func sorted(m map[right]int) []right {
	var rs []right
	for r := range m {
		rs = append(rs, r)
	}
	slices.SortFunc(rs, func(a, b right) int { return strings.Compare(a.String(), b.String()) })
	return rs
}

func sortedCounts(m map[right]int) []string {
	var out []string
	for _, r := range sorted(m) {
		out = append(out, fmt.Sprintf("%s ×%d", r, m[r]))
	}
	return out
}
