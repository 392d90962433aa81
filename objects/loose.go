package objects

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sync"

	"github.com/go-git/go-billy/v5"
	"golang.org/x/sys/unix"
)

// Loose is a Store that keeps each object in its own file, named by its
// hex ID under a two-digit fan-out directory: objects/ab/cdef…. It works
// on any billy.Filesystem: a directory (osfs) or memory (memfs) in tests.
type Loose struct {
	fs  billy.Filesystem
	dir string // path of the objects directory inside fs
	// root is the directory on the host for fsync, or "" when fs is not
	// backed by a host directory.
	root string
}

// NewLoose returns a Loose store keeping objects under dir in fs. hostDir,
// if not empty, is the same directory on the host file system; it lets
// Sync make writes durable.
func NewLoose(fs billy.Filesystem, dir, hostDir string) *Loose {
	if hostDir == "" {
		// Not a host directory: go-billy's memfs keeps directories in
		// maps without a lock, and Store promises concurrent use.
		fs = &lockedFS{Filesystem: fs}
	}
	return &Loose{fs: fs, dir: dir, root: hostDir}
}

// The abilities a loose store has beyond Store.
var (
	_ Store        = (*Loose)(nil)
	_ Deleter      = (*Loose)(nil)
	_ Locator      = (*Loose)(nil)
	_ PrefixFinder = (*Loose)(nil)
)

// lockedFS serializes the directory operations of a billy.Filesystem.
type lockedFS struct {
	billy.Filesystem
	mu sync.Mutex
}

func (l *lockedFS) Lstat(name string) (os.FileInfo, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.Filesystem.Lstat(name)
}

func (l *lockedFS) Stat(name string) (os.FileInfo, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.Filesystem.Stat(name)
}

func (l *lockedFS) Open(name string) (billy.File, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.Filesystem.Open(name)
}

func (l *lockedFS) OpenFile(name string, flag int, perm os.FileMode) (billy.File, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.Filesystem.OpenFile(name, flag, perm)
}

func (l *lockedFS) MkdirAll(name string, perm os.FileMode) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.Filesystem.MkdirAll(name, perm)
}

func (l *lockedFS) Rename(from, to string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.Filesystem.Rename(from, to)
}

func (l *lockedFS) Remove(name string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.Filesystem.Remove(name)
}

func (l *lockedFS) ReadDir(name string) ([]os.FileInfo, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.Filesystem.ReadDir(name)
}

func (l *Loose) name(id ID) string {
	h := id.String()
	return path.Join(l.dir, h[:2], h[2:])
}

// Locate returns the object's file path, for messages.
func (l *Loose) Locate(id ID) string {
	if l.root != "" {
		h := id.String()
		return path.Join(l.root, h[:2], h[2:])
	}
	return l.name(id)
}

// Has implements Store.
func (l *Loose) Has(_ context.Context, id ID) (bool, error) {
	_, err := l.fs.Lstat(l.name(id))
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, fmt.Errorf("stat object %s: %w", id, err)
}

// Get implements Store.
func (l *Loose) Get(_ context.Context, id ID) ([]byte, error) {
	f, err := l.fs.Open(l.name(id))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("object %s: %w", id, ErrNotFound)
		}
		return nil, fmt.Errorf("open object %s: %w", id, err)
	}
	defer f.Close()
	var b []byte
	if fi, err := l.fs.Lstat(l.name(id)); err == nil && fi.Size() <= MaxObjectSize+1024 {
		b = make([]byte, 0, fi.Size()+1)
	}
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := f.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read object %s (%s): %w", id, l.Locate(id), err)
		}
		if len(b) > MaxObjectSize+1024 {
			return nil, fmt.Errorf("object %s (%s): %w: file too large", id, l.Locate(id), ErrCorrupt)
		}
	}
	return b, nil
}

// Put implements Store: the object is written to a temporary file in its
// fan-out directory and renamed into place, so readers never see part of
// it and concurrent writers of the same object both succeed.
func (l *Loose) Put(ctx context.Context, id ID, stored []byte) error {
	if ok, err := l.Has(ctx, id); err == nil && ok {
		return nil
	}
	final := l.name(id)
	dir := path.Dir(final)
	tmp := path.Join(dir, ".tmp-"+randomSuffix())
	f, err := l.fs.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if errors.Is(err, fs.ErrNotExist) {
		if err = l.fs.MkdirAll(dir, 0o755); err == nil {
			f, err = l.fs.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
		}
	}
	if err != nil {
		return fmt.Errorf("write object %s: %w", id, err)
	}
	_, err = f.Write(stored)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = l.fs.Rename(tmp, final)
	}
	if err != nil {
		l.fs.Remove(tmp)
		return fmt.Errorf("write object %s (%s): %w", id, l.Locate(id), err)
	}
	return nil
}

// List implements Store. Leftover temporary files from killed writers are
// skipped.
func (l *Loose) List(ctx context.Context, fn func(ID, int64) error) error {
	fans, err := l.fs.ReadDir(l.dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("list objects: %w", err)
	}
	for _, fan := range fans {
		if !fan.IsDir() || len(fan.Name()) != 2 {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		files, err := l.fs.ReadDir(path.Join(l.dir, fan.Name()))
		if err != nil {
			return fmt.Errorf("list objects: %w", err)
		}
		for _, f := range files {
			if len(f.Name()) != 2*IDSize-2 || f.IsDir() {
				continue
			}
			id, err := ParseID(fan.Name() + f.Name())
			if err != nil {
				continue
			}
			if err := fn(id, f.Size()); err != nil {
				return err
			}
		}
	}
	return nil
}

// Delete implements Deleter.
func (l *Loose) Delete(_ context.Context, id ID) error {
	err := l.fs.Remove(l.name(id))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete object %s: %w", id, err)
	}
	return nil
}

// Sync implements Store: one syncfs(2) of the file system holding the
// store, rather than an fsync per object. A store that is not a host
// directory (memfs) has nothing to sync.
func (l *Loose) Sync(_ context.Context) error {
	if l.root == "" {
		return nil
	}
	f, err := os.Open(l.root)
	if err != nil {
		return fmt.Errorf("sync objects: %w", err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("sync objects %s: %w", l.root, err)
	}
	return nil
}

// Close implements Store. A loose store holds no file open between
// calls: there is nothing to release.
func (l *Loose) Close() error { return nil }

func randomSuffix() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// FindPrefix returns the IDs of present objects whose hex form starts
// with prefix (at least two hex digits).
func (l *Loose) FindPrefix(_ context.Context, prefix string) ([]ID, error) {
	if len(prefix) < 2 {
		return nil, fmt.Errorf("object prefix %q is too short", prefix)
	}
	files, err := l.fs.ReadDir(path.Join(l.dir, prefix[:2]))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("find objects %s…: %w", prefix, err)
	}
	var ids []ID
	for _, f := range files {
		name := prefix[:2] + f.Name()
		if len(name) == 2*IDSize && len(name) >= len(prefix) && name[:len(prefix)] == prefix {
			if id, err := ParseID(name); err == nil {
				ids = append(ids, id)
			}
		}
	}
	return ids, nil
}
