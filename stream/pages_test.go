package stream

import (
	"bytes"
	"context"
	"testing"

	"github.com/sbuml/sbuml/chunker"
	"github.com/sbuml/sbuml/objects"
)

// TestSavePagesEqualsSaveStream saves RAM-like content, changes some of
// its pages, and checks that SavePages, told which pages changed, stores
// the very stream SaveStreamFrom stores from all the bytes: same ID, so
// same index nodes, patch and chunk IDs; both on their own and as a new
// version of the old content's stream, with the pages outside changed
// known to be the old stream's or compared with it.
func TestSavePagesEqualsSaveStream(t *testing.T) {
	const page = 4096
	// Fanout 4 makes multi-level index trees out of 600 pages.
	p := Params{Chunking: chunker.RAM, Fanout: 4}
	base := randomBytes(5, 600*page)
	for pg := 100; pg < 180; pg++ { // a run of zero pages: a hole
		clear(base[pg*page : (pg+1)*page])
	}
	cases := []struct {
		name    string
		changed []PageRange
		fill    func(b []byte) // new content of a changed page
	}{
		{"nothing", nil, nil},
		{"one page", []PageRange{{7, 8}}, func(b []byte) { b[9]++ }},
		{"scattered", []PageRange{{0, 1}, {63, 66}, {255, 257}, {599, 600}}, func(b []byte) { b[0] ^= 0xff }},
		{"zeroed", []PageRange{{10, 20}, {300, 301}}, func(b []byte) { clear(b) }},
		{"hole filled", []PageRange{{120, 140}}, func(b []byte) { copy(b, randomBytes(6, page)) }},
		{"written back unchanged", []PageRange{{200, 264}}, func([]byte) {}},
		{"within a run of holes", []PageRange{{303, 304}, {305, 307}}, func(b []byte) { b[0]++ }},
		{"all", []PageRange{{0, 600}}, func(b []byte) { b[100] += 3 }},
	}
	for _, tc := range []struct {
		name              string
		versioned, ofBase bool
	}{{"own tree", false, false}, {"version", true, true}, {"version compared", true, false}} {
		for _, c := range cases {
			t.Run(tc.name+"/"+c.name, func(t *testing.T) {
				testSavePages(t, p, base, c.changed, c.fill, tc.versioned, tc.ofBase)
			})
		}
	}
}

// testSavePages is one case of TestSavePagesEqualsSaveStream.
func testSavePages(t *testing.T, p Params, base []byte, changed []PageRange, fill func([]byte), versioned, ofBase bool) {
	const page = 4096
	ctx := context.Background()
	s := NewSaver(newStore(), 2)
	defer s.Close()
	// The IDs of the old content, as a first full SavePages gives them.
	ids := make([]objects.ID, len(base)/page)
	oldID, _, err := s.SavePages(ctx, bytes.NewReader(base), p, ids, []PageRange{{0, len(ids)}}, objects.Zero, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := saveAll(t, s, base, p, objects.Zero); oldID != want {
		t.Fatalf("full SavePages stored %s, SaveStream %s", oldID.Short(), want.Short())
	}
	cur := bytes.Clone(base)
	if versioned {
		// A version between: its patch, with a run of holes and pages in
		// a hole of the tree, is carried into the next.
		mid := []PageRange{{5, 6}, {150, 160}, {300, 310}}
		cur[5*page]++
		copy(cur[150*page:160*page], randomBytes(7, 10*page))
		clear(cur[300*page : 310*page])
		midID, st, err := s.SavePages(ctx, bytes.NewReader(cur), p, ids, mid, oldID, ofBase)
		if err != nil {
			t.Fatal(err)
		}
		if want := saveAll(t, s, cur, p, oldID); midID != want || st.Patch.IsZero() {
			t.Fatalf("SavePages of the version between stored %s (patch %s), SaveStreamFrom %s", midID.Short(), st.Patch.Short(), want.Short())
		}
		oldID = midID
	}
	for _, r := range changed {
		for pg := r.Start; pg < r.End; pg++ {
			fill(cur[pg*page : (pg+1)*page])
		}
	}
	from := objects.Zero
	if versioned {
		from = oldID
	}
	got, st, err := s.SavePages(ctx, bytes.NewReader(cur), p, ids, changed, from, ofBase)
	if err != nil {
		t.Fatal(err)
	}
	if want := saveAll(t, s, cur, p, from); got != want {
		t.Fatalf("SavePages stored %s, SaveStream %s", got.Short(), want.Short())
	}
	if st.Length != uint64(len(cur)) {
		t.Fatalf("length %d, want %d", st.Length, len(cur))
	}
	var out bytes.Buffer
	if _, err := Copy(ctx, s.store, got, &out); err != nil || !bytes.Equal(out.Bytes(), cur) {
		t.Fatalf("the stream does not read back as the content (err %v)", err)
	}
}

func saveAll(t *testing.T, s *Saver, data []byte, p Params, base objects.ID) objects.ID {
	t.Helper()
	id, _, err := s.SaveStreamFrom(context.Background(), bytes.NewReader(data), p, base)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestSavePagesRefuses(t *testing.T) {
	s := NewSaver(newStore(), 1)
	defer s.Close()
	ids := make([]objects.ID, 4)
	data := bytes.NewReader(make([]byte, 4*4096))
	ram := Params{Chunking: chunker.RAM, Fanout: 4}
	cases := []struct {
		name    string
		p       Params
		changed []PageRange
	}{
		{"content-defined chunks", Files, nil},
		{"beyond the end", ram, []PageRange{{3, 5}}},
		{"out of order", ram, []PageRange{{2, 3}, {0, 1}}},
		{"overlapping", ram, []PageRange{{0, 2}, {1, 3}}},
	}
	for _, c := range cases {
		if _, _, err := s.SavePages(context.Background(), data, c.p, ids, c.changed, objects.Zero, false); err == nil {
			t.Errorf("%s: SavePages accepted it", c.name)
		}
	}
}
