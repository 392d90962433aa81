package stream

import (
	"context"
	"sort"

	"github.com/sbuml/sbuml/objects"
)

// Lookup finds the chunk or hole of a stream that holds a given byte,
// loading only the index nodes on the way to it (each once) and the
// stream's patch node: the first pages a restored guest touches can be
// served before the whole index, a million entries for 4 GiB of RAM, is
// read. A Lookup is for one goroutine at a time.
type Lookup struct {
	tree  *treeLookup // nil for a stream whose tree is all hole
	patch []objects.PatchEntry
}

// NewLookup returns a Lookup for st, having read its patch node, if it
// has one.
func NewLookup(ctx context.Context, store objects.Store, st *objects.Stream) (*Lookup, error) {
	l := &Lookup{}
	if !st.Root.IsZero() {
		l.tree = &treeLookup{ctx: ctx, store: store, root: st.Root, length: st.Length, nodes: map[objects.ID]*objects.Index{}}
	}
	if !st.Patch.IsZero() {
		p, err := objects.LoadPatch(ctx, store, st.Patch)
		if err != nil {
			return nil, err
		}
		l.patch = p.Entries
	}
	return l, nil
}

// LeafAt returns the chunk or hole that holds byte off of the stream (a
// patch entry where the patch replaces the tree's chunk). A hole of the
// tree is returned whole, though a patch entry may cut it.
func (l *Lookup) LeafAt(off uint64) (Leaf, error) {
	i := sort.Search(len(l.patch), func(i int) bool { return l.patch[i].End() > off })
	if i < len(l.patch) && l.patch[i].Offset <= off {
		e := l.patch[i]
		return Leaf{Offset: e.Offset, IndexEntry: objects.IndexEntry{ID: e.ID, Length: e.Length}}, nil
	}
	if l.tree == nil {
		return Leaf{Offset: off, IndexEntry: objects.IndexEntry{Length: 1}}, nil
	}
	return l.tree.leafAt(off)
}
