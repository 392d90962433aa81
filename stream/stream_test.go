package stream

import (
	"bytes"
	"context"
	"math/rand"
	"testing"

	"github.com/go-git/go-billy/v5/memfs"
	"github.com/sbuml/sbuml/chunker"
	"github.com/sbuml/sbuml/objects"
)

func newStore() objects.Store { return objects.NewLoose(memfs.New(), "objects", "") }

func randomBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// small makes multi-level index trees out of little data.
var small = Params{Chunking: chunker.Params{Kind: chunker.FastCDC, Min: 256, Avg: 1024, Max: 4096}, Fanout: 4}

func TestRoundTrip(t *testing.T) {
	zeros := make([]byte, 300_000)
	mixed := append(append(randomBytes(2, 100_000), zeros...), randomBytes(3, 50_000)...)
	cases := []struct {
		name   string
		data   []byte
		params Params
	}{
		{"empty", nil, Files},
		{"one byte", []byte{7}, Files},
		{"random files", randomBytes(1, 3<<20), Files},
		{"random small", randomBytes(1, 1<<20), small},
		{"zeros", zeros, small},
		{"mixed", mixed, small},
		{"ram pages", append(randomBytes(4, 64<<10), make([]byte, 64<<10)...), Params{Chunking: chunker.RAM, Fanout: 32}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			store := newStore()
			s := NewSaver(store, 2)
			defer s.Close()
			id, st, err := s.SaveStream(ctx, bytes.NewReader(c.data), c.params)
			if err != nil {
				t.Fatal(err)
			}
			if st.Length != uint64(len(c.data)) {
				t.Fatalf("length %d, want %d", st.Length, len(c.data))
			}
			readBoth(t, store, id, c.data)
			// Saving again is deterministic and adds nothing.
			before := s.Stats()
			id2, _, err := s.SaveStream(ctx, bytes.NewReader(c.data), c.params)
			if err != nil || id2 != id {
				t.Fatalf("second save: %v, id %s vs %s", err, id2.Short(), id.Short())
			}
			if after := s.Stats(); after.NewObjects != before.NewObjects {
				t.Fatalf("second save wrote %d objects", after.NewObjects-before.NewObjects)
			}
		})
	}
}

func TestZerosAreHoles(t *testing.T) {
	ctx := context.Background()
	store := newStore()
	s := NewSaver(store, 2)
	defer s.Close()
	_, st, err := s.SaveStream(ctx, bytes.NewReader(make([]byte, 64<<20)), Files)
	if err != nil {
		t.Fatal(err)
	}
	stats := s.Stats()
	if stats.HoleBytes != 64<<20 || stats.Chunks != 0 || stats.NewObjects != 2 {
		t.Fatalf("stats %+v, want all holes, one index node and the stream", stats)
	}
	var leaves int
	Leaves(ctx, store, st, func(l Leaf) error { leaves++; return nil })
	if leaves != 1 {
		t.Fatalf("%d leaves, want one merged hole", leaves)
	}
}

// Changing one chunk of a long stream rewrites only the nodes on its path.
func TestLocalChange(t *testing.T) {
	ctx := context.Background()
	store := newStore()
	s := NewSaver(store, 2)
	defer s.Close()
	data := randomBytes(9, 4<<20)
	p := Params{Chunking: chunker.RAM, Fanout: 32}
	_, st, err := s.SaveStream(ctx, bytes.NewReader(data), p)
	if err != nil {
		t.Fatal(err)
	}
	depth := 0
	for id := st.Root; ; depth++ {
		x, err := objects.LoadIndex(ctx, store, id)
		if err != nil {
			t.Fatal(err)
		}
		if x.Level == 0 {
			break
		}
		id = x.Entries[0].ID
	}
	if depth < 2 {
		t.Fatalf("index depth %d: test needs a deeper tree", depth)
	}
	data[2<<20+100] ^= 1
	before := s.Stats()
	if _, _, err := s.SaveStream(ctx, bytes.NewReader(data), p); err != nil {
		t.Fatal(err)
	}
	added := s.Stats().NewObjects - before.NewObjects
	// the chunk, one node per level, the stream object
	if want := int64(1 + depth + 1 + 1); added > want {
		t.Fatalf("one changed page wrote %d objects, want at most %d", added, want)
	}
}
