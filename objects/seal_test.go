package objects_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/sbuml/sbuml/objects"
)

var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

func TestSealCompressesText(t *testing.T) {
	for _, n := range []int{100, 4 << 10, 64 << 10, 1 << 20} {
		e := objects.EncodeChunk(textBytes(uint64(n), n))
		stored := objects.Seal(e, nil)
		if !bytes.HasPrefix(stored, zstdMagic) {
			t.Errorf("%d bytes of text: stored form is not a zstd frame", n)
		}
		if len(stored) > len(e)-len(e)/32 || n >= 4<<10 && len(stored) >= len(e)/2 {
			t.Errorf("%d bytes of text sealed to %d bytes", n, len(stored))
		}
		got, err := objects.Unseal(objects.Sum(e), stored)
		if err != nil {
			t.Fatalf("%d bytes of text: %v", n, err)
		}
		if !bytes.Equal(got, e) {
			t.Errorf("%d bytes of text: Unseal gave different bytes", n)
		}
	}
}

// TestSealSmallSizes round-trips compressible objects of every size
// around the point (256 bytes) below which zstd frames do not record
// their content size.
func TestSealSmallSizes(t *testing.T) {
	compressed := 0
	for n := 60; n <= 600; n++ {
		e := objects.EncodeChunk(bytes.Repeat([]byte{byte(n)}, n-2))
		stored := objects.Seal(e, nil)
		if bytes.HasPrefix(stored, zstdMagic) {
			compressed++
		}
		got, err := objects.Unseal(objects.Sum(e), stored)
		if err != nil || !bytes.Equal(got, e) {
			t.Fatalf("%d-byte encoding: Unseal gave %d bytes, %v", n, len(got), err)
		}
	}
	if compressed < 500 {
		t.Errorf("only %d of 541 runs of one byte were compressed", compressed)
	}
}

func TestSealKeepsIncompressibleDataPlain(t *testing.T) {
	for _, n := range []int{0, 5, 63, 64, 1000, 64 << 10, 1 << 20} {
		e := objects.EncodeChunk(randomBytes(uint64(n), n))
		stored := objects.Seal(e, nil)
		if len(stored) != len(e) || &stored[0] != &e[0] {
			t.Errorf("%d random bytes: Seal copied or changed the encoding", n)
		}
		got, err := objects.Unseal(objects.Sum(e), stored)
		if err != nil {
			t.Fatalf("%d random bytes: %v", n, err)
		}
		if !bytes.Equal(got, e) {
			t.Errorf("%d random bytes: Unseal gave different bytes", n)
		}
	}
}

// TestSealSampleJudgement checks the choice for large chunks, which is
// made on a 4 KiB sample: random bytes are stored as they are (a flat
// byte histogram settles it without trying zstd), while data whose bytes
// are as evenly spread but repeat (a table of every byte value, a random
// block written twice) or whose histogram is skewed is compressed.
func TestSealSampleJudgement(t *testing.T) {
	counting := make([]byte, 64<<10)
	for i := range counting {
		counting[i] = byte(i)
	}
	block := randomBytes(5, 2<<10)
	repeated := bytes.Repeat(block, 32)
	cases := []struct {
		name string
		data []byte
		raw  bool
	}{
		{"random", randomBytes(6, 64<<10), true},
		{"every byte value in turn", counting, false},
		{"a random block repeated", repeated, false},
		{"text", textBytes(7, 64<<10), false},
	}
	for _, c := range cases {
		e := objects.EncodeChunk(c.data)
		stored := objects.Seal(e, nil)
		if raw := &stored[0] == &e[0]; raw != c.raw {
			t.Errorf("%s: stored as is %v, want %v", c.name, raw, c.raw)
		}
		if !c.raw && !bytes.Equal(stored, objects.Compress(e)) {
			t.Errorf("%s: compressed stored form differs from Compress", c.name)
		}
	}
}

func TestSealLeavesTinyObjectsPlain(t *testing.T) {
	for _, e := range [][]byte{objects.EncodeChunk(nil), (&objects.Tree{}).Encode(), objects.EncodeChunk(make([]byte, 40))} {
		if stored := objects.Seal(e, nil); &stored[0] != &e[0] || len(stored) != len(e) {
			t.Errorf("%x: tiny object was not stored as is", e)
		}
	}
}

