package sbuml_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/refs"
)

// TestDeleteRef deletes branches and tags, and refuses other refs and
// refs that do not exist, leaving them as they were.
func TestDeleteRef(t *testing.T) {
	s := newScrapbook(t)
	dir := filepath.Join(t.TempDir(), "d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	id := mustImport(t, s, dir, sbuml.SnapshotOptions{Branch: "main"}).ID
	for _, name := range []string{"refs/heads/b", "refs/tags/t", "refs/images/i"} {
		if _, err := s.CreateRef(context.Background(), name, "main", sbuml.RefOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name    string
		wantErr error // nil: deleted
	}{
		{"refs/heads/b", nil},
		{"refs/tags/t", nil},
		{"refs/heads/missing", refs.ErrNotFound},
		{"refs/images/i", errAny},
	} {
		old, err := s.DeleteRef(tc.name, sbuml.RefOptions{Why: "test"})
		switch {
		case tc.wantErr == nil && err != nil:
			t.Errorf("DeleteRef(%s): %v", tc.name, err)
		case tc.wantErr == nil && old != id:
			t.Errorf("DeleteRef(%s) = %s, want %s", tc.name, old.Short(), id.Short())
		case tc.wantErr == errAny && err == nil, tc.wantErr != nil && tc.wantErr != errAny && !errors.Is(err, tc.wantErr):
			t.Errorf("DeleteRef(%s) = %v, want an error (%v)", tc.name, err, tc.wantErr)
		}
		_, gerr := s.Refs.Get(tc.name)
		if deleted := errors.Is(gerr, refs.ErrNotFound); deleted != (tc.wantErr != errAny) {
			t.Errorf("after DeleteRef(%s): Get says %v", tc.name, gerr)
		}
	}
}

// errAny stands for any error in a table.
var errAny = errors.New("any error")
