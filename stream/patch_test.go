package stream

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/sbuml/sbuml/chunker"
	"github.com/sbuml/sbuml/objects"
)

// ram is the parameter set the root package uses for guest RAM.
var ram = Params{Chunking: chunker.RAM, Fanout: 32}

// pages returns n pages of random data with every fourth page zero.
func pages(seed int64, n int) []byte {
	b := randomBytes(seed, n*4096)
	for p := 0; p < n; p += 4 {
		clear(b[p*4096 : (p+1)*4096])
	}
	return b
}

// withPages returns a copy of data with pages set: a page number to a
// seed for its new random bytes, or -1 for zeros.
func withPages(data []byte, set map[int]int64) []byte {
	out := bytes.Clone(data)
	for p, seed := range set {
		page := out[p*4096 : (p+1)*4096]
		if seed < 0 {
			clear(page)
		} else {
			copy(page, randomBytes(seed, 4096))
		}
	}
	return out
}

// readBoth reads stream id back with Copy and with Extract and checks
// both against want.
func readBoth(t *testing.T, store objects.Store, id objects.ID, want []byte) {
	t.Helper()
	ctx := context.Background()
	var out bytes.Buffer
	if _, err := Copy(ctx, store, id, &out); err != nil || !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("Copy: err=%v, equal=%v", err, bytes.Equal(out.Bytes(), want))
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "x"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Extract(ctx, store, id, f); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(f.Name())
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("Extract: err=%v, equal=%v", err, bytes.Equal(got, want))
	}
}

func TestSaveStreamFrom(t *testing.T) {
	const n = 512 // 2 MiB of pages
	base := pages(1, n)
	cases := []struct {
		name      string
		set       map[int]int64
		wantPatch int // entries in the patch; -1: a tree of its own
	}{
		{"unchanged", nil, 0},
		{"one page", map[int]int64{100: 7}, 1},
		{"pages scattered", map[int]int64{1: 7, 2: 8, 301: 9, 511: 10}, 4},
		{"a page zeroed", map[int]int64{5: -1}, 1},
		{"zeroed pages merge", map[int]int64{5: -1, 6: -1, 7: -1}, 1},
		{"a hole filled", map[int]int64{4: 3, 8: 5}, 2},
		{"half rewritten", halfOf(n), -1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			store := newStore()
			s := NewSaver(store, 2)
			defer s.Close()
			baseID, baseSt, err := s.SaveStream(ctx, bytes.NewReader(base), ram)
			if err != nil {
				t.Fatal(err)
			}
			data := withPages(base, c.set)
			id, st, err := s.SaveStreamFrom(ctx, bytes.NewReader(data), ram, baseID)
			if err != nil {
				t.Fatal(err)
			}
			readBoth(t, store, id, data)
			switch {
			case c.wantPatch == 0 && (id != baseID || !st.Patch.IsZero()):
				t.Errorf("unchanged data gave stream %v, want the base %v", st, baseSt)
			case c.wantPatch > 0:
				p, err := objects.LoadPatch(ctx, store, st.Patch)
				if err != nil {
					t.Fatal(err)
				}
				if st.Root != baseSt.Root || len(p.Entries) != c.wantPatch {
					t.Errorf("stream %v with %v, want the base's root and %d entries", st, p, c.wantPatch)
				}
			case c.wantPatch < 0 && (!st.Patch.IsZero() || st.Root == baseSt.Root):
				t.Errorf("stream %v, want a tree of its own", st)
			}
			// Patching onto a patched stream patches its tree again.
			again := withPages(data, map[int]int64{3: 11})
			id2, st2, err := s.SaveStreamFrom(ctx, bytes.NewReader(again), ram, id)
			if err != nil {
				t.Fatal(err)
			}
			readBoth(t, store, id2, again)
			if st2.Root != st.Root {
				t.Errorf("second version's root %s, want %s", st2.Root.Short(), st.Root.Short())
			}
		})
	}
}

func halfOf(n int) map[int]int64 {
	m := map[int]int64{}
	for p := 0; p < n; p += 2 {
		m[p] = int64(p + 100)
	}
	return m
}

