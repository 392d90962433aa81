package chunker

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"testing"

	"github.com/zeebo/blake3"
)

// TestGearTable re-derives the gear table as docs/chunker.md describes it.
func TestGearTable(t *testing.T) {
	for i := range 256 {
		sum := blake3.Sum256(append([]byte("sbuml gear table v1"), byte(i)))
		if want := binary.LittleEndian.Uint64(sum[:8]); gear[i] != want {
			t.Errorf("gear[%d] = %#016x, derivation gives %#016x", i, gear[i], want)
		}
	}
}

// TestWindowHash checks the property the cut rule and the zero-run fast path
// rely on: after 64 bytes the rolling hash depends only on the last 64 bytes,
// so 64 zero bytes bring any hash to zeroHash, which further zeros keep.
func TestWindowHash(t *testing.T) {
	data := randomBytes("window", 1000)
	for _, start := range []uint64{0, 1, zeroHash, ^uint64(0)} {
		fp := start
		for i, b := range data {
			fp = fp<<1 + gear[b]
			if i < window-1 {
				continue
			}
			var want uint64
			for k := range window {
				want += gear[data[i-k]] << k
			}
			if fp != want {
				t.Fatalf("start %#x: hash after byte %d = %#x, window hash %#x", start, i, fp, want)
			}
		}
		for range window {
			fp = fp<<1 + gear[0]
		}
		if fp != zeroHash {
			t.Errorf("start %#x: 64 zero bytes give %#x, want zeroHash %#x", start, fp, zeroHash)
		}
	}
	if zeroHash<<1+gear[0] != zeroHash {
		t.Errorf("zeroHash %#x is not a fixed point", zeroHash)
	}
}

// TestMasks pins the masks of docs/chunker.md for Default.
func TestMasks(t *testing.T) {
	f := newFastCDC(Default)
	if f.maskS != 0xffff_c000_0000_0000 || f.maskL != 0xfffc_0000_0000_0000 {
		t.Errorf("Default masks = %#016x, %#016x; want 18 and 14 top bits", f.maskS, f.maskL)
	}
}

// cutParams are FastCDC parameter sets for comparing Cut with referenceCut.
// The 64/64/.. and 64/128/.. sets have masks of 4 and 5 bits, which zeroHash
// (5 leading zero bits) matches, so zero runs cut instead of being skipped.
var cutParams = []Params{
	Default,
	{FastCDC, 2 << 10, 8 << 10, 32 << 10},
	{FastCDC, 64, 64, 64},
	{FastCDC, 64, 64, 4096},
	{FastCDC, 64, 128, 1024},
	{FastCDC, 100, 256, 300},
	{FastCDC, 4096, 4096, 8192},
	{FastCDC, 1 << 20, 4 << 20, MaxSize},
}

func TestCutMatchesReference(t *testing.T) {
	inputs := map[string][]byte{
		"random":   randomBytes("cut random", 8<<20),
		"sparse":   sparseBytes("cut sparse", 8<<20, 20),
		"sparse10": sparseBytes("cut sparse10", 1<<20, 10),
		"text":     bytes.Repeat([]byte("All work and no play makes Jack a dull boy.\n"), 100000),
	}
	for name, data := range inputs {
		for _, p := range cutParams {
			t.Run(fmt.Sprintf("%s/%s", name, p), func(t *testing.T) {
				got := cutAll(data, p.Cut)
				want := cutAll(data, func(b []byte) int { return referenceCut(p, b) })
				if !slices.Equal(got, want) {
					t.Fatalf("Cut gives %d chunks, reference %d; first difference at chunk %d",
						len(got), len(want), firstDifference(got, want))
				}
			})
		}
	}
}

// TestZeroRuns puts zero runs of many lengths at many positions into random
// data and checks the zero-run fast path cuts exactly like the reference.
func TestZeroRuns(t *testing.T) {
	lengths := []int{1, 7, 8, 9, 63, 64, 65, 127, 128, 129, 200, 1000, 4095, 4096, 4097,
		16<<10 - 1, 16 << 10, 64<<10 + 3, 256 << 10, 256<<10 + 1, 1 << 20}
	random := randomBytes("zero runs", 2<<20)
	for _, p := range cutParams[:6] {
		for _, n := range lengths {
			for _, at := range []int{0, 1, 63, 64, 1000, 16<<10 - 64, 16 << 10, 64<<10 - 1, 300 << 10} {
				data := slices.Concat(random[:at], make([]byte, n), random[at:at+300<<10])
				got := cutAll(data, p.Cut)
				want := cutAll(data, func(b []byte) int { return referenceCut(p, b) })
				if !slices.Equal(got, want) {
					t.Fatalf("%s, %d zeros at %d: Cut gives %v..., reference %v...", p, n, at,
						got[:min(len(got), 8)], want[:min(len(want), 8)])
				}
			}
		}
		all := make([]byte, 3<<20+5)
		if got, want := cutAll(all, p.Cut), cutAll(all, func(b []byte) int { return referenceCut(p, b) }); !slices.Equal(got, want) {
			t.Fatalf("%s, all zeros: Cut and reference differ at chunk %d", p, firstDifference(got, want))
		}
	}
}

// TestChunkSizes checks normalized chunking on random data: the mean is near
// Avg and sizes cluster around it.
func TestChunkSizes(t *testing.T) {
	data := randomBytes("sizes", 64<<20)
	for _, p := range []Params{Default, {FastCDC, 2 << 10, 8 << 10, 32 << 10}} {
		lengths := cutAll(data, p.Cut)
		mean := float64(len(data)) / float64(len(lengths))
		near := 0
		for _, n := range lengths {
			if n >= int(p.Avg)/2 && n <= 2*int(p.Avg) {
				near++
			}
		}
		t.Logf("%s: %d chunks, mean %.0f, %.1f%% within avg/2..2avg", p, len(lengths), mean, 100*float64(near)/float64(len(lengths)))
		if mean < 0.8*float64(p.Avg) || mean > 1.2*float64(p.Avg) {
			t.Errorf("%s: mean chunk size %.0f, want near %d", p, mean, p.Avg)
		}
		if float64(near) < 0.85*float64(len(lengths)) {
			t.Errorf("%s: only %d of %d chunks within avg/2..2avg", p, near, len(lengths))
		}
	}
}

// TestInsertionResync checks what content-defined chunking is for: inserting
// bytes near the start changes only the chunks around the insertion.
func TestInsertionResync(t *testing.T) {
	data := randomBytes("resync", 16<<20)
	edited := slices.Concat(data[:100000], []byte("inserted"), data[100000:])
	hashes := func(b []byte) map[[32]byte]bool {
		m := map[[32]byte]bool{}
		for len(b) > 0 {
			n := Default.Cut(b)
			m[blake3.Sum256(b[:n])] = true
			b = b[n:]
		}
		return m
	}
	before, after := hashes(data), hashes(edited)
	changed := 0
	for h := range after {
		if !before[h] {
			changed++
		}
	}
	if changed > 2 {
		t.Errorf("inserting 8 bytes changed %d of %d chunks, want at most 2", changed, len(after))
	}
}

func firstDifference(a, b []int) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
