package refs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/sbuml/sbuml/objects"
	"golang.org/x/sys/unix"
)

// A lock left by a killed writer (no flock on it, older than
// staleLockAge) is broken; a lock a live process holds is not, however old.
func TestStaleLockIsBroken(t *testing.T) {
	dir := t.TempDir()
	s := New(osfs.New(dir))
	id := objects.Sum([]byte("x"))
	lock := filepath.Join(dir, "refs", "heads", "main.lock")
	os.MkdirAll(filepath.Dir(lock), 0o755)
	old := time.Now().Add(-time.Minute)

	// Held by a live writer: refused, and left alone.
	if err := os.WriteFile(lock, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(lock, old, old)
	held, _ := os.Open(lock)
	if err := unix.Flock(int(held.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if err := s.Update("refs/heads/main", objects.Zero, id, "t"); !errors.Is(err, ErrConflict) {
		t.Fatalf("update over a held lock: %v", err)
	}
	if _, err := os.Stat(lock); err != nil {
		t.Fatal("held lock was removed")
	}
	held.Close() // the holder dies

	// Fresh and unheld: a writer may just have created it; refused.
	os.Chtimes(lock, time.Now(), time.Now())
	if err := s.Update("refs/heads/main", objects.Zero, id, "t"); !errors.Is(err, ErrConflict) {
		t.Fatalf("update over a fresh lock: %v", err)
	}
	// Old and unheld: left by a killed writer; broken.
	os.Chtimes(lock, old, old)
	if err := s.Update("refs/heads/main", objects.Zero, id, "t"); err != nil {
		t.Fatalf("update over a stale lock: %v", err)
	}
	if got, err := s.Get("refs/heads/main"); err != nil || got != id {
		t.Fatalf("Get = %v, %v", got, err)
	}
	if _, err := os.Stat(lock); !os.IsNotExist(err) {
		t.Fatal("lock file left behind")
	}
}
