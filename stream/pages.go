package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/sbuml/sbuml/chunker"
	"github.com/sbuml/sbuml/objects"
)

// PageRange is a run of pages of a stream cut into fixed-size chunks, by
// page number: Start included, End excluded.
type PageRange struct{ Start, End int }

// pageWindow is how many bytes of pages SavePages reads at once.
const pageWindow = 1 << 20

// SavePages stores r, len(ids) pages long, as a stream cut with p into
// one chunk per page (p.Chunking must be chunker.Fixed), as a new version
// of the stored stream base (Zero: none): the stream SaveStreamFrom would
// store for the same bytes and base, with the same index nodes, patch
// and IDs. Only the pages in changed (sorted, not overlapping) are read,
// hashed and stored; every other page k takes ids[k], its chunk ID (Zero
// for a page of zeros). The caller vouches that those pages hold that
// content and that their chunks are stored; idsOfBase says that they are
// also base's pages, so that only the changed pages are compared with
// base. On return ids holds every page's ID.
func (s *Saver) SavePages(ctx context.Context, r io.ReaderAt, p Params, ids []objects.ID, changed []PageRange, base objects.ID, idsOfBase bool) (objects.ID, *objects.Stream, error) {
	if err := p.Validate(); err != nil {
		return objects.Zero, nil, fmt.Errorf("save pages: %w", err)
	}
	if p.Chunking.Kind != chunker.Fixed {
		return objects.Zero, nil, errors.New("save pages: the stream parameters do not cut fixed-size chunks")
	}
	page := int(p.Chunking.Avg)
	for k, c := range changed {
		if c.Start < 0 || c.End > len(ids) || c.Start > c.End || k > 0 && c.Start < changed[k-1].End {
			return objects.Zero, nil, fmt.Errorf("save pages: changed pages %d-%d are out of order or beyond the %d pages", c.Start, c.End, len(ids))
		}
	}
	if err := s.hashPages(ctx, r, page, ids, changed); err != nil {
		return objects.Zero, nil, fmt.Errorf("save pages: %w", err)
	}
	s.countReused(ids, changed, page)
	root, patch, length, err := s.storePages(ctx, p, ids, changed, base, idsOfBase)
	if err != nil {
		return objects.Zero, nil, fmt.Errorf("save pages: %w", err)
	}
	st := &objects.Stream{Length: length, Chunking: p.chunking(), Fanout: p.Fanout, Root: root, Patch: patch}
	id, err := s.SaveObject(ctx, st.Encode())
	if err != nil {
		return objects.Zero, nil, fmt.Errorf("save pages: %w", err)
	}
	return id, st, nil
}

// storePages stores the index of the pages ids as a new version of
// base: a patch on base's tree, or a tree of its own (see
// SaveStreamFrom). Where the pages outside changed are base's
// (idsOfBase), the patch is worked out from base's patch, the changed
// pages and the nodes of base's tree above them, so its cost follows the
// change, not the stream's length; otherwise every page is compared with
// base's tree.
func (s *Saver) storePages(ctx context.Context, p Params, ids []objects.ID, changed []PageRange, base objects.ID, idsOfBase bool) (root, patch objects.ID, length uint64, err error) {
	if !idsOfBase {
		return s.storePagesCompared(ctx, p, ids, base)
	}
	page := uint64(p.Chunking.Avg)
	var st *objects.Stream
	if !base.IsZero() {
		if st, err = objects.LoadStream(ctx, s.store, base); err != nil {
			return objects.Zero, objects.Zero, 0, fmt.Errorf("save stream on %s: %w", base.Short(), err)
		}
	}
	if st != nil && ParamsOf(st) == p && !st.Root.IsZero() && st.Length == uint64(len(ids))*page {
		entries, err := s.pagesPatch(ctx, st, ids, changed, page)
		if err != nil {
			return objects.Zero, objects.Zero, 0, err
		}
		root, patch, done, err := s.savePatch(ctx, st, entries, page, p.Fanout)
		if done || err != nil {
			return root, patch, st.Length, err
		}
	}
	tree := newIndexBuilder(s.SaveObject, p.Fanout)
	for _, id := range ids {
		if err := tree.add(ctx, id, page); err != nil {
			return objects.Zero, objects.Zero, 0, err
		}
	}
	root, length, err = tree.finish(ctx)
	return root, objects.Zero, length, err
}

