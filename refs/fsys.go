package refs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/helper/chroot"
	"github.com/go-git/go-billy/v5/memfs"
	"github.com/go-git/go-billy/v5/osfs"
)

// syncFile flushes the file f, opened as name in fsys, to stable storage.
// It reports whether the file system offered a way to do so; memfs has
// nothing to flush.
//
// osfs.New(dir) with its default options wraps each *os.File in a
// chroot helper type that hides Sync, so for that file system the file is
// opened again by its real path and that descriptor is synced, which on
// Linux flushes the same inode.
func syncFile(fsys billy.Filesystem, f billy.File, name string) (bool, error) {
	if s, ok := f.(interface{ Sync() error }); ok {
		return true, s.Sync()
	}
	h, ok := fsys.(*chroot.ChrootHelper)
	if !ok || !wraps(h, func(b billy.Basic) bool { _, ok := b.(*osfs.ChrootOS); return ok }) {
		return false, nil
	}
	osf, err := os.OpenFile(filepath.Join(h.Root(), filepath.FromSlash(name)), os.O_RDONLY, 0)
	if err != nil {
		return true, err
	}
	err = osf.Sync()
	if cerr := osf.Close(); err == nil {
		err = cerr
	}
	return true, err
}

// isMemfs reports whether fsys is go-billy's memfs. Its Rename(from, to)
// also moves every file whose path merely starts with from, so renaming
// "refs/heads/main.lock" would clobber "refs/heads/main.locked"; the
// Store avoids Rename there.
func isMemfs(fsys billy.Basic) bool {
	return wraps(fsys, func(b billy.Basic) bool { _, ok := b.(*memfs.Memory); return ok })
}

// onHost reports whether the store's file system is the host's, rooted
// at a directory (osfs.New): then display names the real files.
func (s *Store) onHost() bool {
	r, ok := s.fs.(interface{ Root() string })
	return ok && r.Root() != "" && wraps(s.fs, func(b billy.Basic) bool {
		switch b.(type) {
		case *osfs.ChrootOS, *osfs.BoundOS:
			return true
		}
		return false
	})
}

// wraps reports whether match holds for fsys or for a file system it
// wraps, looking through wrappers such as chroot and polyfill.
func wraps(fsys billy.Basic, match func(billy.Basic) bool) bool {
	for depth := 0; depth < 8 && fsys != nil; depth++ {
		if match(fsys) {
			return true
		}
		u, ok := fsys.(interface{ Underlying() billy.Basic })
		if !ok {
			return false
		}
		fsys = u.Underlying()
	}
	return false
}

// fileError describes err from doing verb to the scrapbook file p, as part
// of op. It names the file itself unless err already does, as the
// *fs.PathError and *os.LinkError of the os file system do.
func (s *Store) fileError(op, verb, p string, err error) error {
	var pathErr *fs.PathError
	var linkErr *os.LinkError
	if errors.As(err, &pathErr) || errors.As(err, &linkErr) {
		return fmt.Errorf("%s: %w", op, err)
	}
	return fmt.Errorf("%s: %s %s: %w", op, verb, s.display(p), err)
}
