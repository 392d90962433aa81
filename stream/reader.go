package stream

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"

	"github.com/sbuml/sbuml/objects"
)

// Leaf is one level-0 index entry with its offset in the stream.
type Leaf struct {
	Offset uint64
	objects.IndexEntry
}

// End returns the offset just after the leaf.
func (l Leaf) End() uint64 { return l.Offset + l.Length }

// Leaves calls fn for every chunk and hole of st in stream order: the
// level-0 entries of its index tree, with those a patch node replaces
// left out and the patch's entries in their place (a hole of the tree
// may be split around them). It checks that every node's entry lengths
// add up to what its parent says, and that the patch replaces whole
// chunks.
func Leaves(ctx context.Context, store objects.Store, st *objects.Stream, fn func(Leaf) error) error {
	if st.Root.IsZero() {
		return nil
	}
	if st.Patch.IsZero() {
		return treeLeaves(ctx, store, st, nil, fn)
	}
	p, err := objects.LoadPatch(ctx, store, st.Patch)
	if err != nil {
		return err
	}
	if p.End() > st.Length {
		return fmt.Errorf("patch node %s: %w: ends at byte %d of a %d-byte stream", st.Patch, objects.ErrCorrupt, p.End(), st.Length)
	}
	pt := &patcher{entries: p.Entries, fn: fn}
	if err := treeLeaves(ctx, store, st, nil, pt.leaf); err != nil {
		return fmt.Errorf("patch node %s: %w", st.Patch.Short(), err)
	}
	return nil
}

// patcher merges a patch's entries into the leaves of a tree.
type patcher struct {
	entries []objects.PatchEntry
	pos     uint64 // stream bytes passed on so far
	fn      func(Leaf) error
}

// leaf takes the tree's next leaf l and passes on what of it the patch
// does not replace, and the patch entries up to its end.
func (pt *patcher) leaf(l Leaf) error {
	for pt.pos < l.End() {
		if len(pt.entries) > 0 && pt.entries[0].Offset == pt.pos {
			e := pt.entries[0]
			pt.entries = pt.entries[1:]
			pt.pos = e.End()
			if err := pt.fn(Leaf{Offset: e.Offset, IndexEntry: objects.IndexEntry{ID: e.ID, Length: e.Length}}); err != nil {
				return err
			}
			continue
		}
		next := l.End()
		if len(pt.entries) > 0 && pt.entries[0].Offset < next {
			next = pt.entries[0].Offset
		}
		if !l.ID.IsZero() && (pt.pos != l.Offset || next != l.End()) {
			return fmt.Errorf("%w: an entry cuts chunk %s at byte %d", objects.ErrCorrupt, l.ID.Short(), l.Offset)
		}
		if err := pt.fn(Leaf{Offset: pt.pos, IndexEntry: objects.IndexEntry{ID: l.ID, Length: next - pt.pos}}); err != nil {
			return err
		}
		pt.pos = next
	}
	return nil
}

// treeLeaves walks the index tree of st (not its patch) and calls fn for
// every level-0 entry in stream order, and node, unless nil, for every
// index node's ID.
func treeLeaves(ctx context.Context, store objects.Store, st *objects.Stream, node func(objects.ID), fn func(Leaf) error) error {
	var off uint64
	var walk func(id objects.ID, want uint64, level int) error
	walk = func(id objects.ID, want uint64, level int) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		x, err := objects.LoadIndex(ctx, store, id)
		if err != nil {
			return err
		}
		if node != nil {
			node(id)
		}
		if want != 0 && x.Length() != want {
			return fmt.Errorf("index node %s: %w: covers %d bytes, parent says %d", id, objects.ErrCorrupt, x.Length(), want)
		}
		if level >= 0 && int(x.Level) != level {
			return fmt.Errorf("index node %s: %w: level %d under a level %d node", id, objects.ErrCorrupt, x.Level, level+1)
		}
		for _, e := range x.Entries {
			if x.Level == 0 {
				if err := fn(Leaf{Offset: off, IndexEntry: e}); err != nil {
					return err
				}
				off += e.Length
				continue
			}
			if err := walk(e.ID, e.Length, int(x.Level)-1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(st.Root, st.Length, -1); err != nil {
		return err
	}
	if off != st.Length {
		return fmt.Errorf("stream root %s: %w: index covers %d bytes, stream says %d", st.Root, objects.ErrCorrupt, off, st.Length)
	}
	return nil
}

// Extract writes stream id into f, which must be empty (freshly created or
// truncated): chunks are fetched and written on several workers at their
// offsets, holes are left unwritten so they stay holes, and the file is
// sized to the stream's length.
func Extract(ctx context.Context, store objects.Store, id objects.ID, f *os.File) error {
	st, err := objects.LoadStream(ctx, store, id)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	leaves := make(chan Leaf, 64)
	var wg sync.WaitGroup
	for i := 0; i < runtime.GOMAXPROCS(0); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for l := range leaves {
				if ctx.Err() != nil {
					continue
				}
				if err := writeLeaf(ctx, store, f, l); err != nil {
					cancel(err)
				}
			}
		}()
	}
	walkErr := Leaves(ctx, store, st, func(l Leaf) error {
		if l.ID.IsZero() {
			return nil
		}
		select {
		case leaves <- l:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	})
	close(leaves)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return fmt.Errorf("extract stream %s: %w", id.Short(), err)
	}
	if walkErr != nil {
		return fmt.Errorf("extract stream %s: %w", id.Short(), walkErr)
	}
	if err := f.Truncate(int64(st.Length)); err != nil {
		return fmt.Errorf("extract stream %s: %w", id.Short(), err)
	}
	return nil
}

