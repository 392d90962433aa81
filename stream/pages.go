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
// hashed and stored; every other page k takes ids[k], the chunk ID the
// page had in a stream of r's earlier content (Zero for a page of zeros).
// The caller vouches that those pages still hold that content and that
// their chunks are stored. On return ids holds every page's ID.
func (s *Saver) SavePages(ctx context.Context, r io.ReaderAt, p Params, ids []objects.ID, changed []PageRange, base objects.ID) (objects.ID, *objects.Stream, error) {
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
	sink, err := s.versionSink(ctx, p, base)
	if err != nil {
		return objects.Zero, nil, fmt.Errorf("save pages: %w", err)
	}
	for _, id := range ids {
		if err := sink.add(ctx, id, uint64(page)); err != nil {
			return objects.Zero, nil, fmt.Errorf("save pages: %w", err)
		}
	}
	root, patch, length, err := sink.finish(ctx)
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
// their IDs into ids.
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
			for i, pg := range pages {
				spans[i] = span{(pg - w.first) * page, (pg - w.first + 1) * page}
			}
			blk.refs.Add(1)
			rc := make(chan []result, 1)
			s.dispatch(&job{ctx: ctx, blk: blk, spans: spans, res: rc}, &bufs)
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
