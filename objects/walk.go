package objects

import (
	"context"
	"fmt"
)

// A Ref is a reference from one object to another, with the kind the
// referring object says the target has and, for chunks and index nodes
// and tree entries, the number of logical bytes the target covers.
type Ref struct {
	ID     ID
	Kind   Kind
	Length uint64
}

// Refs decodes a canonical encoding and returns its kind and the
// references it holds, typed. Holes are not references.
func Refs(enc []byte) (Kind, []Ref, error) {
	k, err := KindOf(enc)
	if err != nil {
		return 0, nil, err
	}
	var refs []Ref
	switch k {
	case KindChunk:
	case KindSnapshot:
		sn, err := DecodeSnapshot(enc)
		if err != nil {
			return k, nil, err
		}
		refs = append(refs, Ref{ID: sn.Tree, Kind: KindTree})
		for _, p := range sn.Parents {
			refs = append(refs, Ref{ID: p, Kind: KindSnapshot})
		}
	case KindTree:
		t, err := DecodeTree(enc)
		if err != nil {
			return k, nil, err
		}
		for _, e := range t.Entries {
			r := Ref{ID: e.ID, Kind: KindStream, Length: e.Size}
			switch e.Kind {
			case EntryDir:
				r.Kind = KindTree
			case EntrySymlink:
				r.Kind = KindChunk
			}
			refs = append(refs, r)
		}
	case KindStream:
		st, err := DecodeStream(enc)
		if err != nil {
			return k, nil, err
		}
		if !st.Root.IsZero() {
			refs = append(refs, Ref{ID: st.Root, Kind: KindIndex, Length: st.Length})
		}
		if !st.Patch.IsZero() {
			refs = append(refs, Ref{ID: st.Patch, Kind: KindIndex, Length: st.Length})
		}
	case KindIndex:
		if VersionOf(enc) == VersionPatch {
			refs, err := patchRefs(enc)
			return k, refs, err
		}
		x, err := DecodeIndex(enc)
		if err != nil {
			return k, nil, err
		}
		rk := KindIndex
		if x.Level == 0 {
			rk = KindChunk
		}
		for _, e := range x.Entries {
			if !e.ID.IsZero() {
				refs = append(refs, Ref{ID: e.ID, Kind: rk, Length: e.Length})
			}
		}
	}
	return k, refs, nil
}

// patchRefs returns the chunks a patch node names.
func patchRefs(enc []byte) ([]Ref, error) {
	p, err := DecodePatch(enc)
	if err != nil {
		return nil, err
	}
	var refs []Ref
	for _, e := range p.Entries {
		if !e.ID.IsZero() {
			refs = append(refs, Ref{ID: e.ID, Kind: KindChunk, Length: e.Length})
		}
	}
	return refs, nil
}

// References decodes any canonical encoding and returns the IDs it names.
func References(enc []byte) (Kind, []ID, error) {
	k, refs, err := Refs(enc)
	ids := make([]ID, len(refs))
	for i, r := range refs {
		ids[i] = r.ID
	}
	return k, ids, err
}

// A Visit is called by Walk for every object reached. Returning
// descend=false stops the walk from loading the object and following its
// references (for example when it was seen before, or the other side of a
// transfer has it). Chunks are never loaded, whatever Visit returns.
type Visit func(r Ref) (descend bool, err error)

// Walk visits the object graph below root depth-first: snapshots lead to
// their tree and parents, trees to their entries, streams to their root
// index node, index nodes to their children. Each object is loaded and
// verified, and must have the kind its referrer says, before its
// references are visited.
func Walk(ctx context.Context, s Reader, root Ref, visit Visit) error {
	descend, err := visit(root)
	if err != nil || !descend || root.Kind == KindChunk {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	enc, err := Load(ctx, s, root.ID)
	if err != nil {
		return err
	}
	k, refs, err := Refs(enc)
	if err == nil && k != root.Kind {
		err = fmt.Errorf("is a %s, not a %s", k, root.Kind)
	}
	if err != nil {
		return fmt.Errorf("object %s: %w: %v (%s)", root.ID, ErrCorrupt, err, Where(s, root.ID))
	}
	for _, r := range refs {
		if err := Walk(ctx, s, r, visit); err != nil {
			return err
		}
	}
	return nil
}

// Seen is a set of IDs, for walks that visit each object once.
type Seen map[ID]struct{}

// Add adds id and reports whether it was new.
func (s Seen) Add(id ID) bool {
	if _, ok := s[id]; ok {
		return false
	}
	s[id] = struct{}{}
	return true
}
