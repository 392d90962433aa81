package stream

import (
	"context"
	"encoding/binary"

	"github.com/sbuml/sbuml/objects"
)

// indexBuilder assembles a stream's index tree bottom-up as entries arrive
// in stream order. An entry ends its node when the low bits of its ID's
// first four bytes (little endian) are all ones under the fanout mask, or
// when the node reaches 4*fanout entries. Holes never end a node, and
// neighbouring holes merge into one entry.
type indexBuilder struct {
	save   saveFunc
	mask   uint32
	max    int
	levels []level
	length uint64
}

type level struct {
	entries []objects.IndexEntry
	emitted int // nodes flushed from this level so far
}

// saveFunc stores a node's encoding (or only hashes it, for a builder
// that estimates a tree's cost) and returns its ID.
type saveFunc func(ctx context.Context, enc []byte) (objects.ID, error)

func newIndexBuilder(save saveFunc, fanout uint32) *indexBuilder {
	return &indexBuilder{save: save, mask: fanout - 1, max: 4 * int(fanout), levels: make([]level, 1)}
}

// endsNode reports whether an entry naming id closes its node.
func (b *indexBuilder) endsNode(id objects.ID) bool {
	return !id.IsZero() && binary.LittleEndian.Uint32(id[:4])&b.mask == b.mask
}

// add appends a level-0 entry: a chunk, or a hole when id is Zero.
func (b *indexBuilder) add(ctx context.Context, id objects.ID, n uint64) error {
	b.length += n
	l := &b.levels[0]
	if id.IsZero() && len(l.entries) > 0 && l.entries[len(l.entries)-1].ID.IsZero() {
		l.entries[len(l.entries)-1].Length += n
		return nil
	}
	return b.push(ctx, 0, objects.IndexEntry{ID: id, Length: n})
}

func (b *indexBuilder) push(ctx context.Context, lv int, e objects.IndexEntry) error {
	l := &b.levels[lv]
	l.entries = append(l.entries, e)
	if b.endsNode(e.ID) || len(l.entries) >= b.max {
		return b.flush(ctx, lv)
	}
	return nil
}

// flush writes the pending entries of level lv as one node and pushes an
// entry for it to the level above.
func (b *indexBuilder) flush(ctx context.Context, lv int) error {
	id, n, err := b.write(ctx, lv)
	if err != nil {
		return err
	}
	b.levels[lv].emitted++
	if lv+1 == len(b.levels) {
		b.levels = append(b.levels, level{})
	}
	return b.push(ctx, lv+1, objects.IndexEntry{ID: id, Length: n})
}

func (b *indexBuilder) write(ctx context.Context, lv int) (objects.ID, uint64, error) {
	l := &b.levels[lv]
	x := objects.Index{Level: uint8(lv), Entries: l.entries}
	n := x.Length()
	id, err := b.save(ctx, x.Encode())
	l.entries = l.entries[:0]
	return id, n, err
}

// finish flushes every level and returns the root node and the stream length.
func (b *indexBuilder) finish(ctx context.Context) (objects.ID, uint64, error) {
	if b.length == 0 {
		return objects.Zero, 0, nil
	}
	for lv := 0; ; lv++ {
		l := &b.levels[lv]
		if l.emitted == 0 {
			// Everything below ended up in this level's pending entries:
			// they form the root, unless a single node is already the root.
			if lv > 0 && len(l.entries) == 1 {
				return l.entries[0].ID, b.length, nil
			}
			id, _, err := b.write(ctx, lv)
			return id, b.length, err
		}
		if len(l.entries) > 0 {
			if err := b.flush(ctx, lv); err != nil {
				return objects.Zero, 0, err
			}
		}
		if lv+1 >= objects.MaxIndexLevel {
			break
		}
	}
	panic("stream: index tree deeper than objects.MaxIndexLevel")
}
