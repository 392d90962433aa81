package sbuml

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
)

// Resolve turns a revision into a snapshot ID. A revision is a full or
// unique-prefix (at least 4 hex digits) snapshot ID, a full ref name
// (refs/heads/x, HEAD), a branch, tag or remote-tracking branch name, and
// may end in any number of ~N (the Nth first-parent ancestor) or ^ (the
// first parent) suffixes. NAME@{DATE} names the last snapshot of machine
// or branch NAME taken at or before DATE (see ParseRevDate), including the
// machine's automatic snapshots: m1@{10 minutes ago}, m1@{2026-12-06 10:00}.
func (s *Scrapbook) Resolve(ctx context.Context, rev string) (objects.ID, error) {
	base, steps, err := splitAncestry(rev)
	if err != nil {
		return objects.Zero, err
	}
	var id objects.ID
	if name, spec, ok := splitAt(base); ok {
		id, err = s.resolveAt(ctx, name, spec)
	} else {
		id, err = s.resolveBase(ctx, base)
	}
	if err != nil {
		return objects.Zero, err
	}
	for i := 0; i < steps; i++ {
		sn, err := objects.LoadSnapshot(ctx, s.Objects, id)
		if err != nil {
			return objects.Zero, fmt.Errorf("resolve %s: %w", rev, err)
		}
		if len(sn.Parents) == 0 && i == 0 {
			return objects.Zero, fmt.Errorf("resolve %s: %s has no parent", rev, base)
		}
		if len(sn.Parents) == 0 {
			return objects.Zero, fmt.Errorf("resolve %s: %s has only %d snapshot%s before it (the oldest, %s, has no parent)", rev, base, i, plural(i), id.Short())
		}
		id = sn.Parents[0]
	}
	return id, nil
}

// splitAncestry splits "main~2^" into "main" and 3.
func splitAncestry(rev string) (string, int, error) {
	steps := 0
	for {
		if strings.HasSuffix(rev, "^") {
			rev, steps = rev[:len(rev)-1], steps+1
			continue
		}
		i := strings.LastIndexByte(rev, '~')
		if i < 0 {
			break
		}
		n := 1
		if num := rev[i+1:]; num != "" {
			v, err := strconv.Atoi(num)
			if err != nil || v < 0 {
				return "", 0, fmt.Errorf("bad revision %q: '~' must be followed by a number", rev)
			}
			n = v
		}
		rev, steps = rev[:i], steps+n
	}
	if rev == "" {
		return "", 0, fmt.Errorf("empty revision")
	}
	return rev, steps, nil
}

// refCandidates lists the full ref names a short name may mean, in order.
func refCandidates(name string) []string {
	if name == "HEAD" || strings.HasPrefix(name, "refs/") {
		return []string{name}
	}
	return []string{"refs/heads/" + name, "refs/tags/" + name, "refs/remotes/" + name, "refs/" + name}
}

func (s *Scrapbook) resolveBase(ctx context.Context, rev string) (objects.ID, error) {
	for _, name := range refCandidates(rev) {
		if refs.ValidateName(name) != nil {
			continue
		}
		id, err := s.Refs.Get(name)
		if err == nil {
			return id, nil
		}
		if !errors.Is(err, refs.ErrNotFound) {
			return objects.Zero, err
		}
	}
	if isHex(rev) && len(rev) >= 4 && len(rev) <= 2*objects.IDSize {
		return s.resolvePrefix(ctx, strings.ToLower(rev))
	}
	validate := refs.ValidateShortName
	if strings.HasPrefix(rev, "refs/") {
		validate = refs.ValidateName
	}
	if err := validate(rev); err != nil {
		return objects.Zero, fmt.Errorf("bad revision %q: %v", rev, err)
	}
	return objects.Zero, fmt.Errorf("unknown revision %q: no such snapshot, branch or tag", rev)
}

func (s *Scrapbook) resolvePrefix(ctx context.Context, prefix string) (objects.ID, error) {
	var ids []objects.ID
	if pf, ok := s.Objects.(objects.PrefixFinder); ok {
		found, err := pf.FindPrefix(ctx, prefix)
		if err != nil {
			return objects.Zero, err
		}
		ids = found
	}
	var snaps []objects.ID
	for _, id := range ids {
		enc, err := objects.Load(ctx, s.Objects, id)
		if err != nil {
			return objects.Zero, err
		}
		if k, _ := objects.KindOf(enc); k == objects.KindSnapshot {
			snaps = append(snaps, id)
		}
	}
	switch len(snaps) {
	case 0:
		return objects.Zero, fmt.Errorf("unknown revision %q: no snapshot has that ID prefix", prefix)
	case 1:
		return snaps[0], nil
	}
	return objects.Zero, fmt.Errorf("ambiguous revision %q: %d snapshots start with it (%s, %s, …)", prefix, len(snaps), snaps[0].Short(), snaps[1].Short())
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// CurrentBranch returns the branch HEAD names ("main" in a new scrapbook).
func (s *Scrapbook) CurrentBranch() (string, error) {
	target, err := s.Refs.Symbolic("HEAD")
	if err != nil {
		return "", err
	}
	return strings.TrimPrefix(target, "refs/heads/"), nil
}

func isNotFound(err error) bool { return errors.Is(err, refs.ErrNotFound) }

// ObjectID resolves an object ID or unique prefix of any kind, or a
// revision, for plumbing commands.
func (s *Scrapbook) ObjectID(ctx context.Context, arg string) (objects.ID, error) {
	if id, err := objects.ParseID(arg); err == nil {
		return id, nil
	}
	if isHex(arg) && len(arg) >= 4 {
		if pf, ok := s.Objects.(objects.PrefixFinder); ok {
			ids, err := pf.FindPrefix(ctx, strings.ToLower(arg))
			if err != nil {
				return objects.Zero, err
			}
			if len(ids) == 1 {
				return ids[0], nil
			}
			if len(ids) > 1 {
				return objects.Zero, fmt.Errorf("ambiguous object prefix %q: %d objects start with it", arg, len(ids))
			}
		}
	}
	id, err := s.Resolve(ctx, arg)
	if err != nil {
		return objects.Zero, fmt.Errorf("no object, snapshot or ref %q", arg)
	}
	return id, nil
}

// plural returns "s" unless n is 1.
func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