func writeLeaf(ctx context.Context, store objects.Store, f *os.File, l Leaf) error {
	data, err := objects.LoadChunk(ctx, store, l.ID)
	if err != nil {
		return err
	}
	if uint64(len(data)) != l.Length {
		return fmt.Errorf("chunk %s: %w: %d bytes, index says %d", l.ID, objects.ErrCorrupt, len(data), l.Length)
	}
	_, err = f.WriteAt(data, int64(l.Offset))
	return err
}

// Copy writes stream id to w in order, holes as zero bytes, fetching the
// next chunks ahead on several workers. It returns the number of bytes written.
func Copy(ctx context.Context, store objects.Store, id objects.ID, w io.Writer) (int64, error) {
	st, err := objects.LoadStream(ctx, store, id)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	pending := make(chan piece, 8*runtime.GOMAXPROCS(0))
	go fetchAhead(ctx, cancel, store, st, pending)
	written := writePieces(ctx, cancel, w, pending)
	if err := context.Cause(ctx); err != nil {
		return written, fmt.Errorf("copy stream %s: %w", id.Short(), err)
	}
	return written, nil
}

// piece is one leaf of a stream on its way to Copy's writer: a hole of
// length hole, or a chunk whose bytes arrive on data.
type piece struct {
	hole uint64
	data chan []byte
}

// fetchAhead sends the leaves of st to pending in order, each chunk's
// bytes loaded by a goroutine of its own, at most twice as many at once
// as there are cores. It closes pending when done, and cancels ctx with
// the first error.
func fetchAhead(ctx context.Context, cancel context.CancelCauseFunc, store objects.Store, st *objects.Stream, pending chan<- piece) {
	defer close(pending)
	sem := make(chan struct{}, 2*runtime.GOMAXPROCS(0))
	err := Leaves(ctx, store, st, func(l Leaf) error {
		p := piece{hole: l.Length}
		if !l.ID.IsZero() {
			p = piece{data: make(chan []byte, 1)}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			go func() {
				defer func() { <-sem }()
				data, err := objects.LoadChunk(ctx, store, l.ID)
				if err == nil && uint64(len(data)) != l.Length {
					err = fmt.Errorf("chunk %s: %w: %d bytes, index says %d", l.ID, objects.ErrCorrupt, len(data), l.Length)
				}
				if err != nil {
					cancel(err)
				}
				p.data <- data
			}()
		}
		select {
		case pending <- p:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	})
	if err != nil {
		cancel(err)
	}
}

// writePieces writes the pieces to w as they come, holes as zeros, and
// returns the bytes written. After an error (it cancels ctx with it) it
// drains pending without writing.
func writePieces(ctx context.Context, cancel context.CancelCauseFunc, w io.Writer, pending <-chan piece) int64 {
	var written int64
	zeros := make([]byte, 64<<10)
	for p := range pending {
		if ctx.Err() != nil {
			continue // drain
		}
		var err error
		if p.data == nil {
			for n := p.hole; n > 0 && err == nil; {
				k := min(n, uint64(len(zeros)))
				var m int
				m, err = w.Write(zeros[:k])
				written += int64(m)
				n -= k
			}
		} else if data := <-p.data; ctx.Err() == nil {
			var m int
			m, err = w.Write(data)
			written += int64(m)
		}
		if err != nil {
			cancel(err)
		}
	}
	return written
}
