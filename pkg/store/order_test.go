package store_test

import (
	"testing"
	"time"

	"github.com/slipway-dev/slipway/pkg/store"
)

func TestCompareSequences(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"9", "10", -1},   // integers: numerically
		{"010", "9", 1},   // zero padding does not matter
		{"0010", "10", 0}, // nor between equal integers
		{"00009", "00010", -1},
		{"18446744073709551616", "18446744073709551615", 1}, // past uint64
		{"b", "a", 1},    // strings: byte by byte
		{"a9", "a10", 1}, // not integers, so not numerically
		{"-1", "-2", -1}, // a sign makes it a string
		{"2026-11-27T12:00:00Z/7", "2026-11-27T12:00:00Z/8", -1},
	} {
		if got := store.CompareSequences(c.a, c.b); got != c.want {
			t.Errorf("CompareSequences(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
		if got := store.CompareSequences(c.b, c.a); got != -c.want {
			t.Errorf("CompareSequences(%q, %q) = %d, want %d", c.b, c.a, got, -c.want)
		}
	}
}

func TestOrderAfter(t *testing.T) {
	t1 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	t2 := t1.Add(time.Millisecond)
	for _, c := range []struct {
		name      string
		o, prev   store.Order
		wantAfter bool
	}{
		{"anything after nothing", store.Order{Time: t1}, store.Order{}, true},
		{"later time", store.Order{Time: t2}, store.Order{Time: t1}, true},
		{"earlier time", store.Order{Time: t1}, store.Order{Time: t2}, false},
		{"same time", store.Order{Time: t1}, store.Order{Time: t1}, false},
		{"sequence beats time", store.Order{Sequence: "2", Time: t1}, store.Order{Sequence: "1", Time: t2}, true},
		{"older sequence, later time", store.Order{Sequence: "1", Time: t2}, store.Order{Sequence: "2", Time: t1}, false},
		{"same sequence", store.Order{Sequence: "2", Time: t2}, store.Order{Sequence: "2", Time: t1}, false},
		{"time when one has no sequence", store.Order{Time: t2}, store.Order{Sequence: "9", Time: t1}, true},
		{"time when the other has no sequence", store.Order{Sequence: "1", Time: t1}, store.Order{Time: t2}, false},
		{"time only after sequence only", store.Order{Time: t2}, store.Order{Sequence: "1"}, false},
		{"sequence only after time only", store.Order{Sequence: "1"}, store.Order{Time: t1}, false},
		{"nothing after something", store.Order{}, store.Order{Time: t1}, false},
	} {
		if got := c.o.After(c.prev); got != c.wantAfter {
			t.Errorf("%s: %+v.After(%+v) = %v, want %v", c.name, c.o, c.prev, got, c.wantAfter)
		}
	}
}

func TestOrderTimeRoundTrip(t *testing.T) {
	o := store.Order{Sequence: "7", Time: time.Date(2026, 11, 27, 13, 0, 0, 123456789, time.FixedZone("x", 3600))}
	got, err := store.DecodeOrder(o.Sequence, store.EncodeOrderTime(o))
	if err != nil || got.Sequence != "7" || !got.Time.Equal(o.Time) {
		t.Fatalf("round trip of %+v = %+v, %v", o, got, err)
	}
	if got, err := store.DecodeOrder("", store.EncodeOrderTime(store.Order{})); err != nil || !got.IsZero() {
		t.Fatalf("round trip of the zero order = %+v, %v", got, err)
	}
}
