// Package tarball packs file trees into tar streams and unpacks them
// into a directory they cannot escape. The guest agent (sbuml-guest) and
// `sbuml cp` on the host both use it, so a copy behaves the same both
// ways: regular files, directories, symbolic and hard links, with their
// modes and modification times; sockets, devices and pipes are left out.
package tarball

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Write writes the file or directory p, and all a directory holds, to tw
// with entry names under top (top, top/a, top/a/b, ...). With top "" a
// directory's contents are written without the directory itself. It
// returns how many sockets, devices and pipes it left out.
func Write(tw *tar.Writer, p, top string) (skipped int, err error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return 0, unwrapPath(err)
	}
	if !fi.IsDir() {
		if top == "" {
			top = filepath.Base(p)
		}
		ok, err := addEntry(tw, p, top, fi)
		if !ok {
			skipped++
		}
		return skipped, err
	}
	err = filepath.WalkDir(p, func(file string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(p, file)
		name := path.Join(top, filepath.ToSlash(rel))
		if name == "." {
			return nil // the top of a contents copy
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		ok, err := addEntry(tw, file, name, fi)
		if !ok {
			skipped++
		}
		return err
	})
	return skipped, err
}

// addEntry writes one file, directory or symbolic link; it reports false
// for other kinds of files, which it leaves out.
func addEntry(tw *tar.Writer, file, name string, fi fs.FileInfo) (bool, error) {
	link := ""
	switch {
	case fi.Mode().IsRegular(), fi.IsDir():
	case fi.Mode()&fs.ModeSymlink != 0:
		var err error
		if link, err = os.Readlink(file); err != nil {
			return true, err
		}
	default:
		return false, nil
	}
	h, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return true, err
	}
	h.Name, h.Uname, h.Gname = name, "", ""
	if fi.IsDir() {
		h.Name += "/"
	}
	if err := tw.WriteHeader(h); err != nil {
		return true, err
	}
	if !fi.Mode().IsRegular() {
		return true, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return true, err
	}
	defer f.Close()
	// A file that shrank while being read is padded: the header promised
	// its size. One that grew is cut at that size.
	n, err := io.CopyN(tw, f, h.Size)
	if err == io.EOF {
		_, err = io.CopyN(tw, zeros{}, h.Size-n)
	}
	return true, err
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// Rename maps an entry's cleaned name to the name it gets under the
// directory, or reports false to refuse the stream (an entry the sender
// had no business sending). "" skips the entry.
type Rename func(name string) (string, bool)

// Extract writes the entries of tr under dir, which must exist, renamed
// by rename (nil: as they are). No entry lands outside dir: names are
// checked, and the directory is opened as an os.Root, which refuses
// paths that leave it through ".." or symbolic links alike; a file or
// link replaces what is in its way rather than writing through it.
func Extract(tr *tar.Reader, dir string, rename Rename) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return unwrapPath(err)
	}
	defer root.Close()
	x := &extractor{root: root, rename: rename}
	return x.extract(tr)
}

// extractor writes tar entries under a root directory.
type extractor struct {
	root   *os.Root
	rename Rename
	dirs   []dirTime // directory times, set last: writing in a directory changes them
}

type dirTime struct {
	name  string
	mtime time.Time
}

func (x *extractor) extract(tr *tar.Reader) error {
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read the archive: %w", err)
		}
		name, err := x.name(h.Name)
		if err != nil {
			return err
		}
		if name == "." || name == "" {
			continue // the directory itself ("./") keeps its own mode and times
		}
		if err := x.entry(h, name, tr); err != nil {
			return fmt.Errorf("%s: %w", h.Name, unwrapPath(err))
		}
	}
	for _, dt := range slices.Backward(x.dirs) {
		if err := x.root.Chtimes(dt.name, dt.mtime, dt.mtime); err != nil {
			return fmt.Errorf("%s: %w", dt.name, unwrapPath(err))
		}
	}
	return nil
}

// name cleans and renames an entry's name.
func (x *extractor) name(entry string) (string, error) {
	name, err := entryName(entry)
	if err != nil || x.rename == nil {
		return name, err
	}
	renamed, ok := x.rename(name)
	if !ok {
		return "", fmt.Errorf("entry %q is not what was asked for; refused", entry)
	}
	if renamed == "" {
		return "", nil
	}
	return entryName(renamed)
}

// entryName cleans an entry's name and refuses names that leave the
// directory.
func entryName(name string) (string, error) {
	clean := path.Clean(strings.TrimPrefix(name, "./"))
	if name == "" || path.IsAbs(name) || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("entry %q would land outside the directory; refused", name)
	}
	return clean, nil
}

// entry creates one file, directory or link.
func (x *extractor) entry(h *tar.Header, name string, r io.Reader) error {
	mode := h.FileInfo().Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	if dir := path.Dir(name); dir != "." {
		if err := x.root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	switch h.Typeflag {
	case tar.TypeDir:
		if err := x.root.Mkdir(name, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		x.dirs = append(x.dirs, dirTime{name, h.ModTime})
		return x.root.Chmod(name, mode)
	case tar.TypeReg, tar.TypeRegA:
		return x.file(name, mode, h.ModTime, r)
	case tar.TypeSymlink:
		if err := x.replace(name); err != nil {
			return err
		}
		if err := x.root.Symlink(h.Linkname, name); err != nil {
			return err
		}
		return x.lchtimes(name, h.ModTime)
	case tar.TypeLink:
		target, err := x.name(h.Linkname)
		if err != nil {
			return err
		}
		if err := x.replace(name); err != nil {
			return err
		}
		return x.root.Link(target, name)
	}
	return fmt.Errorf("entry type %q is not supported: only regular files, directories and links", h.Typeflag)
}

// file writes a regular file.
func (x *extractor) file(name string, mode fs.FileMode, mtime time.Time, r io.Reader) error {
	if err := x.replace(name); err != nil {
		return err
	}
	f, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return x.root.Chtimes(name, mtime, mtime)
}

// replace removes what is at name unless it is a directory, so that a
// file or link takes its place instead of being written through.
func (x *extractor) replace(name string) error {
	fi, err := x.root.Lstat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.IsDir():
		return fmt.Errorf("a directory is in the way")
	}
	return x.root.Remove(name)
}

// lchtimes sets a symbolic link's own times, through its directory
// opened within the root.
func (x *extractor) lchtimes(name string, mtime time.Time) error {
	dir, err := x.root.Open(path.Dir(name))
	if err != nil {
		return err
	}
	defer dir.Close()
	rc, err := dir.SyscallConn()
	if err != nil {
		return err
	}
	ts := unix.NsecToTimespec(mtime.UnixNano())
	var uerr error
	if err := rc.Control(func(fd uintptr) {
		uerr = unix.UtimesNanoAt(int(fd), path.Base(name), []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
	}); err != nil {
		return err
	}
	return uerr
}

// unwrapPath drops the operation and path of an *os.PathError, which
// name the root's internals rather than the entry.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
