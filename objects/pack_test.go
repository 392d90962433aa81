package objects

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-billy/v5/memfs"
	"github.com/go-git/go-billy/v5/osfs"
)

func putChunks(t *testing.T, s Store, n int, seed int64) map[ID][]byte {
	t.Helper()
	ctx := context.Background()
	rng := rand.New(rand.NewSource(seed))
	out := map[ID][]byte{}
	for i := 0; i < n; i++ {
		data := make([]byte, 100+rng.Intn(5000))
		rng.Read(data[:len(data)/2]) // half random, half zeros: some compress
		enc := EncodeChunk(data)
		id, _, err := Save(ctx, s, enc)
		if err != nil {
			t.Fatal(err)
		}
		out[id] = enc
	}
	return out
}

func TestPackedRoundTrip(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fsys := osfs.New(dir)
	s := NewPacked(fsys, "objects", filepath.Join(dir, "objects"))
	want := putChunks(t, s, 300, 1)

	// Readable in this process before publication, invisible to others.
	other := NewPacked(fsys, "objects", filepath.Join(dir, "objects"))
	for id, enc := range want {
		got, err := Load(ctx, s, id)
		if err != nil || !bytes.Equal(got, enc) {
			t.Fatalf("pending %s: %v", id.Short(), err)
		}
		if ok, _ := other.Has(ctx, id); ok {
			t.Fatalf("%s visible to another process before Sync", id.Short())
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for id, enc := range want {
		got, err := Load(ctx, other, id)
		if err != nil || !bytes.Equal(got, enc) {
			t.Fatalf("published %s: %v", id.Short(), err)
		}
	}
	n := 0
	other.List(ctx, func(id ID, size int64) error {
		if _, ok := want[id]; !ok {
			t.Errorf("List gave unknown %s", id.Short())
		}
		n++
		return nil
	})
	if n != len(want) {
		t.Fatalf("List gave %d objects, want %d", n, len(want))
	}
	if _, ok := Store(other).(Deleter); ok {
		t.Fatal("a pack store says it deletes single objects")
	}
}

func firstKey(m map[ID][]byte) ID {
	for id := range m {
		return id
	}
	return Zero
}

// A writer killed before Sync leaves a temporary pack that nobody reads.
func TestPackedUnpublishedIsInvisible(t *testing.T) {
	ctx := context.Background()
	fsys := memfs.New()
	s := NewPacked(fsys, "objects", "")
	want := putChunks(t, s, 20, 2)
	// No Sync: simulate the process dying by opening a fresh store.
	fresh := NewPacked(fsys, "objects", "")
	for id := range want {
		if ok, err := fresh.Has(ctx, id); ok || err != nil {
			t.Fatalf("unpublished object %s visible (err %v)", id.Short(), err)
		}
	}
	n := 0
	fresh.List(ctx, func(ID, int64) error { n++; return nil })
	if n != 0 {
		t.Fatalf("List saw %d unpublished objects", n)
	}
}

func TestPackedCorruption(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := NewPacked(osfs.New(dir), "objects", filepath.Join(dir, "objects"))
	want := putChunks(t, s, 50, 3)
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	packs, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "pack-*.pack"))
	idxs, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "pack-*.idx"))
	if len(packs) != 1 || len(idxs) != 1 {
		t.Fatalf("packs %v idx %v", packs, idxs)
	}
	// Flip a byte inside one object's stored bytes: that object, and
	// only it, fails verification, and the error names the pack.
	id := firstKey(want)
	_, loc, _, _ := s.lookup(id, false)
	flip(t, packs[0], int64(loc.off)+int64(loc.size)/2)
	fresh := NewPacked(osfs.New(dir), "objects", filepath.Join(dir, "objects"))
	for other := range want {
		_, err := Load(ctx, fresh, other)
		if other == id {
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), packs[0]) {
				t.Fatalf("flipped object: %v", err)
			}
		} else if err != nil {
			t.Fatalf("untouched object %s: %v", other.Short(), err)
		}
	}
	// A flipped index byte makes the index unreadable, reported by
	// CheckFiles.
	flip(t, idxs[0], 20)
	fresh = NewPacked(osfs.New(dir), "objects", filepath.Join(dir, "objects"))
	if b := fresh.Damaged(); len(b) != 1 || !errors.Is(b[0], ErrCorrupt) {
		t.Fatalf("Damaged() = %v", b)
	}
	if b := fresh.CheckFiles(ctx); len(b) != 1 || !errors.Is(b[0], ErrCorrupt) {
		t.Fatalf("CheckFiles() = %v", b)
	}
}

