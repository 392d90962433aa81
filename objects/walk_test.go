package objects_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-billy/v5/memfs"

	"github.com/sbuml/sbuml/objects"
)

// walkGraph is a small scrapbook: two snapshots, a tree with a file, a
// directory and a symlink, and a file stream with a two-level index.
type walkGraph struct {
	store                     *objects.Loose
	snap, parent              objects.ID
	tree, sub, emptyTree      objects.ID
	stream, top, leaf         objects.ID
	chunk1, chunk2, linkChunk objects.ID
}

func newWalkGraph(t *testing.T) walkGraph {
	t.Helper()
	ctx := context.Background()
	g := walkGraph{store: objects.NewLoose(memfs.New(), "objects", "")}
	save := func(e []byte) objects.ID {
		t.Helper()
		id, _, err := objects.Save(ctx, g.store, e)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	g.chunk1 = save(objects.EncodeChunk([]byte("first chunk")))
	g.chunk2 = save(objects.EncodeChunk([]byte("second")))
	g.linkChunk = save(objects.EncodeChunk([]byte("disk.img")))
	g.leaf = save((&objects.Index{Entries: []objects.IndexEntry{{ID: g.chunk1, Length: 11}, {Length: 4096}, {ID: g.chunk2, Length: 6}}}).Encode())
	g.top = save((&objects.Index{Level: 1, Entries: []objects.IndexEntry{{ID: g.leaf, Length: 4113}}}).Encode())
	g.stream = save((&objects.Stream{Length: 4113, Root: g.top}).Encode())
	g.emptyTree = save((&objects.Tree{}).Encode())
	g.sub = save((&objects.Tree{Entries: []objects.TreeEntry{{Name: "nothing", Kind: objects.EntryDir, Mode: 0o755, ID: g.emptyTree}}}).Encode())
	g.tree = save((&objects.Tree{Entries: []objects.TreeEntry{
		{Name: "disk.img", Kind: objects.EntryFile, Mode: 0o644, Size: 4113, ID: g.stream},
		{Name: "etc", Kind: objects.EntryDir, Mode: 0o755, ID: g.sub},
		{Name: "link", Kind: objects.EntrySymlink, Mode: 0o777, Size: 8, ID: g.linkChunk},
	}}).Encode())
	g.parent = save((&objects.Snapshot{Tree: g.emptyTree, Time: time.Unix(1, 0)}).Encode())
	g.snap = save((&objects.Snapshot{Tree: g.tree, Parents: []objects.ID{g.parent}, Time: time.Unix(2, 0)}).Encode())
	return g
}

func TestRefs(t *testing.T) {
	g := newWalkGraph(t)
	ctx := context.Background()
	cases := []struct {
		name string
		id   objects.ID
		kind objects.Kind
		want []objects.Ref
	}{
		{"snapshot", g.snap, objects.KindSnapshot, []objects.Ref{
			{ID: g.tree, Kind: objects.KindTree}, {ID: g.parent, Kind: objects.KindSnapshot}}},
		{"tree", g.tree, objects.KindTree, []objects.Ref{
			{ID: g.stream, Kind: objects.KindStream, Length: 4113},
			{ID: g.sub, Kind: objects.KindTree},
			{ID: g.linkChunk, Kind: objects.KindChunk, Length: 8}}},
		{"stream", g.stream, objects.KindStream, []objects.Ref{{ID: g.top, Kind: objects.KindIndex, Length: 4113}}},
		{"index level 1", g.top, objects.KindIndex, []objects.Ref{{ID: g.leaf, Kind: objects.KindIndex, Length: 4113}}},
		{"index level 0", g.leaf, objects.KindIndex, []objects.Ref{
			{ID: g.chunk1, Kind: objects.KindChunk, Length: 11}, {ID: g.chunk2, Kind: objects.KindChunk, Length: 6}}},
		{"chunk", g.chunk1, objects.KindChunk, nil},
		{"empty tree", g.emptyTree, objects.KindTree, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, err := objects.Load(ctx, g.store, tc.id)
			if err != nil {
				t.Fatal(err)
			}
			k, refs, err := objects.Refs(e)
			if err != nil || k != tc.kind {
				t.Fatalf("Refs = %s, %v; want kind %s", k, err, tc.kind)
			}
			if !slices.Equal(refs, tc.want) {
				t.Errorf("Refs = %v, want %v", refs, tc.want)
			}
		})
	}
	if _, _, err := objects.Refs(raw(4, 1, 1)); err == nil {
		t.Error("Refs accepted a truncated tree")
	}
}

