package stream

import (
	"context"
	"fmt"
	"io"

	"github.com/sbuml/sbuml/chunker"
	"github.com/sbuml/sbuml/objects"
)

// A patch is written instead of a tree of the stream's own only when it
// takes at most 1/patchAdvantage of the bytes of the tree's new nodes:
// a patch holds every difference from its base's tree, so the next
// version pays for it again, while the tree's nodes are paid once.
const patchAdvantage = 4

// maxPatchEntries bounds a patch node's size (about 38 bytes an entry).
const maxPatchEntries = 1 << 18

// SaveStreamFrom stores r like SaveStream, as a new version of the stored
// stream base (Zero: none). If r is cut into fixed-size chunks like base
// was, with base's fanout, and is as long, the new stream may name base's
// index tree and a patch node listing the chunks and holes that differ
// from that tree: it does when the patch is much smaller than the new
// nodes of a tree of its own (see patchAdvantage). The result depends
// only on base's tree and r's bytes, like SaveStream's on r's bytes.
func (s *Saver) SaveStreamFrom(ctx context.Context, r io.Reader, p Params, base objects.ID) (objects.ID, *objects.Stream, error) {
	if err := p.Validate(); err != nil {
		return objects.Zero, nil, fmt.Errorf("save stream: %w", err)
	}
	sink, err := s.versionSink(ctx, p, base)
	if err != nil {
		return objects.Zero, nil, err
	}
	return s.save(ctx, r, p, sink)
}

// versionSink returns where the entries of a new version of the stream
// base go: a patchSink on base's tree where a patch may be written (see
// SaveStreamFrom), else a tree of the stream's own.
func (s *Saver) versionSink(ctx context.Context, p Params, base objects.ID) (entrySink, error) {
	tree := treeSink{newIndexBuilder(s.SaveObject, p.Fanout)}
	if base.IsZero() || p.Chunking.Kind != chunker.Fixed {
		return tree, nil
	}
	st, err := objects.LoadStream(ctx, s.store, base)
	if err != nil {
		return nil, fmt.Errorf("save stream on %s: %w", base.Short(), err)
	}
	if ParamsOf(st) != p || st.Root.IsZero() {
		return tree, nil
	}
	ps := &patchSink{saver: s, fanout: p.Fanout, base: st, nodes: objects.Seen{}}
	if err := treeLeaves(ctx, s.store, st, func(id objects.ID) { ps.nodes.Add(id) }, func(l Leaf) error {
		ps.leaves = append(ps.leaves, l)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("save stream on %s: %w", base.Short(), err)
	}
	return ps, nil
}

// patchSink collects a stream's entries and compares them with the
// leaves of a base tree as they come; at the end it writes either a patch
// of the differences or a tree of the stream's own, whichever is smaller
// by the rule of patchAdvantage.
type patchSink struct {
	saver  *Saver
	fanout uint32
	base   *objects.Stream
	leaves []Leaf       // the base tree's leaves
	nodes  objects.Seen // the base tree's index nodes
	next   int          // the first leaf that may overlap the next entry

	entries []objects.IndexEntry // the stream's own, for a tree
	patch   []objects.PatchEntry
	length  uint64
}

func (ps *patchSink) add(_ context.Context, id objects.ID, n uint64) error {
	ps.entries = append(ps.entries, objects.IndexEntry{ID: id, Length: n})
	off := ps.length
	ps.length += n
	if ps.same(off, id, n) {
		return nil
	}
	if k := len(ps.patch) - 1; id.IsZero() && k >= 0 && ps.patch[k].ID.IsZero() && ps.patch[k].End() == off {
		ps.patch[k].Length += n
		return nil
	}
	ps.patch = append(ps.patch, objects.PatchEntry{Offset: off, ID: id, Length: n})
	return nil
}

// same reports whether the base tree holds the entry (id, n) at off: the
// same chunk at the same place, or a hole around it.
func (ps *patchSink) same(off uint64, id objects.ID, n uint64) bool {
	for ps.next < len(ps.leaves) && ps.leaves[ps.next].End() <= off {
		ps.next++
	}
	if ps.next == len(ps.leaves) {
		return false
	}
	l := ps.leaves[ps.next]
	if id.IsZero() {
		return l.ID.IsZero() && l.Offset <= off && off+n <= l.End()
	}
	return l.ID == id && l.Offset == off && l.Length == n
}

// finish writes the patch if the stream is as long as its base and the
// patch pays, else the stream's own tree.
func (ps *patchSink) finish(ctx context.Context) (objects.ID, objects.ID, uint64, error) {
	if ps.length == ps.base.Length && len(ps.patch) == 0 {
		return ps.base.Root, objects.Zero, ps.length, nil
	}
	if ps.length == ps.base.Length && len(ps.patch) <= maxPatchEntries {
		enc := (&objects.Patch{Entries: ps.patch}).Encode()
		treeCost, err := ps.treeCost(ctx)
		if err != nil {
			return objects.Zero, objects.Zero, 0, err
		}
		if int64(len(enc))*patchAdvantage <= treeCost {
			id, err := ps.saver.SaveObject(ctx, enc)
			return ps.base.Root, id, ps.length, err
		}
	}
	tree := newIndexBuilder(ps.saver.SaveObject, ps.fanout)
	if err := ps.replay(ctx, tree); err != nil {
		return objects.Zero, objects.Zero, 0, err
	}
	root, n, err := tree.finish(ctx)
	return root, objects.Zero, n, err
}

// treeCost returns the size of the nodes of the stream's own tree that
// the base tree lacks, computed without storing them.
func (ps *patchSink) treeCost(ctx context.Context) (int64, error) {
	var cost int64
	dry := newIndexBuilder(func(_ context.Context, enc []byte) (objects.ID, error) {
		id := objects.Sum(enc)
		if _, ok := ps.nodes[id]; !ok {
			cost += int64(len(enc))
		}
		return id, nil
	}, ps.fanout)
	if err := ps.replay(ctx, dry); err != nil {
		return 0, err
	}
	_, _, err := dry.finish(ctx)
	return cost, err
}

func (ps *patchSink) replay(ctx context.Context, b *indexBuilder) error {
	for _, e := range ps.entries {
		if err := b.add(ctx, e.ID, e.Length); err != nil {
			return err
		}
	}
	return nil
}
