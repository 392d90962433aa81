package objects

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-billy/v5/osfs"
)

// page returns the encoding of a 4 KiB chunk of random bytes (a page
// that compresses badly), and another version of it with a few bytes
// changed (a page of an idle guest).
func pageVersions(seed int64) (old, cur []byte) {
	rng := rand.New(rand.NewSource(seed))
	data := make([]byte, 4096)
	rng.Read(data)
	old = EncodeChunk(data)
	copy(data[100:], "a counter went up")
	cur = EncodeChunk(data)
	return old, cur
}

// putDelta stores cur as a delta on prev, which s must hold whole, and
// returns cur's ID.
func putDelta(t *testing.T, s *Packed, prev ID, cur []byte) ID {
	t.Helper()
	ctx := context.Background()
	base, baseEnc, ok, err := s.BaseFor(ctx, prev)
	if err != nil || !ok {
		t.Fatalf("BaseFor %s: %v, %v", prev.Short(), ok, err)
	}
	id := Sum(cur)
	if isDelta, err := s.PutDelta(ctx, id, EncodeDelta(base, baseEnc, cur, nil), Seal(cur, nil)); err != nil || !isDelta {
		t.Fatalf("PutDelta = %v, %v; want a delta stored", isDelta, err)
	}
	return id
}

// TestPackedDelta stores a page as a delta on its previous version and
// reads it back through every way out of the store: Load gives the
// encoding, Get a self-contained stored form, List the delta's size, in
// this process and another, and the pack's index marks it.
func TestPackedDelta(t *testing.T) {
	ctx := context.Background()
	dir, open := packedDir(t)
	s := open()
	defer s.Close()
	old, cur := pageVersions(1)
	oldID, _, err := Save(ctx, s, old)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	requireIndexVersions(t, dir, map[byte]int{2: 1})
	id := putDelta(t, s, oldID, cur)
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// The pack without deltas stays version 2, which sbuml versions
	// that know no deltas read.
	requireIndexVersions(t, dir, map[byte]int{2: 1, 3: 1})
	other := open()
	defer other.Close()
	for name, st := range map[string]*Packed{"writer": s, "reader": other} {
		got, err := Load(ctx, st, id)
		if err != nil || !bytes.Equal(got, cur) {
			t.Fatalf("%s: Load: %v", name, err)
		}
		stored, err := st.Get(ctx, id)
		if err != nil {
			t.Fatalf("%s: Get: %v", name, err)
		}
		if IsDelta(stored) {
			t.Fatalf("%s: Get returned a delta", name)
		}
		if got, err := Unseal(id, stored); err != nil || !bytes.Equal(got, cur) {
			t.Fatalf("%s: Unseal of what Get returned: %v", name, err)
		}
		var size int64
		st.List(ctx, func(got ID, n int64) error {
			if got == id {
				size = n
			}
			return nil
		})
		if size == 0 || size > 200 {
			t.Errorf("%s: List says the delta takes %d bytes, want under 200", name, size)
		}
	}
	entries := packEntries(t, dir)
	if e, ok := entries[id]; !ok || !e.Delta {
		t.Errorf("the pack index does not mark %s as a delta: %+v", id.Short(), e)
	}
	if entries[oldID].Delta {
		t.Errorf("the pack index marks the base %s as a delta", oldID.Short())
	}
	// A new version of the delta is made against the same whole base.
	if base, _, ok, err := other.BaseFor(ctx, id); err != nil || !ok || base != oldID {
		t.Errorf("BaseFor a delta = %s, %v, %v; want its base %s", base.Short(), ok, err, oldID.Short())
	}
}

// requireIndexVersions checks how many pack indexes of each version a
// scrapbook's objects dir holds.
func requireIndexVersions(t *testing.T, dir string, want map[byte]int) {
	t.Helper()
	got := map[byte]int{}
	for _, name := range packNames(t, dir) {
		b, err := os.ReadFile(filepath.Join(dir, "objects", "pack", strings.TrimSuffix(name, ".pack")+".idx"))
		if err != nil {
			t.Fatal(err)
		}
		got[b[7]]++
	}
	if len(got) != len(want) {
		t.Fatalf("pack index versions %v, want %v", got, want)
	}
	for v, n := range want {
		if got[v] != n {
			t.Fatalf("pack index versions %v, want %v", got, want)
		}
	}
}

