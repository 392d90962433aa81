package image

import (
	"embed"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sbuml/sbuml/image/cpio"
)

// files holds the static parts of the image: the initramfs's /init and
// /etc, and the disk's initial contents.
//
//go:embed files
var files embed.FS

// epoch is the modification time of every file in the image, so that the
// same packages always build the same bytes (2024-01-01 00:00:00 UTC).
const epoch = 1704067200

// tree collects the entries of a file system image by path, so they can be
// written in a fixed order whatever order they were added in.
type tree struct {
	entries map[string]treeEntry
}

type treeEntry struct {
	hdr  cpio.Header
	data []byte
}

func newTree() *tree {
	return &tree{entries: make(map[string]treeEntry)}
}

// add records an entry and any missing parent directories. data is a
// regular file's contents or a symlink's target.
func (t *tree) add(name string, mode fs.FileMode, data []byte) {
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	if parent := path.Dir(name); parent != "." {
		if _, ok := t.entries[parent]; !ok {
			t.add(parent, fs.ModeDir|0o755, nil)
		}
	}
	hdr := cpio.Header{Name: name, Mode: mode, ModTime: epoch}
	switch mode.Type() {
	case 0:
		hdr.Size = int64(len(data))
	case fs.ModeSymlink:
		hdr.Linkname = string(data)
		data = nil
	}
	t.entries[name] = treeEntry{hdr: hdr, data: data}
}

// addDevice records a device node.
func (t *tree) addDevice(name string, mode fs.FileMode, major, minor int) {
	t.add(name, mode, nil)
	e := t.entries[name]
	e.hdr.Devmajor, e.hdr.Devminor = major, minor
	t.entries[name] = e
}

// writeCpio writes the tree as a newc archive, entries sorted by path so
// that every directory precedes its contents.
func (t *tree) writeCpio(w io.Writer) error {
	cw := cpio.NewWriter(w)
	for _, name := range t.names() {
		e := t.entries[name]
		if err := cw.WriteHeader(&e.hdr); err != nil {
			return err
		}
		if _, err := cw.Write(e.data); err != nil {
			return err
		}
	}
	return cw.Close()
}

// addEmbedded adds the files under dir of the embedded files, with mode
// 0755 for those listed in executables and 0644 for the rest.
func (t *tree) addEmbedded(dir string, executables ...string) error {
	return fs.WalkDir(files, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(p, dir+"/")
		mode := fs.FileMode(0o644)
		if slices.Contains(executables, name) {
			mode = 0o755
		}
		t.add(name, mode, data)
		return nil
	})
}

// names returns the paths of all entries of the tree, sorted, so that
// every directory comes before its contents.
func (t *tree) names() []string {
	names := make([]string, 0, len(t.entries))
	for name := range t.entries {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// writeDir materializes the tree's directories, regular files and symlinks
// under dir.
func (t *tree) writeDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, name := range t.names() {
		e := t.entries[name]
		p := filepath.Join(dir, filepath.FromSlash(name))
		var err error
		switch e.hdr.Mode.Type() {
		case fs.ModeDir:
			if err = os.MkdirAll(p, 0o755); err == nil {
				err = os.Chmod(p, e.hdr.Mode)
			}
		case 0:
			if err = os.WriteFile(p, e.data, 0o644); err == nil {
				err = os.Chmod(p, e.hdr.Mode)
			}
		case fs.ModeSymlink:
			err = os.Symlink(e.hdr.Linkname, p)
		default:
			err = fmt.Errorf("%s: %v entries are not supported on the disk", name, e.hdr.Mode.Type())
		}
		if err != nil {
			return err
		}
	}
	return nil
}
