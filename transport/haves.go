package transport

import (
	"context"

	"github.com/sbuml/sbuml/chunker"
	"github.com/sbuml/sbuml/objects"
)

// Bounds of the search for bases among a pushed snapshot's ancestors.
const (
	// baseWalk is the number of ancestors looked at: a push of a longer
	// unpushed history negotiates in full, as without haves.
	baseWalk = 1024
	// baseMax is the number of bases a pushed snapshot is walked against
	// (more than one after merges).
	baseMax = 2
)

// A counterpart is what stands, in the snapshots the remote holds, where
// an object of the pushed snapshot stands: the nearest ancestors of the
// pushed snapshot that the remote holds (its bases) for the pushed
// snapshot, their trees for its tree, the entries of the same name for a
// tree's entry, and for an index node the nodes of the base's stream at
// the same level and offset. Everything a counterpart references is on
// the remote (if the haves are right), so a new object's reference that
// is among them needs no question. Only new objects have counterparts
// looked up, so the cost follows the change, not the snapshot's size.
type counterpart struct {
	ids []objects.ID // snapshots, trees or streams
	old *oldStream   // for an index node: the base's stream
	off uint64       // for an index node: its offset in its stream
	// patch is set for the patch node of a patched stream: it lists the
	// chunks that differ from the base's stream where they stand.
	patch bool
}

// oldStream is the index tree of a base's stream, loaded only as far as
// the push needs it.
type oldStream struct {
	root    objects.ID
	aligned bool // see counterpart.aligned
	nodes   map[objects.ID]*objects.Index
}

// bases returns the counterpart of root: its nearest ancestors (root
// included) that the remote holds, by the haves or by its own answer,
// or nil if there is none. It lists at most baseWalk ancestors
// breadth-first, not beyond a have, and asks the remote about the
// others in the list's order, in windows that double (2, 4, 8...) until
// it holds one, so a base a few generations back costs a question or
// two, and one far back a few round trips, never one per generation.
// Every snapshot looked at is recorded in f.onRemote.
func (f *finder) bases(ctx context.Context, root objects.ID, haves objects.Seen) (*counterpart, error) {
	list, err := ancestors(ctx, f.local, root, haves)
	if err != nil {
		return nil, err
	}
	for lo, size := 0, 2; lo < len(list); lo, size = lo+size, size*2 {
		hi := min(len(list), lo+size)
		var ask []objects.ID
		for _, id := range list[lo:hi] {
			if _, ok := haves[id]; ok {
				f.onRemote[id] = true
			} else if _, ok := f.onRemote[id]; !ok {
				ask = append(ask, id)
			}
		}
		answers, err := hasMany(ctx, f.remote, ask, f.concurrency)
		if err != nil {
			return nil, err
		}
		for i, id := range ask {
			f.onRemote[id] = answers[i]
		}
		var found []objects.ID
		for _, id := range list[:hi] {
			if f.onRemote[id] && len(found) < baseMax {
				found = append(found, id)
			}
		}
		if len(found) > 0 {
			return &counterpart{ids: found}, nil
		}
	}
	return nil, nil
}

// ancestors lists root and its ancestors in local breadth-first, at most
// baseWalk of them, not beyond a have, and none after the first have
// (the remote is not asked about snapshots farther than a have).
func ancestors(ctx context.Context, local objects.Store, root objects.ID, haves objects.Seen) ([]objects.ID, error) {
	seen := objects.Seen{}
	seen.Add(root)
	list := []objects.ID{root}
	for i := 0; i < len(list) && len(list) < baseWalk; i++ {
		if _, ok := haves[list[i]]; ok {
			return list[:i+1], nil
		}
		sn, err := objects.LoadSnapshot(ctx, local, list[i])
		if err != nil {
			return nil, err
		}
		for _, p := range sn.Parents {
			if seen.Add(p) {
				list = append(list, p)
			}
		}
	}
	return list, nil
}

// match loads from local what stands in the bases where enc, a new
// object of kind k whose references are refs, stands; it adds to known
// whatever there the references may be, and returns the counterparts of
// the references (nil where there is none).
func (cp *counterpart) match(ctx context.Context, local objects.Store, k objects.Kind, enc []byte, refs []objects.Ref, known objects.Seen) ([]*counterpart, error) {
	if cp == nil {
		return make([]*counterpart, len(refs)), nil
	}
	switch k {
	case objects.KindSnapshot:
		return cp.matchSnapshot(ctx, local, refs, known)
	case objects.KindTree:
		return cp.matchTree(ctx, local, enc, known)
	case objects.KindStream:
		return cp.matchStream(ctx, local, enc, known)
	case objects.KindIndex:
		return cp.matchIndex(ctx, local, enc, known)
	}
	return make([]*counterpart, len(refs)), nil
}

// matchSnapshot: the bases' trees stand where the tree stands, and the
// bases where a parent not yet pushed stands.
func (cp *counterpart) matchSnapshot(ctx context.Context, local objects.Store, refs []objects.Ref, known objects.Seen) ([]*counterpart, error) {
	trees := &counterpart{}
	for _, id := range cp.ids {
		sn, err := objects.LoadSnapshot(ctx, local, id)
		if err != nil {
			return nil, err
		}
		known.Add(sn.Tree)
		for _, p := range sn.Parents {
			known.Add(p)
		}
		trees.ids = append(trees.ids, sn.Tree)
	}
	out := make([]*counterpart, len(refs))
	for i, r := range refs {
		if r.Kind == objects.KindTree {
			out[i] = trees
		} else {
			out[i] = cp
		}
	}
	return out, nil
}