// TestSaveStreamFromFallsBack checks the cases where no patch is possible:
// no base, a different length, FastCDC chunking.
func TestSaveStreamFromFallsBack(t *testing.T) {
	ctx := context.Background()
	store := newStore()
	s := NewSaver(store, 2)
	defer s.Close()
	base := pages(1, 64)
	baseID, _, err := s.SaveStream(ctx, bytes.NewReader(base), ram)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		data []byte
		p    Params
		base objects.ID
	}{
		{"no base", base[:4096], ram, objects.Zero},
		{"longer", append(bytes.Clone(base), randomBytes(3, 4096)...), ram, baseID},
		{"shorter", base[:8192], ram, baseID},
		{"other fanout", withPages(base, map[int]int64{1: 2}), Params{Chunking: chunker.RAM, Fanout: 64}, baseID},
		{"FastCDC", withPages(base, map[int]int64{1: 2}), small, baseID},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id, st, err := s.SaveStreamFrom(ctx, bytes.NewReader(c.data), c.p, c.base)
			if err != nil {
				t.Fatal(err)
			}
			if !st.Patch.IsZero() {
				t.Errorf("stream %v has a patch", st)
			}
			plain, _, err := s.SaveStream(ctx, bytes.NewReader(c.data), c.p)
			if err != nil || plain != id {
				t.Errorf("SaveStream gave %s (%v), SaveStreamFrom %s", plain.Short(), err, id.Short())
			}
			readBoth(t, store, id, c.data)
		})
	}
}

// TestPatchMustReplaceWholeChunks hands Leaves patches that a writer
// never makes.
func TestPatchMustReplaceWholeChunks(t *testing.T) {
	ctx := context.Background()
	store := newStore()
	s := NewSaver(store, 2)
	defer s.Close()
	data := pages(1, 16) // pages 0, 4, 8, 12 are holes
	_, base, err := s.SaveStream(ctx, bytes.NewReader(data), ram)
	if err != nil {
		t.Fatal(err)
	}
	chunk, err := s.SaveObject(ctx, objects.EncodeChunk(randomBytes(9, 2048)))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		entries []objects.PatchEntry
		wantErr string
	}{
		{"cuts a chunk's start", []objects.PatchEntry{{Offset: 4096, ID: chunk, Length: 2048}}, "cuts chunk"},
		{"cuts a chunk's end", []objects.PatchEntry{{Offset: 4096 + 2048, ID: chunk, Length: 2048}}, "cuts chunk"},
		{"beyond the end", []objects.PatchEntry{{Offset: 16 * 4096, ID: chunk, Length: 2048}}, "ends at byte"},
		{"inside a hole", []objects.PatchEntry{{Offset: 1024, ID: chunk, Length: 2048}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pid, err := s.SaveObject(ctx, (&objects.Patch{Entries: c.entries}).Encode())
			if err != nil {
				t.Fatal(err)
			}
			st := *base
			st.Patch = pid
			var total uint64
			err = Leaves(ctx, store, &st, func(l Leaf) error { total += l.Length; return nil })
			if c.wantErr == "" {
				if err != nil || total != st.Length {
					t.Errorf("Leaves: %v, %d bytes of %d", err, total, st.Length)
				}
				return
			}
			if !errors.Is(err, objects.ErrCorrupt) || !bytes.Contains([]byte(err.Error()), []byte(c.wantErr)) {
				t.Errorf("Leaves: %v, want a corrupt patch (%s)", err, c.wantErr)
			}
		})
	}
}

// BenchmarkSaveStreamFrom stores 32 MiB of RAM-like pages (a quarter of
// them holes) with 100 pages changed, as a plain stream and as a version
// of the unchanged data, and reports the bytes each adds: what patching
// costs in time and saves in index nodes.
//
//	go test -run '^$' -bench BenchmarkSaveStreamFrom ./stream
func BenchmarkSaveStreamFrom(b *testing.B) {
	const n = 8192
	base := pages(1, n)
	set := map[int]int64{}
	for k := 0; k < 100; k++ {
		set[(k*7919)%n] = int64(k + 10)
	}
	data := withPages(base, set)
	for _, patch := range []bool{false, true} {
		name := "plain"
		if patch {
			name = "patch"
		}
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			var added int64
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				store := newStore()
				s := NewSaver(store, 2)
				baseID, _, err := s.SaveStream(ctx, bytes.NewReader(base), ram)
				if err != nil {
					b.Fatal(err)
				}
				before := s.Stats().NewBytes
				b.StartTimer()
				if patch {
					_, _, err = s.SaveStreamFrom(ctx, bytes.NewReader(data), ram, baseID)
				} else {
					_, _, err = s.SaveStream(ctx, bytes.NewReader(data), ram)
				}
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				added += s.Stats().NewBytes - before
				s.Close()
				b.StartTimer()
			}
			b.SetBytes(int64(len(data)))
			b.ReportMetric(float64(added)/1024/float64(b.N), "added-KiB")
		})
	}
}
