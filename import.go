package sbuml

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync/atomic"

	"github.com/sbuml/sbuml/fstree"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/stream"
)

// Import stores the directory dir as a new snapshot on a branch, whose
// previous tip becomes its parent. Everything already in the scrapbook is
// reused, so importing a changed copy of an earlier directory stores only
// what changed (SBUML's sbumlmakedelta, against every snapshot at once).
func (s *Scrapbook) Import(ctx context.Context, dir string, opts SnapshotOptions) (*Result, error) {
	ref, err := s.branchRef(opts.Branch)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	res, err := s.importTo(ctx, dir, ref, filesParams, opts)
	if err != nil && ctx.Err() != nil {
		// Interrupted: what was stored is whole, and worth keeping, so
		// that importing again stores only the rest.
		if serr := s.syncObjects(context.WithoutCancel(ctx)); serr != nil {
			return nil, fmt.Errorf("import %s: interrupted; %w", dir, serr)
		}
		return nil, fmt.Errorf("import %s: interrupted, no snapshot recorded (the data stored so far is kept: importing again stores only the rest)", dir)
	}
	return res, err
}

// ExportOptions tune ExportWith.
type ExportOptions struct {
	// KeepSetuid gives files the setuid and setgid bits they were stored
	// with (see fstree.ExportOptions).
	KeepSetuid bool
	// OnProgress, if set, is called about five times a second with the
	// bytes of the files written so far (file by file) of the snapshot's
	// logical size.
	OnProgress func(StoreProgress)
}

// treeBytes is the size of the regular files under dir, for progress
// bars: what an import of dir reads. What cannot be read counts 0.
func treeBytes(dir string) int64 {
	var total int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				total += fi.Size()
			}
		}
		return nil
	})
	return total
}

// Export writes the files of snapshot rev into dir, which must not exist
// or be empty: byte for byte, holes as holes (SBUML's sbumlexpanddelta),
// without setuid and setgid bits. If it fails or ctx is cancelled, it
// removes what it wrote.
func (s *Scrapbook) Export(ctx context.Context, rev, dir string) (objects.ID, error) {
	return s.ExportWith(ctx, rev, dir, ExportOptions{})
}

// ExportWith is Export with options.
func (s *Scrapbook) ExportWith(ctx context.Context, rev, dir string, opts ExportOptions) (objects.ID, error) {
	id, err := s.Resolve(ctx, rev)
	if err != nil {
		return objects.Zero, fmt.Errorf("export: %w", err)
	}
	sn, err := objects.LoadSnapshot(ctx, s.Objects, id)
	if err != nil {
		return objects.Zero, fmt.Errorf("export: %w", err)
	}
	var written atomic.Int64
	fopts := fstree.ExportOptions{KeepSetuid: opts.KeepSetuid, OnFile: func(size uint64) { written.Add(int64(size)) }}
	var total int64
	if opts.OnProgress != nil {
		if t, err := objects.LoadTree(ctx, s.Objects, sn.Tree); err == nil {
			total = int64(t.Size())
		}
	}
	now := func() StoreProgress {
		return StoreProgress{Stats: stream.Stats{LogicalBytes: written.Load()}, TotalBytes: total}
	}
	err = reportWhile(now, opts.OnProgress, func() error { return fstree.Export(ctx, s.Objects, sn.Tree, dir, fopts) })
	if err != nil {
		if ctx.Err() != nil {
			return objects.Zero, fmt.Errorf("export %s: interrupted; what was written into %s is removed", id.Short(), dir)
		}
		return objects.Zero, err
	}
	return id, nil
}
