package stream

import (
	"bytes"
	"context"
	"testing"

	"github.com/sbuml/sbuml/objects"
)

// TestLookup checks that Lookup finds, for every page, the chunk (or
// hole) Leaves lists there: in a tree, in a tree with a patch that
// replaces chunks and fills and makes holes, and in a stream all hole.
func TestLookup(t *testing.T) {
	const n = 512
	base := pages(1, n)
	cases := []struct {
		name string
		base []byte
		set  map[int]int64 // nil: no second version
	}{
		{"tree", base, nil},
		{"patched", base, map[int]int64{1: 7, 4: 3, 5: -1, 6: -1, 301: 9, 511: 10}},
		{"all hole", make([]byte, n*4096), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			store := newStore()
			s := NewSaver(store, 2)
			defer s.Close()
			id, st, err := s.SaveStream(ctx, bytes.NewReader(c.base), ram)
			if err == nil && c.set != nil {
				id, st, err = s.SaveStreamFrom(ctx, bytes.NewReader(withPages(c.base, c.set)), ram, id)
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.set != nil && st.Patch.IsZero() {
				t.Fatalf("stream %s has no patch to look in", id.Short())
			}
			want := make([]objects.ID, n)
			err = Leaves(ctx, store, st, func(l Leaf) error {
				for off := l.Offset; off < l.End(); off += 4096 {
					want[off/4096] = l.ID
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			look, err := NewLookup(ctx, store, st)
			if err != nil {
				t.Fatal(err)
			}
			for p := range n {
				l, err := look.LeafAt(uint64(p) * 4096)
				if err != nil {
					t.Fatal(err)
				}
				if l.ID != want[p] || l.Offset > uint64(p)*4096 || l.End() <= uint64(p)*4096 {
					t.Fatalf("page %d: leaf %+v, want chunk %s", p, l, want[p].Short())
				}
			}
		})
	}
}
