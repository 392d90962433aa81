package guest

import (
	"archive/tar"
	"bufio"
	"encoding/json"
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

	"github.com/sbuml/sbuml/agent/internal/mux"
	"github.com/sbuml/sbuml/agent/internal/proto"
)

// copyIn extracts the tar stream of a copyin session into its directory.
func (d *Daemon) copyIn(s *mux.Session) {
	var a proto.CopyInArgs
	if err := json.Unmarshal(s.Args(), &a); err != nil || a.Dir == "" {
		fail(s, "copy in: malformed request %s", s.Args())
		return
	}
	root, err := os.OpenRoot(a.Dir)
	if err != nil {
		fail(s, "copy into %s: %v", a.Dir, unwrapPath(err))
		return
	}
	defer root.Close()
	x := &extractor{root: root, dir: a.Dir}
	r := s.Reader(mux.StreamIn)
	if err := x.extract(tar.NewReader(r)); err != nil {
		if s.Err() == nil {
			fail(s, "copy into %s: %v", a.Dir, err)
		}
		return
	}
	io.Copy(io.Discard, r) // what follows the archive's end, up to the stream's
	s.Exit(proto.ExitStatus{})
}

// extractor writes tar entries under a root directory, never outside it:
// names are checked, and os.Root refuses paths that leave the directory,
// through ".." or symbolic links alike.
type extractor struct {
	root *os.Root
	dir  string
	dirs []dirTime // directory times, set last: writing in a directory changes them
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
		name, err := entryName(h.Name)
		if err != nil {
			return err
		}
		if name == "." {
			continue // the directory itself ("./"): it keeps its own mode and times
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
		return x.root.Chtimes(name, h.ModTime, h.ModTime)
	case tar.TypeSymlink:
		if err := x.replace(name); err != nil {
			return err
		}
		if err := x.root.Symlink(h.Linkname, name); err != nil {
			return err
		}
		return x.lchtimes(name, h.ModTime)
	case tar.TypeLink:
		target, err := entryName(h.Linkname)
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
	ts := unix.NsecToTimespec(mtime.UnixNano())
	return control(dir, func(fd int) error {
		return unix.UtimesNanoAt(fd, path.Base(name), []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
	})
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

// copyOut writes a tar stream of the session's path.
func (d *Daemon) copyOut(s *mux.Session) {
	var a proto.CopyOutArgs
	if err := json.Unmarshal(s.Args(), &a); err != nil || a.Path == "" {
		fail(s, "copy out: malformed request %s", s.Args())
		return
	}
	out := s.Writer(mux.StreamOut)
	bw := bufio.NewWriterSize(out, 64<<10)
	tw := tar.NewWriter(bw)
	skipped, err := archive(tw, a.Path)
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	if s.Err() != nil {
		return // the host went away
	}
	if err != nil {
		fail(s, "copy %s out: %v", a.Path, err)
		return
	}
	if skipped > 0 {
		d.logf("copy %s out: left out %d sockets, devices or pipes", a.Path, skipped)
	}
	out.Close()
	s.Exit(proto.ExitStatus{})
}

// archive writes p, and all it holds if it is a directory, to tw under
// p's base name. It returns how many special files it left out.
func archive(tw *tar.Writer, p string) (skipped int, err error) {
	base := filepath.Base(p)
	if base == "/" {
		base = "."
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return 0, unwrapPath(err)
	}
	if !fi.IsDir() {
		ok, err := addEntry(tw, p, base, fi)
		if !ok {
			skipped++
		}
		return skipped, err
	}
	err = filepath.WalkDir(p, func(file string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(p, file)
		ok, err := addEntry(tw, file, path.Join(base, filepath.ToSlash(rel)), fi)
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
	h.Name = name
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
