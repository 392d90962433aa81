// Package lockfile creates lock files that tell a live owner from a dead
// one. A scrapbook guards each change of a small file (a ref, the list of
// remotes, a published refs.json) with a lock file next to it, created
// only if it does not exist; the new content is written into the lock
// file, which is then renamed over the file it guards.
//
// A process killed while it held such a lock leaves the lock file behind.
// Here every lock file is flock(2)ed by its creator before it appears
// under its name: it is made as an unnamed file (O_TMPFILE), locked, and
// only then linked into place. The kernel drops the flock when its owner
// dies. So a lock file that no process holds an flock on was left by a
// killed process, whatever its age, and the next writer removes it and
// goes on at once.
package lockfile

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrHeld is returned by Create when a live process holds the lock.
var ErrHeld = errors.New("lock file is held by another process")

// A Lock is a lock file this process holds. Its owner writes the new
// content of the guarded file into File, then calls Rename, or Release to
// give up.
type Lock struct {
	path string
	f    *os.File
	done bool
}

// Create creates the lock file path and holds it. A lock file left there
// by a process that died is removed first. If a live process holds path,
// Create waits for it to let go for up to wait, then returns an error
// wrapping ErrHeld that names the file and, where the kernel tells, the
// holder's process ID. Missing parent directories are created.
func Create(path string, perm fs.FileMode, wait time.Duration) (*Lock, error) {
	deadline := time.Now().Add(wait)
	for try := 0; ; try++ {
		l, err := create(path, perm)
		if err == nil {
			return l, nil
		}
		if errors.Is(err, fs.ErrExist) {
			switch stale, err := breakStale(path); {
			case err != nil:
				return nil, err
			case stale:
				continue
			}
			if time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return nil, heldError(path)
		}
		// A concurrent writer may remove an empty parent directory
		// between MkdirAll and the link: try again, a few times.
		if errors.Is(err, fs.ErrNotExist) && try < 3 {
			continue
		}
		return nil, err
	}
}

// create makes path as a file this process holds an flock on from the
// moment it exists. It returns an error wrapping fs.ErrExist if path
// exists.
func create(path string, perm fs.FileMode) (*Lock, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, cleanup, err := unnamedFile(dir, perm)
	if err != nil {
		return nil, err
	}
	if err := flock(f, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		cleanup()
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	err = unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", f.Fd()), unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW)
	cleanup()
	if err != nil {
		f.Close()
		return nil, &fs.PathError{Op: "create lock file", Path: path, Err: err}
	}
	return &Lock{path: path, f: f}, nil
}

// unnamedFile returns a new file in dir that has no name yet, and a
// function that removes its temporary name, if it has one. Where the
// file system offers no O_TMPFILE, the file is created under a hidden
// temporary name, which the caller removes once the file is linked.
func unnamedFile(dir string, perm fs.FileMode) (*os.File, func(), error) {
	f, err := os.OpenFile(dir, unix.O_TMPFILE|os.O_RDWR, perm)
	if err == nil {
		return f, func() {}, nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EINVAL) {
		return nil, nil, err
	}
	f, err = os.CreateTemp(dir, ".lock-tmp-*")
	if err != nil {
		return nil, nil, err
	}
	if err := f.Chmod(perm); err != nil {
		os.Remove(f.Name())
		f.Close()
		return nil, nil, err
	}
	name := f.Name()
	return f, func() { os.Remove(name) }, nil
}

// flock applies how to f, retrying when a signal interrupts it.
func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			return err
		}
	}
}

// breakStale removes the lock file path if no live process holds it, and
// reports whether it did.
func breakStale(path string) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil // gone meanwhile: try again
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	if flock(f, unix.LOCK_EX|unix.LOCK_NB) != nil {
		return false, nil // a live process holds it
	}
	defer flock(f, unix.LOCK_UN)
	// Still the file this process locked? Another process may have
	// broken it and made a new one meanwhile.
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	if cur, err := os.Stat(path); err != nil || !os.SameFile(fi, cur) {
		return true, nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("remove stale lock file: %w", err)
	}
	return true, nil
}

// heldError describes the live lock on path.
func heldError(path string) error {
	if pid := Holder(path); pid > 0 {
		return fmt.Errorf("%w: %s is held by process %d", ErrHeld, path, pid)
	}
	return fmt.Errorf("%w: %s is held by a running process", ErrHeld, path)
}

// Path returns the lock file's name.
func (l *Lock) Path() string { return l.path }

// File is the open lock file, to write the guarded file's new content
// into.
func (l *Lock) File() *os.File { return l.f }

// Rename renames the lock file over target, which publishes its content
// atomically, and lets go of the lock.
func (l *Lock) Rename(target string) error {
	if l.done {
		return errors.New("lock file already released")
	}
	if err := os.Rename(l.path, target); err != nil {
		return err
	}
	l.done = true
	return l.f.Close()
}

// Release removes the lock file and lets go of it, unless Rename did. It
// may be called more than once.
func (l *Lock) Release() {
	if l.done {
		return
	}
	l.done = true
	// Remove while still holding the flock, so that nobody takes the
	// file for a stale one and removes a successor's.
	os.Remove(l.path)
	l.f.Close()
}

// Stale reports whether path is a lock file that no live process holds:
// one left by a process that was killed.
func Stale(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if flock(f, unix.LOCK_SH|unix.LOCK_NB) != nil {
		return false, nil
	}
	flock(f, unix.LOCK_UN)
	return true, nil
}

// Holder returns the ID of the process that holds an flock on path, as
// /proc/locks tells, or 0 if none is known.
func Holder(path string) int {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	f, err := os.Open("/proc/locks")
	if err != nil {
		return 0
	}
	defer f.Close()
	// Lines read: "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF", the
	// device's major and minor numbers in hex and the inode in decimal.
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 6 && fields[1] == "FLOCK" && fields[5] == want {
			if pid, err := strconv.Atoi(fields[4]); err == nil {
				return pid
			}
		}
	}
	return 0
}

// Exclusive takes an exclusive flock on path, a file that stays in place
// (created if missing), waiting for whichever process holds it, and
// returns the function that releases it. It guards work done once per
// host, such as building a fixture, against other processes doing it at
// the same time.
func Exclusive(path string) (release func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := flock(f, unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() {
		flock(f, unix.LOCK_UN)
		f.Close()
	}, nil
}
