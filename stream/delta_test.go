package stream

import (
	"bytes"
	"context"
	"testing"

	"github.com/go-git/go-billy/v5/memfs"

	"github.com/sbuml/sbuml/chunker"
	"github.com/sbuml/sbuml/objects"
)

// TestSavePagesDeltas saves RAM-like pages into a pack store, then a new
// version of them: pages with a few bytes changed are stored as deltas
// on their previous version, pages rewritten with new data and pages
// that were holes are stored whole without an attempt, and the stream
// reads back.
func TestSavePagesDeltas(t *testing.T) {
	const page = 4096
	ctx := context.Background()
	store := objects.NewPacked(memfs.New(), "objects", "")
	s := NewSaver(store, 2)
	defer s.Close()
	p := Params{Chunking: chunker.RAM, Fanout: 16}
	data := randomBytes(1, 64*page)
	clear(data[40*page : 50*page])
	ids := make([]objects.ID, 64)
	oldID, _, err := s.SavePages(ctx, bytes.NewReader(data), p, ids, []PageRange{{0, 64}}, objects.Zero, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	before := s.Stats()
	for pg := 0; pg < 10; pg++ { // a counter in each page went up
		data[pg*page+100]++
	}
	copy(data[10*page:20*page], randomBytes(2, 10*page)) // rewritten
	copy(data[40*page:45*page], randomBytes(3, 5*page))  // holes filled
	changed := []PageRange{{0, 20}, {40, 45}}
	id, _, err := s.SavePages(ctx, bytes.NewReader(data), p, ids, changed, oldID, true)
	if err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if d, tries := st.DeltaChunks-before.DeltaChunks, st.DeltaTries-before.DeltaTries; d != 10 || tries != 10 {
		t.Errorf("stored %d chunks as deltas of %d tried, want 10 of 10", d, tries)
	}
	if added := st.NewBytes - before.NewBytes; added > 25*page {
		t.Errorf("the new version added %d bytes, want the 15 new pages and little more", added)
	}
	if err := store.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	readBoth(t, store, id, data)
}
