package sbuml

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/sbuml/sbuml/objects"
)

// LogEntry describes one snapshot in history.
type LogEntry struct {
	ID      objects.ID        `json:"id"`
	Parents []objects.ID      `json:"parents"`
	Time    time.Time         `json:"time"`
	Author  string            `json:"author"`
	Host    string            `json:"host"`
	Message string            `json:"message"`
	Labels  map[string]string `json:"labels,omitempty"`
	// Refs lists the full names of the refs that point at the snapshot
	// (refs/heads/main, refs/tags/v1).
	Refs []string `json:"refs"`
	// Auto marks an automatic snapshot (thinkback).
	Auto bool `json:"auto,omitempty"`
	// LogicalBytes is the size of everything the snapshot holds.
	LogicalBytes uint64 `json:"logical_bytes"`
	// AddedBytes is the stored size of the objects this snapshot brought
	// to the scrapbook: those no older snapshot of the scrapbook reaches
	// (the figure du gives), whichever snapshots are listed.
	AddedBytes int64 `json:"added_bytes"`
}

// LogOptions select the history to list.
type LogOptions struct {
	// Revs are the starting points; empty means HEAD, unless All.
	Revs []string
	// All starts from every ref.
	All bool
	// Limit caps the number of entries (0: no limit).
	Limit int

	branchesOnly bool // with All: start from refs/heads only
}

// Log lists the snapshots reachable from the starting points through
// their parents, newest first.
func (s *Scrapbook) Log(ctx context.Context, opts LogOptions) ([]LogEntry, error) {
	refsByID, err := s.refNames()
	if err != nil {
		return nil, err
	}
	var starts []objects.ID
	if opts.All {
		prefix := "refs/"
		if opts.branchesOnly {
			prefix = "refs/heads/"
		}
		all, err := s.Refs.List(prefix)
		if err != nil {
			return nil, err
		}
		for _, r := range all {
			starts = append(starts, r.ID)
		}
	} else {
		revs := opts.Revs
		if len(revs) == 0 {
			revs = []string{"HEAD"}
		}
		for _, r := range revs {
			id, err := s.Resolve(ctx, r)
			if err != nil && r == "HEAD" && len(opts.Revs) == 0 {
				// HEAD's branch has no snapshot yet: show every branch
				// (machines commit to branches of their own names).
				return s.Log(ctx, LogOptions{All: true, Limit: opts.Limit, branchesOnly: true})
			}
			if err != nil {
				return nil, err
			}
			starts = append(starts, id)
		}
	}
	order, snaps, err := s.history(ctx, starts)
	if err != nil {
		return nil, fmt.Errorf("log: %w", err)
	}
	// Charge each object to the oldest snapshot of the whole scrapbook
	// that reaches it, as du does, not to the oldest listed: the first
	// snapshot of a machine did not add its base image.
	everything := order
	if !opts.All || opts.branchesOnly {
		all, err := s.Refs.List("refs/")
		if err != nil {
			return nil, err
		}
		for _, r := range all {
			starts = append(starts, r.ID)
		}
		if everything, _, err = s.history(ctx, starts); err != nil {
			return nil, fmt.Errorf("log: %w", err)
		}
	}
	acct, err := s.account(ctx, everything)
	if err != nil {
		return nil, fmt.Errorf("log: %w", err)
	}
	entries := make([]LogEntry, 0, len(order))
	for i := len(order) - 1; i >= 0; i-- {
		id := order[i]
		sn := snaps[id]
		if isBookkeeping(sn) {
			continue
		}
		entries = append(entries, LogEntry{
			ID: id, Parents: sn.Parents, Time: sn.Time, Author: sn.Author, Host: sn.Host,
			Message: sn.Message, Labels: sn.Labels, Refs: refsByID[id], Auto: sn.Labels[labelAuto] == "true",
			LogicalBytes: acct[id].logical, AddedBytes: acct[id].added,
		})
		if opts.Limit > 0 && len(entries) == opts.Limit {
			break
		}
	}
	return entries, nil
}

// isBookkeeping reports whether sn only records other snapshots: the
// index of a machine's automatic snapshots, or a child claim. Log walks
// through them but does not list them.
func isBookkeeping(sn *objects.Snapshot) bool {
	k := sn.Labels[labelKind]
	return k == kindAutosnapIndex || k == kindChildClaim
}

