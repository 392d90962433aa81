// Package atomicfile replaces files whole: a reader sees the old content
// or the new, never a mix, and after a crash or a power loss the file
// holds one of them. Every small file sbuml rewrites in place (a
// scrapbook's config and remotes, a machine's config and head, a
// published directory's ref list) goes through it.
package atomicfile

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// WriteFile replaces the file name with data, with permissions perm.
func WriteFile(name string, data []byte, perm fs.FileMode) error {
	return Write(name, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// Write replaces the file name with what fill writes, with permissions
// perm. fill writes into a temporary file beside name (a unique name
// starting with a dot, so concurrent writers do not meet), which is
// synced and renamed into place; then the directory is synced, so that
// the rename itself survives a power loss. On failure the temporary file
// is removed and name is left as it was.
func Write(name string, perm fs.FileMode, fill func(io.Writer) error) (err error) {
	dir := filepath.Dir(name)
	f, err := os.CreateTemp(dir, "."+filepath.Base(name)+"-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := fill(f); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), name); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes the entries of dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