// packEntries reads every pack index of a scrapbook's objects dir.
func packEntries(t *testing.T, dir string) map[ID]PackEntry {
	t.Helper()
	out := map[ID]PackEntry{}
	for _, name := range packNames(t, dir) {
		b, err := os.ReadFile(filepath.Join(dir, "objects", "pack", strings.TrimSuffix(name, ".pack")+".idx"))
		if err != nil {
			t.Fatal(err)
		}
		entries, err := DecodePackIndex(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			out[e.ID] = e
		}
	}
	return out
}

// TestPutDeltaWhole stores the whole form where a delta's base cannot
// serve: not published yet, or absent. Put refuses a delta outright.
func TestPutDeltaWhole(t *testing.T) {
	ctx := context.Background()
	_, open := packedDir(t)
	s := open()
	defer s.Close()
	old, cur := pageVersions(2)
	oldID, _, err := Save(ctx, s, old) // pending, not published
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok, err := s.BaseFor(ctx, oldID); ok || err != nil {
		t.Errorf("BaseFor an unpublished object = %v, %v; want false, nil", ok, err)
	}
	id := Sum(cur)
	delta := EncodeDelta(oldID, old, cur, nil)
	if isDelta, err := s.PutDelta(ctx, id, delta, Seal(cur, nil)); err != nil || isDelta {
		t.Fatalf("PutDelta on an unpublished base = %v, %v; want the whole form stored", isDelta, err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if stored, err := s.getRecord(ctx, id); err != nil || IsDelta(stored) {
		t.Errorf("a delta on an unpublished base was stored as a delta (%v)", err)
	}
	if err := s.Put(ctx, Sum([]byte("x")), delta); err == nil || !strings.Contains(err.Error(), "self-contained") {
		t.Errorf("Put of a delta = %v, want a refusal", err)
	}
}

// TestDeltaDamage reads deltas a damaged or hostile store holds: each
// gives one error that names the problem, and none loops.
func TestDeltaDamage(t *testing.T) {
	ctx := context.Background()
	old, cur := pageVersions(3)
	oldID, curID := Sum(old), Sum(cur)
	other := Sum([]byte("another"))
	tests := []struct {
		name    string
		records map[ID][]byte
		want    string
	}{
		{"missing base", map[ID][]byte{curID: EncodeDelta(oldID, old, cur, nil)}, "which is missing"},
		{"cycle", map[ID][]byte{
			curID: EncodeDelta(oldID, old, cur, nil),
			oldID: EncodeDelta(curID, cur, old, nil),
		}, "is a delta too"},
		{"wrong base", map[ID][]byte{
			curID: EncodeDelta(oldID, old, cur, nil),
			oldID: Seal(cur, nil), // stored under the wrong ID
		}, "content hash mismatch"},
		{"wrong content", map[ID][]byte{
			other: EncodeDelta(oldID, old, cur, nil),
			oldID: Seal(old, nil),
		}, "content hash mismatch"},
		{"truncated", map[ID][]byte{curID: {deltaMagic, 1, 2}}, "too short"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, open := packedDir(t)
			writePack(t, dir, tt.records)
			s := open()
			defer s.Close()
			for id := range tt.records {
				if id == oldID && tt.name != "cycle" {
					continue
				}
				_, err := s.Get(ctx, id)
				if err == nil || !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("Get %s = %v, want a corrupt object error saying %q", id.Short(), err, tt.want)
				}
				if _, err := Load(ctx, s, id); err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("Load %s = %v, want %q", id.Short(), err, tt.want)
				}
			}
		})
	}
}