// history returns the snapshots reachable from starts through parents,
// oldest first (by time, then ID), and the decoded snapshots.
func (s *Scrapbook) history(ctx context.Context, starts []objects.ID) ([]objects.ID, map[objects.ID]*objects.Snapshot, error) {
	snaps := map[objects.ID]*objects.Snapshot{}
	todo := append([]objects.ID(nil), starts...)
	for len(todo) > 0 {
		id := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if _, ok := snaps[id]; ok {
			continue
		}
		sn, err := objects.LoadSnapshot(ctx, s.Objects, id)
		if err != nil {
			return nil, nil, s.damaged(err)
		}
		snaps[id] = sn
		todo = append(todo, sn.Parents...)
	}
	order := make([]objects.ID, 0, len(snaps))
	for id := range snaps {
		order = append(order, id)
	}
	sort.Slice(order, func(i, j int) bool {
		ti, tj := snaps[order[i]].Time, snaps[order[j]].Time
		if !ti.Equal(tj) {
			return ti.Before(tj)
		}
		return order[i].String() < order[j].String()
	})
	return order, snaps, nil
}

// refNames maps snapshot IDs to the full names of the refs pointing at them.
func (s *Scrapbook) refNames() (map[objects.ID][]string, error) {
	all, err := s.Refs.List("refs/")
	if err != nil {
		return nil, err
	}
	m := map[objects.ID][]string{}
	for _, r := range all {
		m[r.ID] = append(m[r.ID], r.Name)
	}
	return m, nil
}

// usage is what accounting found for one snapshot.
type usage struct {
	logical uint64 // bytes the snapshot holds
	added   int64  // stored bytes of objects first reached from it
	// chunks and chunkBytes count the distinct chunks first reached from it.
	chunks      int64
	chunkBytes  uint64
	chunkStored int64
	objects     int64
}

// missingError says that r, which a snapshot reaches, is not in the
// store, so sizes cannot be told.
func (s *Scrapbook) missingError(r objects.Ref) error {
	return s.damaged(fmt.Errorf("%s %s is missing from the store, so sizes cannot be counted: %w", r.Kind, r.ID, objects.ErrNotFound))
}

// damaged adds to an error reading the store what the store knows about
// its damage, and what to do, if err is about a missing or corrupt
// object.
func (s *Scrapbook) damaged(err error) error {
	if !errors.Is(err, objects.ErrNotFound) && !errors.Is(err, objects.ErrCorrupt) {
		return err
	}
	if fc, ok := s.Objects.(objects.FileChecker); ok {
		if broken := fc.Damaged(); len(broken) > 0 {
			return fmt.Errorf("%w (%v); run sbuml fsck", err, broken[0])
		}
	}
	return fmt.Errorf("%w; run sbuml fsck", err)
}

// account walks the snapshots in the given order (oldest first) with one
// shared seen-set, so each object is charged to the first snapshot that
// reaches it. Parents are not followed: each snapshot stands for itself.
func (s *Scrapbook) account(ctx context.Context, order []objects.ID) (map[objects.ID]usage, error) {
	sizes := map[objects.ID]int64{}
	if err := s.Objects.List(ctx, func(id objects.ID, size int64) error {
		sizes[id] = size
		return nil
	}); err != nil {
		return nil, err
	}
	seen := objects.Seen{}
	out := make(map[objects.ID]usage, len(order))
	for _, id := range order {
		var u usage
		root := true
		err := objects.Walk(ctx, s.Objects, objects.Ref{ID: id, Kind: objects.KindSnapshot}, func(r objects.Ref) (bool, error) {
			if r.Kind == objects.KindSnapshot && !root {
				return false, nil // a parent: accounted on its own
			}
			root = false
			if !seen.Add(r.ID) {
				return false, nil
			}
			if _, ok := sizes[r.ID]; !ok {
				return false, s.missingError(r)
			}
			u.added += sizes[r.ID]
			u.objects++
			if r.Kind == objects.KindChunk {
				u.chunks++
				u.chunkBytes += r.Length
				u.chunkStored += sizes[r.ID]
			}
			return true, nil
		})
		if err != nil {
			return nil, s.damaged(err)
		}
		sn, err := objects.LoadSnapshot(ctx, s.Objects, id)
		if err != nil {
			return nil, s.damaged(err)
		}
		t, err := objects.LoadTree(ctx, s.Objects, sn.Tree)
		if err != nil {
			return nil, s.damaged(err)
		}
		u.logical = t.Size()
		out[id] = u
	}
	return out, nil
}
