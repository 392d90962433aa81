package sbuml

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/sbuml/sbuml/objects"
)

// GcOptions tunes Gc.
type GcOptions struct {
	// DryRun returns gc's plan, what it would keep and remove, without
	// removing anything.
	DryRun bool
	// OnProgress, if set, is called now and then: while gc marks what the
	// snapshots reach, and while it copies what it keeps.
	OnProgress func(GcProgress)
}

// GcProgress is a moment of a gc.
type GcProgress struct {
	// Phase is "marking", then "copying".
	Phase string
	// Marked counts the objects found reachable so far.
	Marked int64
	// Copied of Total bytes are copied into new packs so far.
	Copied, Total int64
}

// GcReport says what Gc kept and removed.
type GcReport struct {
	objects.RepackStats
	// Roots counts the snapshots gc started from: refs, and the
	// snapshots that named machines continue from.
	Roots  int  `json:"roots"`
	DryRun bool `json:"dry_run,omitempty"`
	// Snapshots are, in a dry run, the snapshots gc would remove, newest
	// first.
	Snapshots []GcSnapshot  `json:"snapshots"`
	Duration  time.Duration `json:"duration_ns"`
}

// GcSnapshot is a snapshot that gc removes.
type GcSnapshot struct {
	ID      objects.ID `json:"id"`
	Time    time.Time  `json:"time"`
	Message string     `json:"message"`
}

// Gc removes the objects no snapshot needs any more: those that no ref
// (branch, tag, image, remote-tracking ref, HEAD) and no machine of the
// scrapbook (see Machines) reaches. Deleting a branch or tag leaves its snapshots in the
// scrapbook; Gc is what frees their space. It also merges the small packs
// that many commits leave into one.
//
// Snapshots reachable only from reflogs are removed too; their reflog
// lines stay as history. A machine directory moved by hand is not seen:
// its next commit records no parent if the snapshot it continues from was
// removed.
//
// Gc refuses to run while another process writes to the scrapbook
// (the gc lock of package scrapbook), and writers refuse to start while it runs. It stops
// without removing anything if any snapshot it must keep is damaged.
func (s *Scrapbook) Gc(ctx context.Context, opts GcOptions) (*GcReport, error) {
	start := time.Now()
	r, ok := s.Objects.(objects.Repacker)
	if !ok {
		return nil, fmt.Errorf("gc: the object store (%T) cannot repack", s.Objects)
	}
	release, err := s.book.HoldExclusive()
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	defer release()
	report := func(p GcProgress) {
		if opts.OnProgress != nil {
			opts.OnProgress(p)
		}
	}
	live, roots, err := s.markLive(ctx, report)
	if err != nil {
		return nil, err
	}
	plan, err := r.PlanRepack(ctx, func(id objects.ID) bool { _, ok := live[id]; return ok })
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	res := &GcReport{RepackStats: plan.Stats, Roots: roots, DryRun: opts.DryRun}
	if opts.DryRun {
		// The plan is the answer; say which snapshots it drops.
		if res.Snapshots, err = s.unreachableSnapshots(ctx, live); err != nil {
			return nil, fmt.Errorf("gc: %w", err)
		}
		res.Duration = time.Since(start)
		return res, nil
	}
	marked := int64(len(live))
	res.RepackStats, err = r.Repack(ctx, plan, func(copied, total int64) {
		report(GcProgress{Phase: "copying", Marked: marked, Copied: copied, Total: total})
	})
	if err != nil && ctx.Err() != nil {
		return nil, fmt.Errorf("gc: interrupted; nothing is left half done (packs that held nothing to keep may be gone); run sbuml gc again to finish")
	}
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	res.Duration = time.Since(start)
	return res, nil
}

// markLive walks the object graph from gc's roots and returns every
// object reached, and the number of roots. A damaged snapshot stops it.
func (s *Scrapbook) markLive(ctx context.Context, report func(GcProgress)) (objects.Seen, int, error) {
	roots, err := s.gcRoots()
	if err != nil {
		return nil, 0, fmt.Errorf("gc: %w", err)
	}
	live := objects.Seen{}
	for _, root := range roots {
		err := objects.Walk(ctx, s.Objects, objects.Ref{ID: root, Kind: objects.KindSnapshot}, func(r objects.Ref) (bool, error) {
			if len(live)%65536 == 0 {
				report(GcProgress{Phase: "marking", Marked: int64(len(live))})
			}
			return live.Add(r.ID), nil
		})
		if err != nil && ctx.Err() != nil {
			return nil, 0, fmt.Errorf("gc: interrupted; nothing was removed")
		}
		if err != nil {
			return nil, 0, fmt.Errorf("gc: snapshot %s: %w; nothing was removed (run sbuml fsck)", root.Short(), err)
		}
	}
	return live, len(roots), nil
}

// unreachableSnapshots returns the snapshots of the store that are not
// live, newest first, leaving out the ones that only keep books (see
// isBookkeeping). It reads every unreachable object far enough to tell
// its kind; one it cannot read is left out, as gc removes it anyway.
func (s *Scrapbook) unreachableSnapshots(ctx context.Context, live objects.Seen) ([]GcSnapshot, error) {
	var dead []objects.ID
	if err := s.Objects.List(ctx, func(id objects.ID, size int64) error {
		if _, ok := live[id]; !ok && size <= maxSnapshotStored {
			dead = append(dead, id)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	var snaps []GcSnapshot
	for _, id := range dead {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// Load, not Get: a page kept as a delta is resolved, not
		// compressed again to be decompressed here.
		enc, err := objects.Load(ctx, s.Objects, id)
		if err != nil {
			continue
		}
		if k, _ := objects.KindOf(enc); k != objects.KindSnapshot {
			continue
		}
		sn, err := objects.DecodeSnapshot(enc)
		if err != nil || isBookkeeping(sn) {
			continue
		}
		snaps = append(snaps, GcSnapshot{ID: id, Time: sn.Time, Message: sn.Message})
	}
	sort.Slice(snaps, func(i, j int) bool { return snaps[i].Time.After(snaps[j].Time) })
	return snaps, nil
}

// maxSnapshotStored bounds the stored form of the snapshot objects that
// unreachableSnapshots looks for, so that it need not decompress large
// chunks: a snapshot holds a tree, parents, a message and labels, and one
// of a megabyte (a message of a million characters) is not listed.
const maxSnapshotStored = 1 << 20

// gcRoots returns the snapshots gc keeps with all they reach: every ref,
// HEAD, and the snapshot each machine of the scrapbook continues from.
func (s *Scrapbook) gcRoots() ([]objects.ID, error) {
	seen := map[objects.ID]bool{}
	var roots []objects.ID
	add := func(id objects.ID) {
		if !id.IsZero() && !seen[id] {
			seen[id] = true
			roots = append(roots, id)
		}
	}
	all, err := s.Refs.List("refs/")
	if err != nil {
		return nil, err
	}
	for _, r := range all {
		add(r.ID)
	}
	if id, err := s.Refs.Get("HEAD"); err == nil {
		add(id)
	}
	des, err := os.ReadDir(s.MachinesDir())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var dirs []string
	for _, de := range des {
		if de.IsDir() {
			dirs = append(dirs, filepath.Join(s.MachinesDir(), de.Name()))
		}
	}
	elsewhere, err := s.machinesElsewhere()
	if err != nil {
		return nil, err
	}
	for _, dir := range append(dirs, elsewhere...) {
		h, err := readHead(dir)
		if err != nil {
			return nil, err
		}
		add(h.Snapshot)
	}
	return roots, nil
}
