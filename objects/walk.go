package objects

import (
	"context"
	"fmt"
)

// A Visit is called by Walk for every object reached, with the kind the
// referring object says it has. Returning descend=false stops the walk
// from loading the object and following its references (for example when
// the object was seen before, or the other side of a transfer has it).
// Chunks are never loaded, whatever Visit returns.
type Visit func(id ID, kind Kind) (descend bool, err error)

// Walk visits the object graph below root (of kind rootKind) depth-first:
// snapshots lead to their tree and parents, trees to their entries,
// streams to their root index node, index nodes to their children. Each
// object is loaded and verified before its references are visited. Holes
// (Zero IDs in index nodes) are not visited.
func Walk(ctx context.Context, s Store, root ID, rootKind Kind, visit Visit) error {
	descend, err := visit(root, rootKind)
	if err != nil || !descend || rootKind == KindChunk {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	type ref struct {
		id   ID
		kind Kind
	}
	var refs []ref
	switch rootKind {
	case KindSnapshot:
		sn, err := LoadSnapshot(ctx, s, root)
		if err != nil {
			return err
		}
		refs = append(refs, ref{sn.Tree, KindTree})
		for _, p := range sn.Parents {
			refs = append(refs, ref{p, KindSnapshot})
		}
	case KindTree:
		t, err := LoadTree(ctx, s, root)
		if err != nil {
			return err
		}
		for _, e := range t.Entries {
			k := KindStream
			switch e.Kind {
			case EntryDir:
				k = KindTree
			case EntrySymlink:
				k = KindChunk
			}
			refs = append(refs, ref{e.ID, k})
		}
	case KindStream:
		st, err := LoadStream(ctx, s, root)
		if err != nil {
			return err
		}
		if !st.Root.IsZero() {
			refs = append(refs, ref{st.Root, KindIndex})
		}
	case KindIndex:
		x, err := LoadIndex(ctx, s, root)
		if err != nil {
			return err
		}
		k := KindIndex
		if x.Level == 0 {
			k = KindChunk
		}
		for _, e := range x.Entries {
			if !e.ID.IsZero() {
				refs = append(refs, ref{e.ID, k})
			}
		}
	default:
		return fmt.Errorf("walk %s: unknown kind %s", root, rootKind)
	}
	for _, r := range refs {
		if err := Walk(ctx, s, r.id, r.kind, visit); err != nil {
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
