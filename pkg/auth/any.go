package auth

import (
	"context"
	"errors"
	"fmt"
)

// Any accepts a token that one of vs accepts, tried in order: the
// platform's users and, in the cluster, Knative Eventing's deliveries, which
// carry tokens of the cluster's own issuer.
func Any(vs ...Verifier) Verifier { return anyOf(vs) }

type anyOf []Verifier

func (a anyOf) Verify(ctx context.Context, token string) (Identity, error) {
	var errs []error
	for _, v := range a {
		id, err := v.Verify(ctx, token)
		if err == nil {
			return id, nil
		}
		errs = append(errs, err)
	}
	return Identity{}, fmt.Errorf("%w: %v", ErrUnauthenticated, errors.Join(errs...))
}