func TestWalk(t *testing.T) {
	g := newWalkGraph(t)
	ctx := context.Background()
	var order []objects.ID
	kinds := map[objects.ID]objects.Kind{}
	seen := objects.Seen{}
	err := objects.Walk(ctx, g.store, objects.Ref{ID: g.snap, Kind: objects.KindSnapshot}, func(r objects.Ref) (bool, error) {
		if k, ok := kinds[r.ID]; ok && k != r.Kind {
			t.Errorf("%s visited as %s and %s", r.ID.Short(), k, r.Kind)
		}
		kinds[r.ID] = r.Kind
		order = append(order, r.ID)
		return seen.Add(r.ID), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Depth-first, in reference order; the empty tree is reached twice
	// (from etc and from the parent) and visited both times.
	want := []objects.ID{g.snap, g.tree, g.stream, g.top, g.leaf, g.chunk1, g.chunk2,
		g.sub, g.emptyTree, g.linkChunk, g.parent, g.emptyTree}
	if !slices.Equal(order, want) {
		t.Errorf("visit order:\n got %v\nwant %v", shorts(order), shorts(want))
	}
	if len(seen) != 11 {
		t.Errorf("saw %d distinct objects, want 11", len(seen))
	}
	if seen.Add(g.snap) {
		t.Error("Seen.Add reported a seen ID as new")
	}
}

func TestWalkPrunesAndStops(t *testing.T) {
	g := newWalkGraph(t)
	ctx := context.Background()
	root := objects.Ref{ID: g.snap, Kind: objects.KindSnapshot}

	var visited []objects.ID
	err := objects.Walk(ctx, g.store, root, func(r objects.Ref) (bool, error) {
		visited = append(visited, r.ID)
		return r.ID != g.tree, nil // do not enter the tree
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []objects.ID{g.snap, g.tree, g.parent, g.emptyTree}; !slices.Equal(visited, want) {
		t.Errorf("pruned walk visited %v, want %v", shorts(visited), shorts(want))
	}

	stop := errors.New("stop here")
	err = objects.Walk(ctx, g.store, root, func(r objects.Ref) (bool, error) {
		if r.ID == g.leaf {
			return false, stop
		}
		return true, nil
	})
	if !errors.Is(err, stop) {
		t.Errorf("Walk returned %v, want the visitor's error", err)
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	err = objects.Walk(cancelled, g.store, root, func(objects.Ref) (bool, error) { return true, nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Walk with a cancelled context: %v", err)
	}
}

// TestWalkDamage checks what a walk reports for missing objects and for
// objects that are not what their referrer says.
func TestWalkDamage(t *testing.T) {
	ctx := context.Background()
	all := func(objects.Ref) (bool, error) { return true, nil }

	// Chunks are never loaded: a missing chunk does not stop the walk.
	g := newWalkGraph(t)
	if err := g.store.Delete(ctx, g.chunk2); err != nil {
		t.Fatal(err)
	}
	if err := objects.Walk(ctx, g.store, objects.Ref{ID: g.stream, Kind: objects.KindStream}, all); err != nil {
		t.Errorf("walk with a missing chunk: %v", err)
	}

	// A missing index node does.
	if err := g.store.Delete(ctx, g.leaf); err != nil {
		t.Fatal(err)
	}
	err := objects.Walk(ctx, g.store, objects.Ref{ID: g.snap, Kind: objects.KindSnapshot}, all)
	if !errors.Is(err, objects.ErrNotFound) || !strings.Contains(err.Error(), g.leaf.String()) {
		t.Errorf("walk with a missing index node: %v, want ErrNotFound naming it", err)
	}

	// A tree entry that calls a stream a directory.
	liar, _, err := objects.Save(ctx, g.store, (&objects.Tree{Entries: []objects.TreeEntry{
		{Name: "d", Kind: objects.EntryDir, Mode: 0o755, ID: g.stream}}}).Encode())
	if err != nil {
		t.Fatal(err)
	}
	err = objects.Walk(ctx, g.store, objects.Ref{ID: liar, Kind: objects.KindTree}, all)
	if !errors.Is(err, objects.ErrCorrupt) || !strings.Contains(err.Error(), "is a stream, not a tree") {
		t.Errorf("walk into a mislabelled entry: %v", err)
	}

	// A root of the wrong kind.
	err = objects.Walk(ctx, g.store, objects.Ref{ID: g.tree, Kind: objects.KindSnapshot}, all)
	if !errors.Is(err, objects.ErrCorrupt) || !strings.Contains(err.Error(), "is a tree, not a snapshot") {
		t.Errorf("walk from a tree called a snapshot: %v", err)
	}
}

func shorts(ids []objects.ID) []string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = id.Short()
	}
	return s
}