// storePagesCompared is storePages comparing every page with base's
// tree, as SaveStreamFrom does.
func (s *Saver) storePagesCompared(ctx context.Context, p Params, ids []objects.ID, base objects.ID) (root, patch objects.ID, length uint64, err error) {
	sink, err := s.versionSink(ctx, p, base)
	if err != nil {
		return objects.Zero, objects.Zero, 0, err
	}
	for _, id := range ids {
		if err := sink.add(ctx, id, uint64(p.Chunking.Avg)); err != nil {
			return objects.Zero, objects.Zero, 0, err
		}
	}
	return sink.finish(ctx)
}

// pagesPatch returns the entries of the patch on base's tree of a new
// version of base whose pages are ids, where only the pages in changed
// may differ from base: base's patch entries outside them, and the
// changed pages that differ from base's tree, neighbouring holes merged,
// as patchSink would list them reading every page.
func (s *Saver) pagesPatch(ctx context.Context, base *objects.Stream, ids []objects.ID, changed []PageRange, page uint64) ([]objects.PatchEntry, error) {
	var old []objects.PatchEntry
	if !base.Patch.IsZero() {
		p, err := objects.LoadPatch(ctx, s.store, base.Patch)
		if err != nil {
			return nil, err
		}
		old = p.Entries
	}
	tree := &treeLookup{ctx: ctx, store: s.store, root: base.Root, length: base.Length, nodes: map[objects.ID]*objects.Index{}}
	var out []objects.PatchEntry
	add := func(e objects.PatchEntry) {
		if k := len(out) - 1; e.ID.IsZero() && k >= 0 && out[k].ID.IsZero() && out[k].End() == e.Offset {
			out[k].Length += e.Length
			return
		}
		out = append(out, e)
	}
	// keep adds the part of old entries before offset end that lies
	// outside the changed pages.
	i := 0
	keep := func(from, end uint64) {
		for ; i < len(old) && old[i].Offset < end; i++ {
			e := old[i]
			if lo, hi := max(e.Offset, from), min(e.End(), end); lo < hi {
				add(objects.PatchEntry{Offset: lo, ID: e.ID, Length: hi - lo})
			}
			if e.End() > end {
				return // the rest of a hole runs past end
			}
		}
	}
	from := uint64(0)
	for _, c := range changed {
		keep(from, uint64(c.Start)*page)
		for k := c.Start; k < c.End; k++ {
			off := uint64(k) * page
			l, err := tree.leafAt(off)
			if err != nil {
				return nil, err
			}
			same := l.ID.IsZero() && ids[k].IsZero() || !ids[k].IsZero() && l.ID == ids[k] && l.Offset == off && l.Length == page
			if !same {
				add(objects.PatchEntry{Offset: off, ID: ids[k], Length: page})
			}
		}
		from = uint64(c.End) * page
		for i < len(old) && old[i].End() <= from {
			i++
		}
	}
	keep(from, base.Length)
	return out, nil
}

// treeLookup finds the leaves of an index tree at given offsets, loading
// only the nodes above them, each once.
type treeLookup struct {
	ctx    context.Context
	store  objects.Store
	root   objects.ID
	length uint64
	nodes  map[objects.ID]*objects.Index
}

// leafAt returns the chunk or hole of the tree that holds byte off.
func (t *treeLookup) leafAt(off uint64) (Leaf, error) {
	id, at, end := t.root, uint64(0), t.length
	for {
		x := t.nodes[id]
		if x == nil {
			var err error
			if x, err = objects.LoadIndex(t.ctx, t.store, id); err != nil {
				return Leaf{}, err
			}
			t.nodes[id] = x
		}
		if x.Length() != end-at {
			return Leaf{}, fmt.Errorf("index node %s: %w: its entries cover %d bytes, its parent says %d", id, objects.ErrCorrupt, x.Length(), end-at)
		}
		found := false
		for _, e := range x.Entries {
			if off < at+e.Length {
				if x.Level == 0 || e.ID.IsZero() {
					return Leaf{Offset: at, IndexEntry: e}, nil
				}
				id, end, found = e.ID, at+e.Length, true
				break
			}
			at += e.Length
		}
		if !found {
			return Leaf{}, fmt.Errorf("index node %s: %w: byte %d is beyond its entries", id, objects.ErrCorrupt, off)
		}
	}
}

