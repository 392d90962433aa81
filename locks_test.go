package sbuml_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/internal/lockfile"
	"github.com/sbuml/sbuml/refs"
)

// An import right after a writer was killed holding the branch's lock
// succeeds: nobody holds the lock file, so it is removed. An import onto
// a branch whose lock a live process holds fails before it stores
// anything, saying so, not that the branch moved.
func TestImportOverRefLocks(t *testing.T) {
	defer func(w time.Duration) { refs.LockWait = w }(refs.LockWait)
	refs.LockWait = 50 * time.Millisecond
	ctx := context.Background()
	s := newScrapbook(t)
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "f"), []byte("one"), 0o644)
	first := mustImport(t, s, src, sbuml.SnapshotOptions{})

	lock := filepath.Join(s.Dir, "refs", "heads", "main.lock")
	writeFile(t, lock, nil, 0o644) // as a killed writer leaves it
	writeFile(t, filepath.Join(src, "f"), []byte("two"), 0o644)
	second := mustImport(t, s, src, sbuml.SnapshotOptions{})
	if second.Parent != first.ID {
		t.Errorf("import over a stale lock: parent %s, want %s", second.Parent.Short(), first.ID.Short())
	}
	if _, err := os.Stat(lock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale lock still there: %v", err)
	}

	held, err := lockfile.Create(lock, 0o644, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	before := storeSizes(t, s.Objects)
	writeFile(t, filepath.Join(src, "f"), []byte("three"), 0o644)
	_, err = s.Import(ctx, src, sbuml.SnapshotOptions{})
	holder := fmt.Sprintf("held by process %d", os.Getpid())
	if !errors.Is(err, refs.ErrLocked) || !strings.Contains(err.Error(), holder) || strings.Contains(err.Error(), "moved") {
		t.Fatalf("import onto a branch locked by a live process: %v; want ErrLocked saying %q", err, holder)
	}
	if after := storeSizes(t, s.Objects); len(after) != len(before) {
		t.Errorf("the refused import stored %d objects", len(after)-len(before))
	}
	if tip, _ := s.Refs.Get("refs/heads/main"); tip != second.ID {
		t.Errorf("main moved to %s", tip.Short())
	}
}

// The other lock files of a scrapbook and of a published directory are
// taken over at once too when their writer was killed.
func TestStaleLocksOfOtherFiles(t *testing.T) {
	ctx := context.Background()
	s := newScrapbook(t)
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "f"), []byte("one"), 0o644)
	mustImport(t, s, src, sbuml.SnapshotOptions{})
	pub := filepath.Join(t.TempDir(), "pub")
	const url = "https://example.org/book/"
	if _, err := s.Publish(ctx, pub, url, sbuml.TransferOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{filepath.Join(s.Dir, "remotes.lock"), filepath.Join(pub, "refs.json.lock"), filepath.Join(pub, "packs.json.lock")} {
		writeFile(t, f, nil, 0o644) // as a killed writer leaves it
	}
	if err := s.AddRemote(sbuml.RemoteConfig{Name: "origin", URL: pub}); err != nil {
		t.Errorf("remote add over a stale remotes.lock: %v", err)
	}
	writeFile(t, filepath.Join(src, "f"), []byte("two"), 0o644)
	mustImport(t, s, src, sbuml.SnapshotOptions{})
	if _, err := s.Publish(ctx, pub, url, sbuml.TransferOptions{}); err != nil {
		t.Errorf("publish over stale locks: %v", err)
	}
}
