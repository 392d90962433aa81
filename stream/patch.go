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
	ps := &patchSink{saver: s, fanout: p.Fanout, chunk: uint64(p.Chunking.Avg), base: st}
	if err := treeLeaves(ctx, s.store, st, nil, func(l Leaf) error {
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
	chunk  uint64 // the size of every chunk
	leaves []Leaf // the base tree's leaves
	next   int    // the first leaf that may overlap the next entry

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
	if ps.length == ps.base.Length {
		root, patch, done, err := ps.saver.savePatch(ctx, ps.base, ps.patch, ps.chunk, ps.fanout)
		if done || err != nil {
			return root, patch, ps.length, err
		}
	}
	tree := newIndexBuilder(ps.saver.SaveObject, ps.fanout)
	if err := ps.replay(ctx, tree); err != nil {
		return objects.Zero, objects.Zero, 0, err
	}
	root, n, err := tree.finish(ctx)
	return root, objects.Zero, n, err
}

// savePatch stores entries, the differences of a new version of base
// from base's tree, as a patch node if it pays, and returns the new
// version's root and patch: base's tree alone if nothing differs. done
// is false if the patch does not pay: the version needs a tree of its
// own.
func (s *Saver) savePatch(ctx context.Context, base *objects.Stream, entries []objects.PatchEntry, chunk uint64, fanout uint32) (root, patch objects.ID, done bool, err error) {
	if len(entries) == 0 {
		return base.Root, objects.Zero, true, nil
	}
	if len(entries) > maxPatchEntries {
		return objects.Zero, objects.Zero, false, nil
	}
	enc := (&objects.Patch{Entries: entries}).Encode()
	if int64(len(enc))*patchAdvantage > treeCost(entries, chunk, fanout, base.Length) {
		return objects.Zero, objects.Zero, false, nil
	}
	id, err := s.SaveObject(ctx, enc)
	return base.Root, id, err == nil, err
}

// indexEntryBytes is about what an entry of an index node takes.
const indexEntryBytes = objects.IDSize + 3

// treeCost estimates the bytes of the nodes a tree of the stream's own
// would add to its base's, from the entries of the patch alone: on each
// level, one node of fanout entries for every span of chunks (fanout
// chunks on level 0, fanout times as many on each level above) that an
// entry falls in, and a root. Index nodes end where an entry's ID matches
// the fanout mask, so a node covers about fanout entries; the estimate
// costs what the patch costs, not what the stream does.
func treeCost(entries []objects.PatchEntry, chunk uint64, fanout uint32, length uint64) int64 {
	var cost int64
	node := int64(fanout) * indexEntryBytes
	for span := chunk * uint64(fanout); ; span *= uint64(fanout) {
		var spans int64
		next := uint64(0) // the first span not counted yet
		for _, e := range entries {
			first, last := max(e.Offset/span, next), (e.End()-1)/span
			if last >= first {
				spans += int64(last - first + 1)
				next = last + 1
			}
		}
		cost += spans * node
		if span >= length || span > (1<<63)/uint64(fanout) {
			return cost
		}
	}
}

func (ps *patchSink) replay(ctx context.Context, b *indexBuilder) error {
	for _, e := range ps.entries {
		if err := b.add(ctx, e.ID, e.Length); err != nil {
			return err
		}
	}
	return nil
}
