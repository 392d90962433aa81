package sbuml

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
	"github.com/sbuml/sbuml/stream"
	"github.com/sbuml/sbuml/transport"
)

// Child numbers (seed 003's ckpt()): the machines checked out of a
// snapshot that a guest's ckpt() took are numbered 1, 2, 3, ... in the
// order of checkout, and ckpt() returns that number in each of them (0 in
// the machine that called it). The numbering is kept in the scrapbook as
// a chain of claim snapshots: refs/children/SNAPSHOT names the newest
// claim, a snapshot with an empty tree, label kind=child-claim and
// child=N, whose parents are SNAPSHOT and the previous claim. A checkout
// takes the next number by compare-and-swap on that ref, so concurrent
// checkouts get distinct numbers, and the chain travels with push and
// pull like a branch, so a scrapbook that receives the snapshot goes on
// numbering after the sender (see docs/agent.md for the rules).

// childrenPrefix starts the names of child claim refs.
const childrenPrefix = "refs/children/"

// childrenRef is the ref naming the newest child claim of snapshot id.
func childrenRef(id objects.ID) string { return childrenPrefix + id.String() }

// lastChild returns the newest claim of snapshot id's children and its
// number (Zero and 0 if none).
func (s *Scrapbook) lastChild(ctx context.Context, id objects.ID) (objects.ID, int, error) {
	claim, err := s.tip(childrenRef(id))
	if err != nil || claim.IsZero() {
		return claim, 0, err
	}
	sn, err := objects.LoadSnapshot(ctx, s.Objects, claim)
	if err != nil {
		return objects.Zero, 0, err
	}
	n, err := strconv.Atoi(sn.Labels[labelChild])
	if sn.Labels[labelKind] != kindChildClaim || err != nil || n < 1 {
		return objects.Zero, 0, fmt.Errorf("%s names %s, which is no child claim", childrenRef(id), claim.Short())
	}
	return claim, n, nil
}

// claimChild gives machine the next child number of snapshot id and
// records it. The caller holds the gc lock.
func (s *Scrapbook) claimChild(ctx context.Context, id objects.ID, machine string) (int, error) {
	saver := stream.NewSaver(s.Objects, 0)
	defer saver.Close()
	tree, err := saveEmptyTree(ctx, saver)
	if err != nil {
		return 0, err
	}
	for try := 0; ; try++ {
		old, n, err := s.lastChild(ctx, id)
		if err != nil {
			return 0, err
		}
		n++
		parents := []objects.ID{id}
		if !old.IsZero() {
			parents = append(parents, old)
		}
		claim := &objects.Snapshot{Tree: tree, Parents: parents, Time: time.Now().UTC(), Author: author(), Host: hostname(),
			Message: fmt.Sprintf("child %d of %s: machine %s", n, id.Short(), machine),
			Labels:  map[string]string{labelKind: kindChildClaim, labelChild: strconv.Itoa(n), labelMachine: machine}}
		cid, err := saver.SaveObject(ctx, claim.Encode())
		if err != nil {
			return 0, err
		}
		if err := s.syncObjects(ctx); err != nil {
			return 0, err
		}
		err = s.Refs.Update(childrenRef(id), old, cid, fmt.Sprintf("checkout: child %d, machine %s", n, machine))
		if err == nil {
			return n, nil
		}
		if !errors.Is(err, refs.ErrConflict) || try == 20 {
			return 0, fmt.Errorf("number the machine among the children of %s: %w", id.Short(), err)
		}
		time.Sleep(time.Duration(try+1) * 5 * time.Millisecond)
	}
}

// ckptRequestOf returns the ckpt() request that snapshot id answers, from
// its labels (0: none).
func ckptRequestOf(sn *objects.Snapshot) uint64 {
	v, err := strconv.ParseUint(sn.Labels[labelCkpt], 16, 64)
	if err != nil {
		return 0
	}
	return v
}

// childClaimUpdates returns the updates that carry, with a push of the
// snapshots in pushed, the child numbering of those of their ancestors
// that a ckpt() took: refs/children/S for every S reachable from pushed
// that has one here. The remote takes them like branches, as
// fast-forwards only, so the scrapbook receiving S goes on numbering its
// children after this one.
func (s *Scrapbook) childClaimUpdates(ctx context.Context, pushed []objects.ID) ([]transport.RefUpdate, error) {
	claims, err := s.Refs.List(childrenPrefix)
	if err != nil || len(claims) == 0 {
		return nil, err
	}
	_, reach, err := s.history(ctx, pushed)
	if err != nil {
		return nil, err
	}
	var ups []transport.RefUpdate
	for _, c := range claims {
		snap, err := objects.ParseID(strings.TrimPrefix(c.Name, childrenPrefix))
		if err != nil {
			continue
		}
		if _, ok := reach[snap]; ok {
			ups = append(ups, transport.RefUpdate{Name: c.Name, New: c.ID})
		}
	}
	return ups, nil
}

// pullChildClaims fetches, from a remote's ref list, the child numbering
// of the snapshots this scrapbook has, and moves the local
// refs/children/S refs forward to it; a numbering that diverged from the
// local one (both scrapbooks numbered children of S apart) is left alone
// and reported.
func (s *Scrapbook) pullChildClaims(ctx context.Context, r transport.Remote, list *transport.RefList, opts TransferOptions) ([]RefChange, error) {
	var want []transport.Ref
	for _, ref := range list.Refs {
		snap, err := objects.ParseID(strings.TrimPrefix(ref.Name, childrenPrefix))
		if err != nil || !strings.HasPrefix(ref.Name, childrenPrefix) {
			continue
		}
		if ok, err := s.Objects.Has(ctx, snap); err != nil {
			return nil, err
		} else if ok {
			want = append(want, ref)
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	ids := make([]objects.ID, len(want))
	for i, ref := range want {
		ids[i] = ref.ID
	}
	if _, err := transport.Fetch(ctx, s.Objects, r, ids, opts.transport()); err != nil {
		return nil, err
	}
	var changes []RefChange
	for _, ref := range want {
		c := RefChange{Remote: ref.Name, Name: ref.Name, New: ref.ID}
		old, err := s.tip(ref.Name)
		if err != nil {
			return changes, err
		}
		c.Old = old
		switch {
		case old == ref.ID:
			c.Status = "up to date"
		case old.IsZero() || s.isAncestor(ctx, old, ref.ID):
			if err := s.Refs.Update(ref.Name, old, ref.ID, "pull "+r.URL()); err != nil {
				return changes, err
			}
			c.Status = "updated"
		case s.isAncestor(ctx, ref.ID, old):
			c.Status = "left alone: the local numbering is ahead"
		default:
			c.Status = "left alone: the numbering of this snapshot's children diverged (both scrapbooks checked it out since they last exchanged it)"
		}
		changes = append(changes, c)
	}
	return changes, nil
}

// isAncestor reports whether snapshot anc is desc or reachable from it.
func (s *Scrapbook) isAncestor(ctx context.Context, anc, desc objects.ID) bool {
	_, reach, err := s.history(ctx, []objects.ID{desc})
	if err != nil {
		return false
	}
	_, ok := reach[anc]
	return ok
}
