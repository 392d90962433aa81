package scrapbook

// The gc lock keeps garbage collection and writers of a scrapbook apart.
// A writer looks in the store, finds an object already there and names it
// in a new tree; if gc removed that object in between, the scrapbook would
// hold a tree whose children are missing. So every process that writes
// objects or moves refs holds the scrapbook's gc lock shared while it
// does, and gc takes it exclusively, refusing to run while anyone writes.
//
// The lock is flock(2) on the file gc.lock in the scrapbook directory: it
// is released by the kernel when a process dies, so a killed writer never
// leaves the scrapbook locked.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// LockWait is how long writers wait for a gc or a merge of packs to end
// before they give up (a variable for tests).
var LockWait = 10 * time.Second

// ErrBusy is returned when the lock is held in a way that excludes the
// caller.
var ErrBusy = errors.New("scrapbook busy")

// LockShared takes the gc lock of the scrapbook in dir for writing
// objects and refs. While gc (or a merge of packs) runs, it waits for at most wait,
// then returns ErrBusy. Where the lock file can be neither created nor
// opened (a scrapbook the caller may not write), nothing can be written
// either, and Shared returns a no-op release.
func LockShared(dir string, wait time.Duration) (release func(), err error) {
	deadline := time.Now().Add(wait)
	for {
		release, err = take(dir, unix.LOCK_SH, "sbuml gc, or a merge of packs after a write, is running on the scrapbook; try again when it is done")
		if !errors.Is(err, ErrBusy) || !time.Now().Before(deadline) {
			return release, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// LockExclusive takes the gc lock of the scrapbook in dir for gc. It does not
// wait: while any other process writes, it returns ErrBusy.
func LockExclusive(dir string) (release func(), err error) {
	return take(dir, unix.LOCK_EX, "another sbuml process is using the scrapbook (an import, commit, checkout, pull, push or sbuml serve); try again when it ends")
}

func take(dir string, how int, busy string) (func(), error) {
	name := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil && (errors.Is(err, os.ErrPermission) || errors.Is(err, unix.EROFS)) {
		// flock needs no write access: a lock file of another user's
		// still locks.
		if f, err = os.Open(name); err != nil && how == unix.LOCK_SH {
			return func() {}, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	for {
		err = unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		if err == unix.EWOULDBLOCK {
			return nil, fmt.Errorf("%w: %s", ErrBusy, busy)
		}
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	return func() { f.Close() }, nil // closing the file drops the lock
}
