package sbuml

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
	"github.com/sbuml/sbuml/stream"
)

// Result describes a snapshot just recorded.
type Result struct {
	ID     objects.ID `json:"id"`
	Branch string     `json:"branch"`
	// Parent is the branch's previous tip, Zero for a new branch.
	Parent objects.ID `json:"parent"`
	// LogicalBytes is the size of everything the snapshot holds.
	LogicalBytes uint64 `json:"logical_bytes"`
	// Stats counts what was read and what was new to the scrapbook.
	Stats    stream.Stats  `json:"stats"`
	Duration time.Duration `json:"duration_ns"`
}

// SnapshotOptions say where a new snapshot goes and what it says.
type SnapshotOptions struct {
	// Branch receives the snapshot; its tip becomes the parent. Empty
	// means the branch HEAD names.
	Branch  string
	Message string
	Labels  map[string]string
	// OnProgress, if set, is called about five times a second while
	// data is being stored.
	OnProgress func(StoreProgress)
}

// StoreProgress is a moment of storing or writing snapshot data (an
// import, a commit, an export, a checkout), for a progress bar.
type StoreProgress struct {
	stream.Stats
	// TotalBytes is how many logical bytes the operation goes through in
	// all, where it is known beforehand (0: not known).
	TotalBytes int64
}

// branchRef returns the full ref name of branch, or of the current branch.
func (s *Scrapbook) branchRef(branch string) (string, error) {
	if branch == "" {
		b, err := s.CurrentBranch()
		if err != nil {
			return "", err
		}
		branch = b
	}
	if err := refs.ValidateShortName(branch); err != nil {
		return "", err
	}
	return "refs/heads/" + branch, nil
}

// tip returns the ID a ref points at, or Zero if it does not exist.
func (s *Scrapbook) tip(ref string) (objects.ID, error) {
	id, err := s.Refs.Get(ref)
	if errors.Is(err, refs.ErrNotFound) {
		return objects.Zero, nil
	}
	return id, err
}

// withProgress runs fn while calling report with the saver's stats, of
// total logical bytes in all (0: not known).
func withProgress(saver *stream.Saver, report func(StoreProgress), total int64, fn func() error) error {
	return reportWhile(func() StoreProgress { return StoreProgress{Stats: saver.Stats(), TotalBytes: total} }, report, fn)
}

// reportWhile runs fn while calling report with what now says, about five
// times a second.
func reportWhile(now func() StoreProgress, report func(StoreProgress), fn func() error) error {
	if report == nil {
		return fn()
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				report(now())
			case <-done:
				return
			}
		}
	}()
	err := fn()
	close(done)
	<-stopped
	return err
}

// record stores a snapshot of tree with the given parent (Zero: none) and
// moves ref to it: the snapshot object after the tree (closure
// invariant), then one sync of the store, then a compare-and-swap of ref
// from old, the tip it had when the work started.
func (s *Scrapbook) record(ctx context.Context, saver *stream.Saver, ref string, old, parent, tree objects.ID, opts SnapshotOptions) (objects.ID, error) {
	id, err := s.saveSnapshot(ctx, saver, parent, tree, opts)
	if err != nil {
		return objects.Zero, err
	}
	if err := s.syncObjects(ctx); err != nil {
		return objects.Zero, err
	}
	why := "snapshot: " + firstLine(opts.Message)
	if err := s.Refs.Update(ref, old, id, why); err != nil {
		if errors.Is(err, refs.ErrLocked) {
			return objects.Zero, fmt.Errorf("%w; snapshot %s is stored but on no branch: keep it with 'sbuml branch NAME %s', or sbuml gc removes it", err, id.Short(), id.Short())
		}
		if errors.Is(err, refs.ErrConflict) {
			return objects.Zero, fmt.Errorf("%s moved while the snapshot was being taken; snapshot %s is stored but not on the branch (run 'sbuml branch NAME %s' to keep it): %w", ref, id.Short(), id.Short(), err)
		}
		return objects.Zero, err
	}
	return id, nil
}

