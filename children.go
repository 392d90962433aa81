package sbuml

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
	"github.com/sbuml/sbuml/stream"
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

// childrenRef is the ref naming the newest child claim of snapshot id.
func childrenRef(id objects.ID) string { return "refs/children/" + id.String() }

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
