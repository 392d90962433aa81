package refs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/sbuml/sbuml/objects"
	"golang.org/x/sys/unix"
)

// A lock file that no process holds an flock on was left by a killed
// writer, however new it is: the next update removes it at once. A lock a
// live process holds is not touched, however old, and the update says so
// without claiming that the ref moved.
func TestStaleLockIsBroken(t *testing.T) {
	defer func(w time.Duration) { LockWait = w }(LockWait)
	LockWait = 50 * time.Millisecond
	dir := t.TempDir()
	s := New(osfs.New(dir))
	id := objects.Sum([]byte("x"))
	lock := filepath.Join(dir, "refs", "heads", "main.lock")
	os.MkdirAll(filepath.Dir(lock), 0o755)

	// Held by a live writer: refused, and left alone.
	if err := os.WriteFile(lock, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Minute)
	os.Chtimes(lock, old, old)
	held, _ := os.Open(lock)
	if err := unix.Flock(int(held.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	err := s.Update("refs/heads/main", objects.Zero, id, "t")
	if !errors.Is(err, ErrConflict) || !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), lock) {
		t.Fatalf("update over a held lock: %v; want ErrLocked naming %s", err, lock)
	}
	if _, err := os.Stat(lock); err != nil {
		t.Fatal("held lock was removed")
	}
	held.Close() // the holder dies

	// Unheld, and just made: left by a writer killed a moment ago; broken
	// at once.
	os.Chtimes(lock, time.Now(), time.Now())
	start := time.Now()
	if err := s.Update("refs/heads/main", objects.Zero, id, "t"); err != nil {
		t.Fatalf("update over a stale lock: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("update over a stale lock took %v", took)
	}
	if got, err := s.Get("refs/heads/main"); err != nil || got != id {
		t.Fatalf("Get = %v, %v", got, err)
	}
	if _, err := os.Stat(lock); !os.IsNotExist(err) {
		t.Fatal("lock file left behind")
	}
}
