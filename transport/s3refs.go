package transport

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/sbuml/sbuml/objects"
)

// headFile is the object naming the ref HEAD points at.
const headFile = "HEAD"

// A ref object holds the snapshot's ID in hex and a newline; an empty
// ref object is a deleted ref (deleting it by a conditional write keeps
// the compare-and-swap).
func refBody(id objects.ID) []byte {
	if id.IsZero() {
		return nil
	}
	return []byte(id.String() + "\n")
}

// readRef returns the snapshot ref name names (Zero if it does not
// exist or was deleted), the ETag of its object and whether the object
// exists.
func (s *S3) readRef(ctx context.Context, name string) (objects.ID, string, bool, error) {
	b, etag, err := s.getObjectETag(ctx, name, 4096)
	if errors.Is(err, objects.ErrNotFound) {
		return objects.Zero, "", false, nil
	}
	if err != nil {
		return objects.Zero, "", false, err
	}
	if len(b) == 0 {
		return objects.Zero, etag, true, nil
	}
	id, err := objects.ParseID(strings.TrimSpace(string(b)))
	if err != nil {
		return objects.Zero, "", false, fmt.Errorf("remote %s: ref %s: %w: it holds %q, not a snapshot ID", s.url, name, ErrProtocol, truncate(string(b), 80))
	}
	return id, etag, true, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// ListRefs implements Remote: the ref objects are listed, then read
// several at once. Each ref is read as it is at that moment.
func (s *S3) ListRefs(ctx context.Context) (*RefList, error) {
	if err := s.checkScrapbook(ctx); err != nil {
		return nil, err
	}
	var names []string
	err := s.list(ctx, "refs/", func(name string, size int64, _ time.Time) {
		if size > 0 {
			names = append(names, "refs/"+name)
		}
	})
	if err != nil {
		return nil, err
	}
	where := "remote " + s.url
	if len(names) > s.limits.MaxRefs {
		return nil, fmt.Errorf("%s: %w: the remote lists %d refs, more than the %d sbuml takes from a remote (set SBUML_MAX_REFS to allow more, if you trust it)", where, ErrProtocol, len(names), s.limits.MaxRefs)
	}
	for _, n := range names {
		if err := validateWireName(n); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
	}
	ids := make([]objects.ID, len(names))
	g := newGroup(ctx, StaticConcurrency)
	for i, n := range names {
		g.run(func(ctx context.Context) error {
			var err error
			ids[i], _, _, err = s.readRef(ctx, n)
			return err
		})
	}
	if err := g.wait(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l := &RefList{Format: RefListFormat, Refs: []Ref{}}
	for i, n := range names {
		if !ids[i].IsZero() {
			l.Refs = append(l.Refs, Ref{Name: n, ID: ids[i]})
		}
	}
	sort.Slice(l.Refs, func(i, j int) bool { return l.Refs[i].Name < l.Refs[j].Name })
	head, err := s.getObject(ctx, headFile, 4096)
	switch {
	case errors.Is(err, objects.ErrNotFound):
	case err != nil:
		return nil, err
	default:
		if name, ok := strings.CutPrefix(strings.TrimSpace(string(head)), "ref: "); ok && validateWireName(name) == nil {
			l.Head = name
		}
	}
	return l, nil
}

// UpdateRef implements Remote: the ref object is read, compared with
// old, and written back with If-Match on the ETag read (If-None-Match:
// * if there was none), so that of two hosts moving the ref at once
// exactly one succeeds. A write the store refuses because the ref
// moved meanwhile is a lost race, unless the ref now holds new: a
// retried write whose first attempt did land, or someone else's update
// to the same snapshot. new must be a snapshot the bucket holds.
func (s *S3) UpdateRef(ctx context.Context, name string, old, new objects.ID) error {
	if err := validatePushName(name); err != nil {
		return err
	}
	if old.IsZero() && new.IsZero() {
		return fmt.Errorf("update %s: old and new are both zero", name)
	}
	if err := s.beginWrites(ctx); err != nil {
		return err
	}
	if !new.IsZero() {
		if err := s.checkRemoteSnapshot(ctx, new); err != nil {
			return fmt.Errorf("update %s: %w", name, err)
		}
	}
	if err := s.checkLease(); err != nil {
		return fmt.Errorf("update %s: %w", name, err)
	}
	cur, etag, exists, err := s.readRef(ctx, name)
	if err != nil {
		return err
	}
	if cur != old {
		return casError(name, cur, old)
	}
	cond := putCond{ifNoneMatch: !exists, ifMatch: etag}
	if s.opts.UnsafeNoConditionalWrites && !s.conditional() {
		cond = putPlain
	}
	err = s.putObject(ctx, name, refBody(new), cond)
	if !errors.Is(err, errPrecondition) {
		return err
	}
	if cur, _, _, err = s.readRef(ctx, name); err != nil {
		return err
	}
	if cur == new {
		return nil
	}
	return casError(name, cur, old)
}

// checkRemoteSnapshot checks that the bucket holds snapshot id, and so,
// by the closure invariant, everything it reaches.
func (s *S3) checkRemoteSnapshot(ctx context.Context, id objects.ID) error {
	var enc []byte
	err := s.Get(ctx, []objects.ID{id}, func(got objects.ID, stored []byte) error {
		var err error
		enc, err = objects.Unseal(got, stored)
		return err
	})
	if err != nil {
		return err
	}
	k, err := objects.KindOf(enc)
	if err != nil {
		return fmt.Errorf("object %s: %w: %v", id, objects.ErrCorrupt, err)
	}
	if k != objects.KindSnapshot {
		return fmt.Errorf("object %s is a %s: %w", id, k, ErrNotSnapshot)
	}
	return nil
}

// conditional reports whether the store was found to honour conditional
// writes.
func (s *S3) conditional() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.condWorks
}

// checkConditional makes sure, once, that the store honours conditional
// writes, by trying them on a probe object: If-None-Match: * must create
// it and then refuse to replace it, If-Match must refuse a wrong ETag
// and take the right one. A store that fails is refused unless
// UnsafeNoConditionalWrites is set.
func (s *S3) checkConditional(ctx context.Context) error {
	s.mu.Lock()
	done := s.condOK
	s.mu.Unlock()
	if done {
		return nil
	}
	key := "probe/" + randomName()
	missing, err := s.probeConditional(ctx, key)
	if derr := s.deleteObject(context.WithoutCancel(ctx), key); err == nil {
		err = derr
	}
	if err != nil {
		return err
	}
	if missing != "" && !s.opts.UnsafeNoConditionalWrites {
		return fmt.Errorf("remote %s: the store does not honour %s, and sbuml needs conditional writes to move refs safely when several hosts push; use a store that does, or, if only one host ever pushes, add the remote with --unsafe-no-conditional-writes", s.url, missing)
	}
	s.mu.Lock()
	s.condOK, s.condWorks = true, missing == ""
	s.mu.Unlock()
	return nil
}

// probeConditional tries conditional writes on key and says which the
// store does not honour ("" if it honours all).
func (s *S3) probeConditional(ctx context.Context, key string) (string, error) {
	const noneMatch, match = "If-None-Match: * on PutObject", "If-Match on PutObject"
	unsupported := func(err error, what string) (string, error) {
		if isS3NotImplemented(err) {
			return what, nil
		}
		return "", err
	}
	etag, err := s.putObjectETag(ctx, key, []byte("1"), putCond{ifNoneMatch: true})
	if errors.Is(err, errPrecondition) {
		// A first attempt that was retried did create it.
		_, etag, err = s.getObjectETag(ctx, key, 16)
	}
	if err != nil {
		return unsupported(err, noneMatch)
	}
	switch _, err := s.putObjectETag(ctx, key, []byte("2"), putCond{ifNoneMatch: true}); {
	case err == nil:
		return noneMatch + " (it replaced an existing object)", nil
	case !errors.Is(err, errPrecondition):
		return unsupported(err, noneMatch)
	}
	switch err := s.putObject(ctx, key, []byte("3"), putCond{ifMatch: `"0123456789abcdef0123456789abcdef"`}); {
	case err == nil:
		return match + " (it replaced an object whose ETag did not match)", nil
	case !errors.Is(err, errPrecondition):
		return unsupported(err, match)
	}
	if err := s.putObject(ctx, key, []byte("4"), putCond{ifMatch: etag}); err != nil {
		if errors.Is(err, errPrecondition) {
			return match + " (it refused the object's own ETag)", nil
		}
		return unsupported(err, match)
	}
	return "", nil
}
