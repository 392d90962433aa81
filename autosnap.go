package sbuml

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
	"github.com/sbuml/sbuml/retention"
	"github.com/sbuml/sbuml/stream"
)

// Automatic snapshots (thinkback, after DejaView's thinkback daemon) are
// machine snapshots taken at intervals by the machine's keeper. They are
// not on the machine's branch: each one's parent is the machine's last
// snapshot that is not automatic, and the ref refs/autosnap/MACHINE names
// an index snapshot (empty tree, label kind=autosnap-index) whose parents
// are the automatic snapshots kept, newest first. Expiring one writes a
// new index without it, in one compare-and-swap, so gc frees it unless a
// later snapshot of the machine descends from it.

// Snapshot label keys and values sbuml sets.
const (
	labelKind         = "kind"
	labelMachine      = "machine"
	labelAuto         = "auto"  // "true" on automatic snapshots
	labelCkpt         = "ckpt"  // the guest's ckpt request ID, in hex, on snapshots a ckpt() took
	labelChild        = "child" // on a child claim: the child number
	kindMachine       = "machine"
	kindAutosnapIndex = "autosnap-index"
	kindChildClaim    = "child-claim"
)

// autosnapRef is the ref naming machine's index of automatic snapshots.
func autosnapRef(machine string) string { return "refs/autosnap/" + machine }

// autosnaps returns machine's index snapshot (Zero if none) and the
// automatic snapshots it keeps, newest first.
func (s *Scrapbook) autosnaps(ctx context.Context, machine string) (objects.ID, []objects.ID, error) {
	idx, err := s.tip(autosnapRef(machine))
	if err != nil || idx.IsZero() {
		return idx, nil, err
	}
	sn, err := objects.LoadSnapshot(ctx, s.Objects, idx)
	if err != nil {
		return objects.Zero, nil, fmt.Errorf("automatic snapshots of %s: %w", machine, err)
	}
	if sn.Labels[labelKind] != kindAutosnapIndex {
		return objects.Zero, nil, fmt.Errorf("automatic snapshots of %s: %s names snapshot %s, which is no index (label kind=%q)", machine, autosnapRef(machine), idx.Short(), sn.Labels[labelKind])
	}
	return idx, sn.Parents, nil
}

// saveEmptyTree stores the empty tree that index and claim snapshots name.
func saveEmptyTree(ctx context.Context, saver *stream.Saver) (objects.ID, error) {
	return saver.SaveObject(ctx, (&objects.Tree{}).Encode())
}

// setAutosnaps points machine's index at a new index snapshot listing
// snaps (or deletes the ref when snaps is empty), by compare-and-swap
// from old. The snapshots in snaps must be stored.
func (s *Scrapbook) setAutosnaps(ctx context.Context, saver *stream.Saver, machine string, old objects.ID, snaps []objects.ID, why string) error {
	ref := autosnapRef(machine)
	if len(snaps) == 0 {
		if old.IsZero() {
			return nil
		}
		return s.Refs.Update(ref, old, objects.Zero, why)
	}
	tree, err := saveEmptyTree(ctx, saver)
	if err != nil {
		return err
	}
	idx := &objects.Snapshot{Tree: tree, Parents: snaps, Time: time.Now().UTC(), Author: author(), Host: hostname(),
		Message: fmt.Sprintf("automatic snapshots of %s", machine),
		Labels:  map[string]string{labelKind: kindAutosnapIndex, labelMachine: machine}}
	id, err := saver.SaveObject(ctx, idx.Encode())
	if err != nil {
		return err
	}
	if err := s.syncObjects(ctx); err != nil {
		return err
	}
	return s.Refs.Update(ref, old, id, why)
}

// addAutosnap records automatic snapshot id, stored and synced, in
// machine's index.
func (s *Scrapbook) addAutosnap(ctx context.Context, saver *stream.Saver, machine string, id objects.ID) error {
	for try := 0; ; try++ {
		old, snaps, err := s.autosnaps(ctx, machine)
		if err != nil {
			return err
		}
		err = s.setAutosnaps(ctx, saver, machine, old, append([]objects.ID{id}, snaps...), "autosnap: "+id.Short())
		if !errors.Is(err, refs.ErrConflict) || try == 5 {
			return err
		}
	}
}

// AutosnapDecision is the fate of one automatic snapshot under a
// retention policy.
type AutosnapDecision struct {
	ID   objects.ID `json:"id"`
	Time time.Time  `json:"time"`
	Keep bool       `json:"keep"`
	// Reasons lists the rules that keep it ("last", "hourly", ...).
	Reasons []string `json:"reasons"`
}

// ExpireAutosnaps applies a retention policy (restic forget's rules) to
// machine's automatic snapshots and drops from its index those the policy
// does not keep, so that gc frees them unless something else reaches
// them. With dryRun it only reports. The decisions come newest first.
func (s *Scrapbook) ExpireAutosnaps(ctx context.Context, machine string, p retention.Policy, dryRun bool) ([]AutosnapDecision, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	release, err := s.lockObjects()
	if err != nil {
		return nil, fmt.Errorf("expire automatic snapshots of %s: %w", machine, err)
	}
	defer release()
	for try := 0; ; try++ {
		ds, err := s.expireOnce(ctx, machine, p, dryRun)
		if !errors.Is(err, refs.ErrConflict) || try == 5 {
			if err != nil {
				return nil, fmt.Errorf("expire automatic snapshots of %s: %w", machine, err)
			}
			return ds, nil
		}
	}
}

func (s *Scrapbook) expireOnce(ctx context.Context, machine string, p retention.Policy, dryRun bool) ([]AutosnapDecision, error) {
	old, snaps, err := s.autosnaps(ctx, machine)
	if err != nil {
		return nil, err
	}
	items := make([]retention.Item, len(snaps))
	byKey := map[string]objects.ID{}
	for i, id := range snaps {
		sn, err := objects.LoadSnapshot(ctx, s.Objects, id)
		if err != nil {
			return nil, err
		}
		items[i] = retention.Item{ID: id.String(), Time: sn.Time}
		byKey[id.String()] = id
	}
	var out []AutosnapDecision
	var keep []objects.ID
	for _, d := range retention.Apply(items, p, nil) {
		id := byKey[d.ID]
		out = append(out, AutosnapDecision{ID: id, Time: d.Time, Keep: d.Keep, Reasons: append([]string{}, d.Reasons...)})
		if d.Keep {
			keep = append(keep, id)
		}
	}
	if dryRun || len(keep) == len(snaps) {
		return out, nil
	}
	saver := stream.NewSaver(s.Objects, 0)
	defer saver.Close()
	return out, s.setAutosnaps(ctx, saver, machine, old, keep, "expire: "+p.String())
}
