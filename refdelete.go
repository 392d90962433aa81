package sbuml

import (
	"fmt"
	"strings"

	"github.com/sbuml/sbuml/objects"
)

// DeleteRef deletes a branch or tag, given by its full name (refs/heads/…
// or refs/tags/…), and returns the snapshot it named. The snapshots stay
// in the scrapbook until gc; why goes into the ref's reflog.
func (s *Scrapbook) DeleteRef(name, why string) (objects.ID, error) {
	if !strings.HasPrefix(name, "refs/heads/") && !strings.HasPrefix(name, "refs/tags/") {
		return objects.Zero, fmt.Errorf("delete %s: only branches (refs/heads/) and tags (refs/tags/) can be deleted", name)
	}
	old, err := s.Refs.Get(name)
	if err != nil {
		return objects.Zero, err
	}
	if err := s.Refs.Update(name, old, objects.Zero, why); err != nil {
		return objects.Zero, err
	}
	return old, nil
}