func flip(t *testing.T, name string, off int64) {
	t.Helper()
	os.Chmod(name, 0o644)
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	f.ReadAt(b, off)
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestPackIndexRejectsGarbage(t *testing.T) {
	good := encodePackIndex([]indexEntry{{id: Sum([]byte("a")), off: 100, size: 5}})
	for _, bad := range [][]byte{nil, []byte("SBPIDX"), good[:len(good)-1], append([]byte("XXXXXXXX"), good[8:]...)} {
		if _, err := decodePackIndex(bad); err == nil {
			t.Errorf("decodePackIndex(%q…) accepted garbage", bad[:min(len(bad), 8)])
		}
	}
	if e, err := decodePackIndex(good); err != nil || len(e) != 1 || e[0].off != 100 {
		t.Fatalf("good index: %v %v", e, err)
	}
}

func TestPutLeafEqualsPut(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := NewPacked(osfs.New(dir), "objects", filepath.Join(dir, "objects"))
	data := make([]byte, 70000)
	rand.New(rand.NewSource(8)).Read(data)
	id := Sum(EncodeChunk(data))
	if err := s.PutLeaf(ctx, id, EncodeChunk(data)); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := LoadChunk(ctx, NewPacked(osfs.New(dir), "objects", filepath.Join(dir, "objects")), id)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("LoadChunk: %v", err)
	}
}

// TestPackedChecksums checks what guards each byte of a packed object: the
// index's CRC for a compressed form (it covers frame header bytes that
// decoding ignores), the ID alone for an uncompressed one, whose CRC is
// recorded as 0. Every single flipped byte of either is found by Load and
// named with its pack, from an index of this version or of version 1,
// which recorded a CRC for uncompressed forms too.
func TestPackedChecksums(t *testing.T) {
	ctx := context.Background()
	raw := make([]byte, 300)
	rand.New(rand.NewSource(9)).Read(raw)
	encs := map[string][]byte{
		"uncompressed": EncodeChunk(raw),
		"compressed":   EncodeChunk(bytes.Repeat([]byte("notes "), 100)),
	}
	for _, version := range []string{"2", "1"} {
		for name, enc := range encs {
			t.Run(name+" v"+version, func(t *testing.T) {
				dir := t.TempDir()
				open := func() *Packed { return NewPacked(osfs.New(dir), "objects", filepath.Join(dir, "objects")) }
				s := open()
				id, _, err := Save(ctx, s, enc)
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Sync(ctx); err != nil {
					t.Fatal(err)
				}
				_, loc, _, _ := s.lookup(id, false)
				stored, err := s.Get(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				s.Close()
				if IsCompressed(stored) != (name == "compressed") {
					t.Fatalf("stored form compressed = %v", IsCompressed(stored))
				}
				want := uint32(0)
				if IsCompressed(stored) {
					want = crc32.Checksum(stored, castagnoli)
				}
				if loc.crc != want {
					t.Errorf("index CRC %08x, want %08x", loc.crc, want)
				}
				packs, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "pack-*.pack"))
				idxs, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "pack-*.idx"))
				if version == "1" {
					// As a version 1 writer wrote it: every record checksummed.
					idx := encodePackIndex([]indexEntry{{id: id, off: loc.off, size: loc.size, crc: crc32.Checksum(stored, castagnoli)}})
					copy(idx, indexMagicV1)
					sum := Sum(idx[:len(idx)-IDSize])
					copy(idx[len(idx)-IDSize:], sum[:])
					os.Chmod(idxs[0], 0o644)
					if err := os.WriteFile(idxs[0], idx, 0o444); err != nil {
						t.Fatal(err)
					}
				}
				if got, err := Load(ctx, open(), id); err != nil || !bytes.Equal(got, enc) {
					t.Fatalf("intact object: %v", err)
				}
				for i := int64(0); i < int64(loc.size); i++ {
					flip(t, packs[0], int64(loc.off)+i)
					s := open()
					_, err := Load(ctx, s, id)
					s.Close()
					if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), packs[0]) {
						t.Fatalf("byte %d of %d flipped: %v", i, loc.size, err)
					}
					flip(t, packs[0], int64(loc.off)+i)
				}
			})
		}
	}
}