func TestSealReusesBuffer(t *testing.T) {
	e := objects.EncodeChunk(textBytes(1, 64<<10))
	buf := make([]byte, 1, 64<<10) // length is ignored
	stored := objects.Seal(e, buf)
	if !bytes.HasPrefix(stored, zstdMagic) {
		t.Fatal("text was not compressed")
	}
	if &stored[0] != &buf[:1][0] {
		t.Error("Seal did not write into the buffer it was given")
	}
	if _, err := objects.Unseal(objects.Sum(e), stored); err != nil {
		t.Fatal(err)
	}
}

// TestUnsealFlipEveryByte flips each byte of small stored forms, plain and
// compressed, in three ways. A flipped plain form must always be refused
// with ErrCorrupt. A flipped zstd frame must be refused too, unless it
// still decodes to exactly the original encoding: zstd frames are not
// canonical (a flip in an entropy table can leave the output unchanged),
// and the content hash, not the frame, is what Unseal verifies. Wrong
// bytes must never come back.
func TestUnsealFlipEveryByte(t *testing.T) {
	tree := &objects.Tree{}
	for _, name := range []string{"boot", "etc", "home", "usr", "var"} {
		tree.Entries = append(tree.Entries, objects.TreeEntry{Name: name, Kind: objects.EntryDir, Mode: 0o755, ID: idOf(name)})
	}
	cases := []struct {
		name       string
		enc        []byte
		compressed bool
	}{
		{"plain chunk", objects.EncodeChunk(randomBytes(3, 300)), false},
		{"plain tree", tree.Encode(), false},
		{"compressed chunk", objects.EncodeChunk(textBytes(3, 3000)), true},
		{"compressed zeros", objects.EncodeChunk(make([]byte, 5000)), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := objects.Sum(tc.enc)
			stored := objects.Seal(tc.enc, nil)
			if got := bytes.HasPrefix(stored, zstdMagic); got != tc.compressed {
				t.Fatalf("compressed = %v, want %v", got, tc.compressed)
			}
			harmless := 0
			for i := range stored {
				for _, mask := range []byte{0x01, 0x80, 0xff} {
					bad := bytes.Clone(stored)
					bad[i] ^= mask
					if !expectCorrupt(t, id, tc.enc, bad, tc.compressed, "flip byte %d with %#x", i, mask) {
						harmless++
					}
				}
			}
			if harmless > 0 {
				t.Logf("%d of %d flips still decoded to the original encoding", harmless, 3*len(stored))
			}
		})
	}
}

// TestUnsealFlipLargeCompressed flips random bytes of a large compressed object.
func TestUnsealFlipLargeCompressed(t *testing.T) {
	e := objects.EncodeChunk(textBytes(9, 256<<10))
	id := objects.Sum(e)
	stored := objects.Seal(e, nil)
	if !bytes.HasPrefix(stored, zstdMagic) {
		t.Fatal("text was not compressed")
	}
	r := rand.New(rand.NewPCG(1, 2))
	bad := bytes.Clone(stored)
	for range 200 {
		i := r.IntN(len(stored))
		mask := byte(1 + r.IntN(255))
		bad[i] ^= mask
		expectCorrupt(t, id, e, bad, true, "flip byte %d of %d with %#x", i, len(stored), mask)
		bad[i] ^= mask
	}
}

// TestUnsealTruncated cuts stored forms at every length (and extends them).
func TestUnsealTruncated(t *testing.T) {
	for _, e := range [][]byte{objects.EncodeChunk(textBytes(4, 2000)), objects.EncodeChunk(randomBytes(4, 200))} {
		id := objects.Sum(e)
		stored := objects.Seal(e, nil)
		for n := range len(stored) {
			expectCorrupt(t, id, e, stored[:n], false, "prefix of %d of %d bytes", n, len(stored))
		}
		expectCorrupt(t, id, e, cat(stored, raw(0)), false, "extra byte")
		expectCorrupt(t, id, e, cat(stored, stored), false, "stored form twice")
	}
}

