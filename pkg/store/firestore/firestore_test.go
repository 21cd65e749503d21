package firestore_test

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"testing"

	fs "cloud.google.com/go/firestore"

	"github.com/slipway-dev/slipway/pkg/store"
	"github.com/slipway-dev/slipway/pkg/store/firestore"
	"github.com/slipway-dev/slipway/pkg/store/storetest"
)

// needEmulator skips t unless FIRESTORE_EMULATOR_HOST names an emulator.
func needEmulator(t *testing.T) {
	t.Helper()
	if os.Getenv("FIRESTORE_EMULATOR_HOST") == "" {
		t.Skip("FIRESTORE_EMULATOR_HOST is not set: the Firestore store's tests need an emulator " +
			"(`make -f mk/firestore.mk test-firestore` starts the npm one and runs them)")
	}
}

// open returns a Store on a fresh project of the emulator, so that tests and
// runs never share data, and a plain client of that project to look at the
// documents themselves.
func open(t *testing.T) (*firestore.Store, *fs.Client) {
	t.Helper()
	needEmulator(t)
	id := make([]byte, 6)
	rand.Read(id)
	project := "slipway-test-" + hex.EncodeToString(id)
	s, err := firestore.Open(t.Context(), project)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	raw, err := fs.NewClient(t.Context(), project)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return s, raw
}

// TestConformance runs the store conformance suite. Its concurrency cases
// need transactions, preconditions and atomic commits, which the npm
// emulator does not honour, so it runs only against the official emulator;
// the smoke tests cover what the npm emulator implements.
func TestConformance(t *testing.T) {
	needEmulator(t)
	if os.Getenv("SLIPWAY_FIRESTORE_OFFICIAL") != "1" {
		t.Skip("the conformance suite needs Firestore transactions, which only the official emulator honours: " +
			"set SLIPWAY_FIRESTORE_OFFICIAL=1 when FIRESTORE_EMULATOR_HOST is the official emulator " +
			"(gcloud emulators firestore start); TestSmoke* cover what the npm emulator implements")
	}
	storetest.Run(t, func(t *testing.T) store.Store {
		s, _ := open(t)
		return s
	})
}

// TestIndexes checks that infra/firestore.indexes.json defines the indexes
// the store's queries need in production, which no emulator enforces.
func TestIndexes(t *testing.T) {
	data, err := os.ReadFile("../../../infra/firestore.indexes.json")
	if err != nil {
		t.Fatal(err)
	}
	type index struct {
		CollectionGroup, QueryScope, Order string
		FieldPath                          string
		Fields                             []index
		Indexes                            []index
	}
	var f struct{ Indexes, FieldOverrides []index }
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	var have []string
	for _, ix := range f.Indexes {
		fields := []string{}
		for _, fl := range ix.Fields {
			fields = append(fields, fl.FieldPath+" "+fl.Order)
		}
		have = append(have, fmt.Sprintf("%s %s %v", ix.CollectionGroup, ix.QueryScope, fields))
	}
	for _, o := range f.FieldOverrides {
		for _, ix := range o.Indexes {
			have = append(have, fmt.Sprintf("%s.%s %s %s", o.CollectionGroup, o.FieldPath, ix.QueryScope, ix.Order))
		}
	}
	for _, want := range []string{
		"images COLLECTION [workspace ASCENDING name ASCENDING]",                  // ListImages
		"images COLLECTION [workspace ASCENDING usable ASCENDING name ASCENDING]", // ListImages, usable
		"builds.status COLLECTION_GROUP ASCENDING",                                // ListActiveBuilds
		"builds.status COLLECTION ASCENDING",                                      // kept when overriding
	} {
		if !slices.Contains(have, want) {
			t.Errorf("infra/firestore.indexes.json lacks %q; it has %q", want, have)
		}
	}
}