// saveSnapshot stores a snapshot of tree with the given parent (Zero:
// none), made now by this user on this host.
func (s *Scrapbook) saveSnapshot(ctx context.Context, saver *stream.Saver, parent, tree objects.ID, opts SnapshotOptions) (objects.ID, error) {
	sn := &objects.Snapshot{
		Tree:    tree,
		Time:    time.Now().UTC(),
		Author:  author(),
		Host:    hostname(),
		Message: opts.Message,
		Labels:  opts.Labels,
	}
	if !parent.IsZero() {
		sn.Parents = []objects.ID{parent}
	}
	return saver.SaveObject(ctx, sn.Encode())
}

// syncObjects makes every object written so far durable, before a ref
// may name it (refs-last).
func (s *Scrapbook) syncObjects(ctx context.Context) error {
	return s.Objects.Sync(ctx)
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i]
		}
	}
	return s
}

func author() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return os.Getenv("USER")
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

// RefOptions tune CreateRef and DeleteRef.
type RefOptions struct {
	// Force creates a branch or tag whose name hides a revision (HEAD, or
	// what looks like a snapshot ID), and deletes the current branch.
	Force bool
	// Why goes into the ref's reflog (default: what the call does).
	Why string
}

// CreateRef creates the ref name (refs/heads/… or refs/tags/…) at the
// snapshot rev resolves to, refusing a name already in use, and returns
// the snapshot's ID. Unlike Refs.Update it holds off gc, so the snapshot
// cannot be removed between resolving rev and naming it. A short name
// that would hide another revision (see ShadowedRevision) is refused
// unless opts.Force.
func (s *Scrapbook) CreateRef(ctx context.Context, name, rev string, opts RefOptions) (objects.ID, error) {
	if !opts.Force {
		short := strings.TrimPrefix(strings.TrimPrefix(name, "refs/heads/"), "refs/tags/")
		if why := ShadowedRevision(short); why != "" {
			return objects.Zero, fmt.Errorf("create %s: %s; choose another name, or create it anyway with --force", name, why)
		}
	}
	release, err := s.holdObjects()
	if err != nil {
		return objects.Zero, err
	}
	defer release()
	id, err := s.Resolve(ctx, rev)
	if err != nil {
		return objects.Zero, err
	}
	if _, err := objects.LoadSnapshot(ctx, s.Objects, id); err != nil {
		return objects.Zero, err
	}
	if err := s.Refs.Update(name, objects.Zero, id, "created from "+rev); err != nil {
		return objects.Zero, err
	}
	return id, nil
}

// ShadowedRevision says which revision a branch or tag called name would
// hide from Resolve, or returns "" if none: "HEAD" always means the
// current branch, and a name of four or more hex digits would take the
// place of the snapshot IDs it is a prefix of.
func ShadowedRevision(name string) string {
	switch {
	case name == "HEAD":
		return `"HEAD" names the current branch, so a branch or tag called HEAD could never be named`
	case len(name) >= 4 && len(name) <= 2*objects.IDSize && isHex(name):
		return fmt.Sprintf("%q looks like a snapshot ID, and would hide the snapshots whose IDs start with it", name)
	}
	return ""
}

// DeleteRef deletes the branch or tag name (refs/heads/… or refs/tags/…)
// and returns the snapshot it named, which stays in the scrapbook until
// gc. The branch HEAD names is refused unless opts.Force: the next import
// onto it would start a history of its own. Other refs (images, remote
// tracking, automatic snapshots) are not deleted this way.
func (s *Scrapbook) DeleteRef(name string, opts RefOptions) (objects.ID, error) {
	if !strings.HasPrefix(name, "refs/heads/") && !strings.HasPrefix(name, "refs/tags/") {
		return objects.Zero, fmt.Errorf("delete %s: only branches (refs/heads/) and tags (refs/tags/) can be deleted", name)
	}
	if opts.Why == "" {
		opts.Why = "delete"
	}
	if head, err := s.Refs.Symbolic("HEAD"); err == nil && head == name && !opts.Force {
		return objects.Zero, fmt.Errorf("delete %s: it is the current branch (HEAD names it), and the next import onto it would start a new history; delete it anyway with --force", strings.TrimPrefix(name, "refs/heads/"))
	}
	old, err := s.Refs.Get(name)
	if err != nil {
		return objects.Zero, err
	}
	if err := s.Refs.Update(name, old, objects.Zero, opts.Why); err != nil {
		return objects.Zero, err
	}
	return old, nil
}