// countReused adds every page to the logical bytes, and the pages not
// hashed to the holes or chunks (process counts those it hashes).
func (s *Saver) countReused(ids []objects.ID, changed []PageRange, page int) {
	s.logical.Add(int64(len(ids)) * int64(page))
	var holes, chunks int64
	next := 0
	count := func(from, to int) {
		for _, id := range ids[from:to] {
			if id.IsZero() {
				holes += int64(page)
			} else {
				chunks++
			}
		}
	}
	for _, c := range changed {
		count(next, c.Start)
		next = c.End
	}
	count(next, len(ids))
	s.holes.Add(holes)
	s.chunks.Add(chunks)
}

// hashPages reads the changed pages a window at a time and has the
// workers hash and store them, like the chunks SaveStream cuts, writing
// their IDs into ids. A page whose ID in ids was not Zero may be stored
// as a delta on that previous version (see putChunk).
func (s *Saver) hashPages(ctx context.Context, r io.ReaderAt, page int, ids []objects.ID, changed []PageRange) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	type batch struct {
		pages []int
		res   chan []result
	}
	pending := make(chan batch, 64)
	collected := make(chan error, 1)
	go func() {
		var err error
		for bt := range pending {
			rs := <-bt.res
			for i, r := range rs {
				if err == nil && r.err != nil {
					err = r.err
					cancel(err)
				}
				ids[bt.pages[i]] = r.id
			}
		}
		collected <- err
	}()
	s.cutting.Add(1)
	var bufs scratch
	pool := sync.Pool{New: func() any { return make([]byte, pageWindow) }}
	var readErr error
	for w := range pageWindows(changed, pageWindow/page) {
		blk := &block{buf: pool.Get().([]byte)[:(w.last-w.first+1)*page]}
		blk.free = func(b *block) { pool.Put(b.buf[:cap(b.buf)]) }
		blk.refs.Store(1)
		if _, err := r.ReadAt(blk.buf, int64(w.first)*int64(page)); err != nil {
			readErr = err
			break
		}
		for k := 0; k < len(w.pages) && readErr == nil; k += batchChunks {
			pages := w.pages[k:min(k+batchChunks, len(w.pages))]
			spans := make([]span, len(pages))
			prev := make([]objects.ID, len(pages))
			for i, pg := range pages {
				spans[i] = span{(pg - w.first) * page, (pg - w.first + 1) * page}
				prev[i] = ids[pg] // the collector sets it only once this job is done
			}
			blk.refs.Add(1)
			rc := make(chan []result, 1)
			s.dispatch(&job{ctx: ctx, blk: blk, spans: spans, res: rc, prev: prev}, &bufs)
			select {
			case pending <- batch{pages, rc}:
			case <-ctx.Done():
				readErr = context.Cause(ctx)
			}
		}
		blk.release()
		if readErr != nil {
			break
		}
	}
	s.cutting.Add(-1)
	close(pending)
	if err := <-collected; err != nil && (readErr == nil || errors.Is(readErr, context.Canceled)) {
		readErr = err
	}
	return readErr
}

// dispatch hands j to an idle worker, or processes it here if there is
// none or every core is cutting already.
func (s *Saver) dispatch(j *job, bufs *scratch) {
	if s.cutting.Load() >= int32(s.workers) {
		s.process(j, bufs)
		return
	}
	select {
	case s.jobs <- j:
	default:
		s.process(j, bufs)
	}
}

// pageSpan is the changed pages in one aligned window of pages: first
// and last are the first and last of them.
type pageSpan struct {
	first, last int
	pages       []int
}

// pageWindows yields, window by window of per pages, the changed pages in
// it.
func pageWindows(changed []PageRange, per int) func(yield func(pageSpan) bool) {
	return func(yield func(pageSpan) bool) {
		var cur pageSpan
		window := -1
		for _, c := range changed {
			for pg := c.Start; pg < c.End; pg++ {
				if w := pg / per; w != window {
					if len(cur.pages) > 0 && !yield(cur) {
						return
					}
					window, cur = w, pageSpan{first: pg}
				}
				cur.pages = append(cur.pages, pg)
				cur.last = pg
			}
		}
		if len(cur.pages) > 0 {
			yield(cur)
		}
	}
}