func TestUnsealRefuses(t *testing.T) {
	hello := objects.EncodeChunk([]byte("hello"))
	notAnObject := raw(9, 1, 2, 3)
	compressedNotAnObject := zstdFrame(t, bytes.Repeat(raw(9), 1000))
	cases := []struct {
		name    string
		id      objects.ID
		stored  []byte
		wantErr string
	}{
		{"wrong id", idOf("other"), hello, "content hash mismatch"},
		{"zero id", objects.Zero, hello, "content hash mismatch"},
		{"empty", objects.Sum(nil), nil, "too short"},
		{"matching hash, no object", objects.Sum(notAnObject), notAnObject, "unknown object kind 9"},
		{"compressed, matching hash, no object", objects.Sum(bytes.Repeat(raw(9), 1000)), compressedNotAnObject, "unknown object kind 9"},
		{"zstd magic then garbage", objects.Sum(nil), cat(zstdMagic, randomBytes(5, 100)), "zstd"},
		{"bare zstd magic", objects.Sum(nil), zstdMagic, "zstd"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := objects.Unseal(tc.id, tc.stored)
			if !errors.Is(err, objects.ErrCorrupt) {
				t.Fatalf("Unseal: %v, want ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.id.String()) {
				t.Errorf("error %q should name the object and say %q", err, tc.wantErr)
			}
		})
	}
}

// TestUnsealBomb feeds hand-made zstd frames of about 2 KiB whose run-length
// blocks expand beyond MaxObjectSize: they must be refused, and refusing
// one must not cost more memory than the largest legitimate object.
func TestUnsealBomb(t *testing.T) {
	for _, tc := range []struct {
		name string
		fcs  int // frame content size in the header, -1 for none
	}{
		{"no content size", -1},
		{"content size too small", 1 << 20},
		{"content size too large", objects.MaxObjectSize + 1<<20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bomb := zstdRLEBomb(tc.fcs, objects.MaxObjectSize+1<<20)
			runtime.GC()
			before := totalAlloc()
			_, err := objects.Unseal(idOf("bomb"), bomb)
			used := totalAlloc() - before
			if !errors.Is(err, objects.ErrCorrupt) {
				t.Fatalf("Unseal of a %d-byte bomb: %v, want ErrCorrupt", len(bomb), err)
			}
			if used > objects.MaxObjectSize {
				t.Errorf("refusing a %d-byte bomb allocated %d MiB", len(bomb), used>>20)
			}
		})
	}
}

// zstdRLEBomb builds a zstd frame by hand (RFC 8878): a 2-byte raw block
// holding a chunk header, then run-length blocks of 128 KiB zeros up to
// size bytes. fcs is the frame content size to declare, -1 for none.
func zstdRLEBomb(fcs, size int) []byte {
	b := bytes.Clone(zstdMagic)
	const window = 12 << 3 // window log 10+12: 4 MiB
	if fcs < 0 {
		b = append(b, 0x00, window) // no FCS, no checksum, not single segment
	} else {
		b = append(b, 0xc0, window) // 8-byte FCS follows
		b = binary.LittleEndian.AppendUint64(b, uint64(fcs))
	}
	block := func(last bool, typ, size int) {
		h := uint32(size)<<3 | uint32(typ)<<1
		if last {
			h |= 1
		}
		b = append(b, byte(h), byte(h>>8), byte(h>>16))
	}
	block(false, 0, 2) // raw
	b = append(b, objects.ChunkHeader[:]...)
	n := (size - 2 + 128<<10 - 1) / (128 << 10)
	for i := range n {
		block(i == n-1, 1, 128<<10) // RLE
		b = append(b, 0)
	}
	return b
}

// expectCorrupt checks that Unseal refuses stored with ErrCorrupt. If
// sameIsOK, it may instead return exactly want; it returns false then.
func expectCorrupt(t *testing.T, id objects.ID, want, stored []byte, sameIsOK bool, format string, args ...any) bool {
	t.Helper()
	got, err := objects.Unseal(id, stored)
	if err == nil {
		if sameIsOK && bytes.Equal(got, want) {
			return false
		}
		t.Fatalf(format+": Unseal accepted it and returned %d bytes", append(args, len(got))...)
	}
	if !errors.Is(err, objects.ErrCorrupt) {
		t.Fatalf(format+": error %v does not wrap ErrCorrupt", append(args, err)...)
	}
	return true
}

// zstdFrame compresses b into one zstd frame with default options.
func zstdFrame(t *testing.T, b []byte) []byte {
	t.Helper()
	w, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	return w.EncodeAll(b, nil)
}
