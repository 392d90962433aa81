package lockfile

import (
	"path/filepath"
	"testing"
	"time"
)

// TestExclusive: a second taker waits until the first releases the lock,
// and the lock file stays in place.
func TestExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "build.lock")
	release, err := Exclusive(path)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan func())
	go func() {
		r, err := Exclusive(path)
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	select {
	case <-got:
		t.Fatal("a second Exclusive took the lock while the first held it")
	case <-time.After(100 * time.Millisecond):
	}
	release()
	select {
	case r := <-got:
		r()
	case <-time.After(10 * time.Second):
		t.Fatal("the second Exclusive did not take the lock once it was released")
	}
	if _, err := Exclusive(filepath.Join(t.TempDir(), "missing", "x.lock")); err == nil {
		t.Error("Exclusive in a missing directory succeeded")
	}
}
