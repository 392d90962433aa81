package transport

import (
	"context"
	"fmt"
	"strings"

	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
)

// Receive verifies an object that arrived from elsewhere and stores it in
// s if it is sound and everything it references is already in s. It is
// what every receiving side does with every object, so that a store fed
// by a transfer keeps the closure invariant and never holds bytes that do
// not match their ID. It returns whether the object was new.
func Receive(ctx context.Context, s objects.Store, id objects.ID, stored []byte) (bool, error) {
	if len(stored) > MaxStoredSize {
		return false, fmt.Errorf("object %s: %w: stored form of %d bytes exceeds the limit of %d", id, objects.ErrCorrupt, len(stored), MaxStoredSize)
	}
	if ok, err := s.Has(ctx, id); err != nil || ok {
		return false, err
	}
	enc, err := objects.Unseal(id, stored)
	if err != nil {
		return false, err
	}
	_, ids, err := objects.References(enc)
	if err != nil {
		return false, fmt.Errorf("object %s: %w: %v", id, objects.ErrCorrupt, err)
	}
	for _, ref := range ids {
		ok, err := s.Has(ctx, ref)
		if err != nil {
			return false, err
		}
		if !ok {
			return false, fmt.Errorf("object %s: %w %s (send it first)", id, ErrMissingReference, ref)
		}
	}
	if err := s.Put(ctx, id, stored); err != nil {
		return false, err
	}
	return true, nil
}

// checkSnapshot verifies that id names a snapshot present in s, which by
// the closure invariant brings its whole history and tree.
func checkSnapshot(ctx context.Context, s objects.Store, id objects.ID) error {
	enc, err := objects.Load(ctx, s, id)
	if err != nil {
		return err
	}
	k, err := objects.KindOf(enc)
	if err != nil {
		return fmt.Errorf("object %s: %w: %v", id, objects.ErrCorrupt, err)
	}
	if k != objects.KindSnapshot {
		return fmt.Errorf("object %s is a %s: %w", id, k, ErrNotSnapshot)
	}
	return nil
}

// validatePushName checks a ref name that crosses the wire: a valid full
// ref name below refs/.
func validatePushName(name string) error {
	if err := refs.ValidateName(name); err != nil {
		return err
	}
	if !strings.HasPrefix(name, "refs/") {
		return fmt.Errorf("%w %q: only refs below refs/ can be sent", refs.ErrInvalidName, name)
	}
	return nil
}