// matchTree: the entries of the same name and kind stand where an entry
// stands.
func (cp *counterpart) matchTree(ctx context.Context, local objects.Store, enc []byte, known objects.Seen) ([]*counterpart, error) {
	t, err := objects.DecodeTree(enc)
	if err != nil {
		return nil, err
	}
	old := map[string]*counterpart{}
	for _, id := range cp.ids {
		ot, err := objects.LoadTree(ctx, local, id)
		if err != nil {
			return nil, err
		}
		for _, e := range ot.Entries {
			known.Add(e.ID)
			if t.Find(e.Name) == nil {
				continue
			}
			key := e.Name + "\x00" + e.Kind.String()
			if old[key] == nil {
				old[key] = &counterpart{}
			}
			old[key].ids = append(old[key].ids, e.ID)
		}
	}
	out := make([]*counterpart, len(t.Entries))
	for i, e := range t.Entries {
		if e.Kind != objects.EntrySymlink {
			out[i] = old[e.Name+"\x00"+e.Kind.String()]
		}
	}
	return out, nil
}

// matchStream: the index tree of the first counterpart stream stands
// where the stream's index tree stands. A patched stream (see
// objects.Patch) also names a patch node, which lists what differs from
// its tree: in a stream of fixed-size chunks whose base is cut the same
// way, those are pages the base holds no copy of where they stand.
func (cp *counterpart) matchStream(ctx context.Context, local objects.Store, enc []byte, known objects.Seen) ([]*counterpart, error) {
	st, err := objects.DecodeStream(enc)
	if err != nil {
		return nil, err
	}
	out := make([]*counterpart, 0, 2)
	for _, id := range cp.ids {
		old, err := objects.LoadStream(ctx, local, id)
		if err != nil {
			return nil, err
		}
		if !old.Root.IsZero() {
			known.Add(old.Root)
			aligned := st.Chunking == old.Chunking && st.Chunking.Algorithm == uint8(chunker.Fixed)
			o := &oldStream{root: old.Root, aligned: aligned, nodes: map[objects.ID]*objects.Index{}}
			if !st.Root.IsZero() {
				out = append(out, &counterpart{old: o})
			}
			if !st.Patch.IsZero() {
				// Patches are cumulative: the chunks of the base's patch
				// are on the remote and may stand in this one again.
				if err := knowPatch(ctx, local, old.Patch, known); err != nil {
					return nil, err
				}
				out = append(out, &counterpart{old: o, patch: true})
			}
			return out, nil
		}
	}
	return make([]*counterpart, refCount(st)), nil
}

// knowPatch adds to known the patch node patch of a base's stream and
// the chunks it names (nothing if patch is Zero).
func knowPatch(ctx context.Context, local objects.Store, patch objects.ID, known objects.Seen) error {
	if patch.IsZero() {
		return nil
	}
	known.Add(patch)
	p, err := objects.LoadPatch(ctx, local, patch)
	if err != nil {
		return err
	}
	for _, e := range p.Entries {
		if !e.ID.IsZero() {
			known.Add(e.ID)
		}
	}
	return nil
}

// refCount is the number of objects a stream references.
func refCount(st *objects.Stream) int {
	n := 0
	for _, id := range []objects.ID{st.Root, st.Patch} {
		if !id.IsZero() {
			n++
		}
	}
	return n
}

// aligned reports whether cp is a place in a base's stream cut into the
// same fixed-size chunks as the new one (guest RAM): the same bytes stand
// at the same offsets in both, so what differs at an offset is new.
// Elsewhere content can move (a file with bytes inserted, a copy of a
// file the remote has under another name), so the remote is asked.
func (cp *counterpart) aligned() bool {
	return cp != nil && cp.old != nil && cp.old.aligned
}

// matchIndex: the nodes (or chunks) of the base's stream one level below
// the node's and overlapping its bytes are what its entries may be.
func (cp *counterpart) matchIndex(ctx context.Context, local objects.Store, enc []byte, known objects.Seen) ([]*counterpart, error) {
	if cp.patch {
		// A patch node's chunks have no counterparts of their own: the
		// node's (see aligned) says whether they are new where they stand.
		_, refs, err := objects.Refs(enc)
		return make([]*counterpart, len(refs)), err
	}
	x, err := objects.DecodeIndex(enc)
	if err != nil {
		return nil, err
	}
	want := int(x.Level) - 1 // -1: chunks
	if err := cp.old.visit(ctx, local, cp.old.root, 0, cp.off, cp.off+x.Length(), want, known); err != nil {
		return nil, err
	}
	var out []*counterpart
	off := cp.off
	for _, e := range x.Entries {
		if !e.ID.IsZero() {
			var c *counterpart
			if x.Level > 0 {
				c = &counterpart{old: cp.old, off: off}
			}
			out = append(out, c)
		}
		off += e.Length
	}
	return out, nil
}

// visit adds to known the objects of level want (-1: chunks) below node
// id of the old stream that overlap the bytes [lo, hi); the node starts
// at offset at. A node whose level is want or below (the old tree is
// lower there) is itself the closest there is.
func (o *oldStream) visit(ctx context.Context, local objects.Store, id objects.ID, at, lo, hi uint64, want int, known objects.Seen) error {
	x := o.nodes[id]
	if x == nil {
		var err error
		if x, err = objects.LoadIndex(ctx, local, id); err != nil {
			return err
		}
		o.nodes[id] = x
	}
	if int(x.Level) <= want {
		known.Add(id)
		return nil
	}
	off := at
	for _, e := range x.Entries {
		end := off + e.Length
		if !e.ID.IsZero() && end > lo && off < hi {
			if int(x.Level)-1 == want {
				known.Add(e.ID)
			} else if err := o.visit(ctx, local, e.ID, off, lo, hi, want, known); err != nil {
				return err
			}
		}
		off = end
	}
	return nil
}
