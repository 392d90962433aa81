package sbuml

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/sbuml/sbuml/fstree"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/stream"
)

// Import stores the directory dir as a new snapshot on a branch, whose
// previous tip becomes its parent. Everything already in the scrapbook is
// reused, so importing a changed copy of an earlier directory stores only
// what changed (SBUML's sbumlmakedelta, against every snapshot at once).
func (s *Scrapbook) Import(ctx context.Context, dir string, opts SnapshotOptions) (*Result, error) {
	start := time.Now()
	ref, err := s.branchRef(opts.Branch)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	parent, err := s.tip(ref)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	saver := stream.NewSaver(s.Objects, 0)
	defer saver.Close()
	var tree objects.ID
	var size uint64
	err = withProgress(saver, opts.OnProgress, func() error {
		tree, size, err = fstree.Import(ctx, saver, dir, stream.Files)
		return err
	})
	if err != nil {
		return nil, err
	}
	id, err := s.record(ctx, saver, ref, parent, tree, opts)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", dir, err)
	}
	return &Result{ID: id, Branch: ref, Parent: parent, LogicalBytes: size, Stats: saver.Stats(), Duration: time.Since(start)}, nil
}

// Export writes the files of snapshot rev into dir, which must not exist
// or be empty: byte for byte, holes as holes (SBUML's sbumlexpanddelta).
func (s *Scrapbook) Export(ctx context.Context, rev, dir string) (objects.ID, error) {
	id, err := s.Resolve(ctx, rev)
	if err != nil {
		return objects.Zero, fmt.Errorf("export: %w", err)
	}
	sn, err := objects.LoadSnapshot(ctx, s.Objects, id)
	if err != nil {
		return objects.Zero, fmt.Errorf("export: %w", err)
	}
	if err := fstree.Export(ctx, s.Objects, sn.Tree, dir); err != nil {
		os.Remove(dir) // only if still empty
		return objects.Zero, err
	}
	return id, nil
}