// writePack writes records, as they are, into a published pack of a
// scrapbook's objects dir.
func writePack(t *testing.T, dir string, records map[ID][]byte) {
	t.Helper()
	var buf bytes.Buffer
	enc, err := NewPackEncoder(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for id, stored := range records {
		if err := enc.Add(id, stored); err != nil {
			t.Fatal(err)
		}
	}
	idx, name := enc.Index()
	packs := filepath.Join(dir, "objects", "pack")
	if err := os.MkdirAll(packs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(packs, name+".pack"), buf.Bytes(), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(packs, name+".idx"), idx, 0o444); err != nil {
		t.Fatal(err)
	}
}

// TestRepackKeepsDeltaBases drops a delta's base from what to keep: the
// repack keeps it while the delta is kept, and drops both once neither
// is.
func TestRepackKeepsDeltaBases(t *testing.T) {
	ctx := context.Background()
	dir, open := packedDir(t)
	s := open()
	defer s.Close()
	old, cur := pageVersions(4)
	oldID, _, err := Save(ctx, s, old)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	id := putDelta(t, s, oldID, cur)
	if _, err := repack(t, s, func(got ID) bool { return got == id }); err != nil {
		t.Fatal(err)
	}
	if got, err := Load(ctx, s, id); err != nil || !bytes.Equal(got, cur) {
		t.Fatalf("after a repack that kept only the delta: %v", err)
	}
	if e := packEntries(t, dir)[id]; !e.Delta {
		t.Errorf("the repack did not keep %s as a delta", id.Short())
	}
	if ok, _ := s.Has(ctx, oldID); !ok {
		t.Errorf("the repack dropped the base of a kept delta")
	}
	if _, err := repack(t, s, func(ID) bool { return false }); err != nil {
		t.Fatal(err)
	}
	for _, gone := range []ID{oldID, id} {
		if ok, _ := s.Has(ctx, gone); ok {
			t.Errorf("%s survived a repack that keeps nothing", gone.Short())
		}
	}
}

// BenchmarkPackedPages measures storing and reading 4 KiB pages (1 KiB
// of random data, the rest zeros, as many RAM pages) of which a few
// bytes changed since their previous version: whole, and as a delta on
// it. Put includes what a commit does for a page (Seal; for a delta,
// BaseFor and EncodeDelta too); Get returns a self-contained stored
// form (a delta is resolved and sealed again), Load the encoding.
func BenchmarkPackedPages(b *testing.B) {
	const n = 2048
	ctx := context.Background()
	olds, curs := benchPages(n)
	put := pagePutters(olds, curs)
	for _, form := range []string{"whole", "delta"} {
		b.Run("put/"+form, func(b *testing.B) {
			var s *Packed
			var bytes, i int
			for b.Loop() {
				if i%n == 0 {
					if s != nil {
						s.Close()
					}
					s = storeOf(b, olds)
				}
				size, err := put[form](s, i%n)
				if err != nil {
					b.Fatal(err)
				}
				bytes += size
				i++
			}
			s.Close()
			b.ReportMetric(float64(bytes)/float64(i), "stored-B/page")
		})
		s := storeOf(b, olds)
		for i := range curs {
			if _, err := put[form](s, i); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Sync(ctx); err != nil {
			b.Fatal(err)
		}
		read := map[string]func(ID) error{
			"get":  func(id ID) error { _, err := s.Get(ctx, id); return err },
			"load": func(id ID) error { _, err := Load(ctx, s, id); return err },
		}
		for _, how := range []string{"get", "load"} {
			b.Run(how+"/"+form, func(b *testing.B) {
				i := 0
				for b.Loop() {
					if err := read[how](Sum(curs[i%n])); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
		s.Close()
	}
}

// benchPages returns the encodings of n pages and of their next
// versions, for BenchmarkPackedPages.
func benchPages(n int) (olds, curs [][]byte) {
	rng := rand.New(rand.NewSource(1))
	olds, curs = make([][]byte, n), make([][]byte, n)
	for i := range olds {
		data := make([]byte, 4096)
		rng.Read(data[:1024])
		olds[i] = EncodeChunk(data)
		copy(data[100:], "a counter went up")
		curs[i] = EncodeChunk(data)
	}
	return olds, curs
}

// storeOf returns a new pack store holding encs, published, with the
// benchmark's timer stopped.
func storeOf(b *testing.B, encs [][]byte) *Packed {
	b.StopTimer()
	defer b.StartTimer()
	ctx := context.Background()
	dir := b.TempDir()
	s := NewPacked(osfs.New(dir), "objects", filepath.Join(dir, "objects"))
	for _, enc := range encs {
		if _, _, err := Save(ctx, s, enc); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	return s
}

// pagePutters stores page i of curs, whose previous version is olds[i],
// whole or as a delta, as a commit does, and returns its stored size.
func pagePutters(olds, curs [][]byte) map[string]func(s *Packed, i int) (int, error) {
	ctx := context.Background()
	return map[string]func(s *Packed, i int) (int, error){
		"whole": func(s *Packed, i int) (int, error) {
			stored := Seal(curs[i], nil)
			return len(stored), s.PutLeaf(ctx, Sum(curs[i]), stored)
		},
		"delta": func(s *Packed, i int) (int, error) {
			base, baseEnc, _, err := s.BaseFor(ctx, Sum(olds[i]))
			if err != nil {
				return 0, err
			}
			delta := EncodeDelta(base, baseEnc, curs[i], nil)
			_, err = s.PutDelta(ctx, Sum(curs[i]), delta, Seal(curs[i], nil))
			return len(delta), err
		},
	}
}
