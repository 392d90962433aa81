package scrapbook

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// shared takes the shared lock without waiting.
func shared(dir string) (func(), error) { return LockShared(dir, 0) }

func TestLock(t *testing.T) {
	type step struct {
		take    func(string) (func(), error)
		busy    bool
		release bool // release every lock held so far before this step
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"writers share", []step{{take: shared}, {take: shared}}},
		{"gc waits for writers", []step{{take: shared}, {take: LockExclusive, busy: true}}},
		{"writers wait for gc", []step{{take: LockExclusive}, {take: shared, busy: true}}},
		{"one gc at a time", []step{{take: LockExclusive}, {take: LockExclusive, busy: true}}},
		{"release lets gc in", []step{{take: shared}, {take: LockExclusive, release: true}}},
		{"release lets writers in", []step{{take: LockExclusive}, {take: shared, release: true}, {take: shared}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			var held []func()
			defer func() {
				for _, r := range held {
					r()
				}
			}()
			for i, s := range tt.steps {
				if s.release {
					for _, r := range held {
						r()
					}
					held = nil
				}
				r, err := s.take(dir)
				if s.busy {
					if !errors.Is(err, ErrBusy) {
						t.Fatalf("step %d: err = %v, want ErrBusy", i, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				held = append(held, r)
			}
		})
	}
}

// A writer waits for a gc that ends within its wait, and gives up on one
// that does not.
func TestSharedWaits(t *testing.T) {
	dir := t.TempDir()
	gc, err := LockExclusive(dir)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(200 * time.Millisecond)
		gc()
	}()
	start := time.Now()
	r, err := LockShared(dir, 5*time.Second)
	if err != nil {
		t.Fatalf("a writer did not get the lock after gc ended: %v", err)
	}
	r()
	if waited := time.Since(start); waited < 150*time.Millisecond {
		t.Errorf("the writer did not wait for gc (%v)", waited)
	}

	release, err := LockExclusive(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if _, err := LockShared(dir, 100*time.Millisecond); !errors.Is(err, ErrBusy) {
		t.Errorf("a writer whose wait ran out: %v", err)
	}
}

// The lock file of another user, which this one may not write, still
// locks: flock needs only a descriptor.
func TestLockReadOnlyFile(t *testing.T) {
	dir := t.TempDir()
	first, err := LockExclusive(dir) // creates the file
	if err != nil {
		t.Fatal(err)
	}
	first()
	if err := os.Chmod(filepath.Join(dir, LockFile), 0o444); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		t.Log("as root, a 0444 file is still writable: this checks only that locking works")
	}
	release, err := LockExclusive(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if _, err := LockShared(dir, 0); !errors.Is(err, ErrBusy) {
		t.Errorf("shared lock beside an exclusive one on a read-only file: %v", err)
	}
}
