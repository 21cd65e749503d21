package store

import (
	"strings"
	"time"
)

// Order places a platform event about a workspace in the platform's order:
// the CloudEvents `sequence` extension when the event has one, and its
// `time`. Each workspace keeps the Order of the last event applied to it
// (a deletion's too, as a tombstone), and an event applies only when its
// Order is After that one.
type Order struct {
	// Sequence is the event's `sequence` extension, "" without one.
	Sequence string
	// Time is the event's `time`, zero without one.
	Time time.Time
}

// IsZero reports whether o places nothing: neither sequence nor time.
func (o Order) IsZero() bool { return o.Sequence == "" && o.Time.IsZero() }

// After reports whether an event at o comes after one at prev, so that it
// may override what prev did:
//   - nothing comes before the zero Order (a workspace no ordered event has
//     reached yet, or one stored before orders were kept): o is after it;
//   - when both have a sequence, the sequences decide (see CompareSequences),
//     whatever their times say;
//   - otherwise, when both have a time, the times decide;
//   - otherwise (one has only a sequence, the other only a time) they cannot
//     be compared, and o is not after prev: an event that cannot be placed
//     never overrides one that was.
//
// Equal orders are not after each other: of two events at the same place,
// the one applied first stays.
func (o Order) After(prev Order) bool {
	switch {
	case prev.IsZero():
		return true
	case o.Sequence != "" && prev.Sequence != "":
		return CompareSequences(o.Sequence, prev.Sequence) > 0
	case !o.Time.IsZero() && !prev.Time.IsZero():
		return o.Time.After(prev.Time)
	}
	return false
}

// CompareSequences compares two CloudEvents `sequence` values: as decimal
// integers when both are strings of digits (so "10" follows "9", as from
// a producer counting without zero padding, Slipway's own outbox among
// them), otherwise as strings, byte by byte, as the extension's
// specification says (a lexicographically orderable string). It returns
// -1, 0 or +1.
func CompareSequences(a, b string) int {
	if digits(a) && digits(b) {
		a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
		if len(a) != len(b) {
			if len(a) < len(b) {
				return -1
			}
			return 1
		}
	}
	return strings.Compare(a, b)
}

func digits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// EncodeOrderTime is o.Time as backends store it: RFC 3339 with
// nanoseconds in UTC ("" for none), so that a stored order compares exactly
// as the event's did.
func EncodeOrderTime(o Order) string {
	if o.Time.IsZero() {
		return ""
	}
	return o.Time.UTC().Format(time.RFC3339Nano)
}

// DecodeOrder is the Order stored as seq and EncodeOrderTime's text.
func DecodeOrder(seq, t string) (Order, error) {
	o := Order{Sequence: seq}
	if t == "" {
		return o, nil
	}
	var err error
	o.Time, err = time.Parse(time.RFC3339Nano, t)
	return o, err
}
