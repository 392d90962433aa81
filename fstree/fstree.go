// Package fstree stores directory trees as tree objects and writes them
// back: regular files become streams, directories trees, symbolic links
// chunks holding their targets.
package fstree

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/stream"
)

// Import stores the directory dir through saver and returns the ID and
// logical size of its tree. Files are saved several at a time; each tree
// is stored after everything it names, keeping the closure invariant.
// Files other than regular files, directories and symbolic links are
// refused.
func Import(ctx context.Context, saver *stream.Saver, dir string, p stream.Params) (objects.ID, uint64, error) {
	return ImportWith(ctx, saver, dir, func(string) stream.Params { return p })
}

// ImportWith is Import with the parameters of each file chosen by
// paramsFor from its path relative to dir (slash-separated).
func ImportWith(ctx context.Context, saver *stream.Saver, dir string, paramsFor func(rel string) stream.Params) (objects.ID, uint64, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return objects.Zero, 0, fmt.Errorf("import %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return objects.Zero, 0, fmt.Errorf("import %s: not a directory", dir)
	}
	im := &importer{saver: saver, root: dir, params: paramsFor, sem: make(chan struct{}, 4)}
	return im.dir(ctx, dir)
}

type importer struct {
	saver  *stream.Saver
	root   string
	params func(rel string) stream.Params
	sem    chan struct{} // bounds the files being read at once
}

func (im *importer) dir(ctx context.Context, dir string) (objects.ID, uint64, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return objects.Zero, 0, fmt.Errorf("import: %w", err)
	}
	t := &objects.Tree{Entries: make([]objects.TreeEntry, len(des))}
	errs := make([]error, len(des))
	var wg sync.WaitGroup
	// fail returns err once the files being saved are done: their
	// goroutines use the saver, which the caller closes when this returns.
	fail := func(err error) (objects.ID, uint64, error) {
		wg.Wait()
		return objects.Zero, 0, err
	}
	for i, de := range des {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		name := de.Name()
		path := filepath.Join(dir, name)
		if err := objects.ValidEntryName(name); err != nil {
			return fail(fmt.Errorf("import %s: %w", path, err))
		}
		fi, err := de.Info()
		if err != nil {
			return fail(fmt.Errorf("import: %w", err))
		}
		e := &t.Entries[i]
		*e = objects.TreeEntry{Name: name, Mode: uint32(fi.Mode().Perm())}
		if fi.Mode()&fs.ModeSetuid != 0 {
			e.Mode |= 04000
		}
		if fi.Mode()&fs.ModeSetgid != 0 {
			e.Mode |= 02000
		}
		if fi.Mode()&fs.ModeSticky != 0 {
			e.Mode |= 01000
		}
		switch {
		case fi.Mode().IsRegular():
			e.Kind = objects.EntryFile
			im.sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-im.sem }()
				e.ID, e.Size, errs[i] = im.file(ctx, path)
			}()
		case fi.IsDir():
			e.Kind = objects.EntryDir
			e.ID, e.Size, err = im.dir(ctx, path)
		case fi.Mode()&fs.ModeSymlink != 0:
			e.Kind = objects.EntrySymlink
			var target string
			if target, err = os.Readlink(path); err != nil {
				err = fmt.Errorf("import: %w", err)
				break
			}
			e.Size = uint64(len(target))
			e.ID, err = im.saver.SaveObject(ctx, objects.EncodeChunk([]byte(target)))
		default:
			err = fmt.Errorf("import %s: unsupported file type (%s)", path, fi.Mode().Type())
		}
		if err != nil {
			return fail(err)
		}
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return objects.Zero, 0, err
	}
	t.Sort()
	id, err := im.saver.SaveObject(ctx, t.Encode())
	if err != nil {
		return objects.Zero, 0, fmt.Errorf("import %s: %w", dir, err)
	}
	return id, t.Size(), nil
}

func (im *importer) file(ctx context.Context, path string) (objects.ID, uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return objects.Zero, 0, fmt.Errorf("import: %w", err)
	}
	defer f.Close()
	p := stream.Files
	if rel, err := filepath.Rel(im.root, path); err == nil {
		p = im.params(filepath.ToSlash(rel))
	}
	id, st, err := im.saver.SaveStream(ctx, f, p)
	if err != nil {
		return objects.Zero, 0, fmt.Errorf("import %s: %w", path, err)
	}
	return id, st.Length, nil
}

// ExportOptions tune Export.
type ExportOptions struct {
	// KeepSetuid gives files the setuid and setgid bits they were stored
	// with. Without it they are left out: a snapshot may come from
	// anywhere, and a setuid file written by root runs as root.
	KeepSetuid bool
	// OnFile, if set, is called with the size of each regular file once
	// it is written, for progress reports.
	OnFile func(size uint64)
}

// Export writes tree id into dir, which must not exist or be empty. Files
// are written byte for byte with their holes left as holes, and get their
// stored permission bits (but setuid and setgid only if asked). If it
// fails, or ctx is cancelled, what it wrote is removed again, and dir too
// if it made it.
func Export(ctx context.Context, store objects.Store, id objects.ID, dir string, opts ExportOptions) (err error) {
	des, rerr := os.ReadDir(dir)
	if rerr == nil && len(des) > 0 {
		return fmt.Errorf("export: %s is not empty", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer func() {
		if err != nil {
			removeExported(dir, rerr != nil)
		}
	}()
	return exportDir(ctx, store, id, dir, opts)
}

// removeExported removes what a failed export wrote into dir, which was
// empty, and dir itself if made is set.
func removeExported(dir string, made bool) {
	if made {
		os.RemoveAll(dir)
		return
	}
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		os.RemoveAll(filepath.Join(dir, de.Name()))
	}
}

func exportDir(ctx context.Context, store objects.Store, id objects.ID, dir string, opts ExportOptions) error {
	t, err := objects.LoadTree(ctx, store, id)
	if err != nil {
		return fmt.Errorf("export %s: %w", dir, err)
	}
	for _, e := range t.Entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		path := filepath.Join(dir, e.Name)
		switch e.Kind {
		case objects.EntryDir:
			if err := os.Mkdir(path, 0o700); err != nil {
				return fmt.Errorf("export: %w", err)
			}
			if err := exportDir(ctx, store, e.ID, path, opts); err != nil {
				return err
			}
		case objects.EntryFile:
			if err := exportFile(ctx, store, e.ID, path); err != nil {
				return err
			}
			if opts.OnFile != nil {
				opts.OnFile(e.Size)
			}
		case objects.EntrySymlink:
			target, err := objects.LoadChunk(ctx, store, e.ID)
			if err != nil {
				return fmt.Errorf("export %s: %w", path, err)
			}
			if err := os.Symlink(string(target), path); err != nil {
				return fmt.Errorf("export: %w", err)
			}
			continue
		}
		mode := e.Mode
		if !opts.KeepSetuid {
			mode &^= 06000
		}
		if err := os.Chmod(path, fileMode(mode)); err != nil {
			return fmt.Errorf("export: %w", err)
		}
	}
	return nil
}

func exportFile(ctx context.Context, store objects.Store, id objects.ID, path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	err = stream.Extract(ctx, store, id, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("export %s: %w", path, err)
	}
	return nil
}

func fileMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	if m&04000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&02000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&01000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}
