package chunker

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		p       Params
		wantErr string // empty: valid
	}{
		{Default, ""},
		{RAM, ""},
		{Params{FastCDC, 64, 64, 64}, ""},
		{Params{FastCDC, 2 << 10, 8 << 10, 32 << 10}, ""},
		{Params{FastCDC, 1 << 20, 8 << 20, MaxSize}, ""},
		{Params{Fixed, 1, 1, 1}, ""},
		{Params{Fixed, MaxSize, MaxSize, MaxSize}, ""},
		{Params{}, "unknown kind 0"},
		{Params{3, 1, 1, 1}, "unknown kind 3"},
		{Params{FastCDC, 0, 64 << 10, 256 << 10}, "must not be zero"},
		{Params{Fixed, 0, 0, 0}, "must not be zero"},
		{Params{FastCDC, 16 << 10, 64 << 10, 32 << 20}, "max 33554432 is above the limit of 16777216"},
		{Params{Fixed, 32 << 20, 32 << 20, 32 << 20}, "above the limit"},
		{Params{Fixed, 4096, 4096, 8192}, "min, avg and max equal"},
		{Params{FastCDC, 32, 64, 128}, "min 32 is below the hash window of 64 bytes"},
		{Params{FastCDC, 128 << 10, 64 << 10, 256 << 10}, "min 131072 is above avg 65536"},
		{Params{FastCDC, 16 << 10, 64 << 10, 32 << 10}, "max 32768 is below avg 65536"},
		{Params{FastCDC, 16 << 10, 60 << 10, 256 << 10}, "avg 61440 is not a power of two"},
	}
	for _, tt := range tests {
		t.Run(tt.p.String(), func(t *testing.T) {
			err := tt.p.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate() = %v, want error containing %q", err, tt.wantErr)
			}
			if _, newErr := New(strings.NewReader("x"), tt.p); (newErr == nil) != (err == nil) {
				t.Errorf("New error %v disagrees with Validate error %v", newErr, err)
			}
		})
	}
}

func TestCutPanicsOnInvalidParams(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Cut with zero Params did not panic")
		}
	}()
	Params{}.Cut([]byte("data"))
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{FastCDC: "fastcdc", Fixed: "fixed", 9: "kind(9)"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", uint8(k), got, want)
		}
	}
}

// TestStreaming checks that the Chunker cuts exactly like repeated Cut,
// however the reader splits its reads, and for inputs around buffer sizes.
func TestStreaming(t *testing.T) {
	random := randomBytes("streaming", 5<<20+77)
	sparse := sparseBytes("streaming", 5<<20, 20)
	params := []Params{Default, RAM, {FastCDC, 2 << 10, 8 << 10, 32 << 10}, {FastCDC, 64, 128, 1024}, {Fixed, 1000, 1000, 1000}}
	sizes := []int{0, 1, 63, 64, 65, 4095, 4096, 4097, 16 << 10, 256<<10 - 1, 256 << 10, 256<<10 + 1, 1 << 20, 1<<20 + 1, 5<<20 + 77}
	for _, p := range params {
		for _, n := range sizes {
			for name, data := range map[string][]byte{"random": random[:n], "sparse": sparse[:min(n, len(sparse))]} {
				want := cutAll(data, p.Cut)
				readers := map[string]io.Reader{
					"whole":    bytes.NewReader(data),
					"short":    newShortReader(data, uint64(n)),
					"onebyte":  iotest.OneByteReader(bytes.NewReader(data)),
					"dataeof":  iotest.DataErrReader(bytes.NewReader(data)),
					"halfread": iotest.HalfReader(bytes.NewReader(data)),
				}
				if n > 300<<10 {
					delete(readers, "onebyte")
				}
				for rname, r := range readers {
					chunks, err := streamAll(r, p)
					if err != nil {
						t.Fatalf("%s, %d %s bytes, %s reader: %v", p, n, name, rname, err)
					}
					if got := chunkLengths(chunks); !slices.Equal(got, want) {
						t.Fatalf("%s, %d %s bytes, %s reader: lengths differ from Cut at chunk %d",
							p, n, name, rname, firstDifference(got, want))
					}
					if !bytes.Equal(bytes.Join(chunks, nil), data) {
						t.Fatalf("%s, %d %s bytes, %s reader: chunks do not join to the input", p, n, name, rname)
					}
				}
			}
		}
	}
}

func TestReset(t *testing.T) {
	a, b := randomBytes("reset a", 1<<20), randomBytes("reset b", 3<<20)
	c, err := New(bytes.NewReader(a), Default)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Next(); err != nil {
		t.Fatal(err)
	}
	c.Reset(bytes.NewReader(b))
	var got []int
	for {
		chunk, err := c.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, len(chunk))
	}
	if want := cutAll(b, Default.Cut); !slices.Equal(got, want) {
		t.Errorf("after Reset: lengths differ from Cut at chunk %d", firstDifference(got, want))
	}
}

func TestReadError(t *testing.T) {
	boom := errors.New("disk on fire")
	r := io.MultiReader(bytes.NewReader(randomBytes("read error", 3<<20)), iotest.ErrReader(boom))
	c, err := New(r, Default)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for {
		_, err = c.Next()
		if err != nil {
			break
		}
		n++
	}
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "chunker: read") {
		t.Fatalf("after %d chunks Next() = %v, want wrapped %v", n, err, boom)
	}
	if _, again := c.Next(); again != err {
		t.Errorf("second Next() after error = %v, want %v again", again, err)
	}
}

// stuckReader never returns data nor an error.
type stuckReader struct{}

func (stuckReader) Read([]byte) (int, error) { return 0, nil }

func TestNoProgress(t *testing.T) {
	c, err := New(stuckReader{}, Default)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Next(); !errors.Is(err, io.ErrNoProgress) {
		t.Errorf("Next() on a stuck reader = %v, want io.ErrNoProgress", err)
	}
}

// fuzzParams are small parameter sets that give many chunks on fuzz inputs.
var fuzzParams = []Params{
	{FastCDC, 64, 64, 64},
	{FastCDC, 64, 64, 300},
	{FastCDC, 64, 128, 1024},
	{FastCDC, 64, 256, 1024},
	{FastCDC, 100, 512, 4096},
	{FastCDC, 1024, 2048, 2048},
	{Fixed, 100, 100, 100},
}

// FuzzChunker checks, for any input with a zero run inserted anywhere and any
// split of the reads, that the Chunker cuts like Cut and like the reference,
// that chunks respect Min and Max, and that they join to the input.
func FuzzChunker(f *testing.F) {
	f.Add([]byte("hello, world"), uint16(0), uint16(0), uint64(1), uint8(0))
	f.Add(randomBytes("fuzz 1", 3000), uint16(100), uint16(5000), uint64(2), uint8(2))
	f.Add(randomBytes("fuzz 2", 10000), uint16(9000), uint16(64), uint64(3), uint8(4))
	f.Add(bytes.Repeat([]byte{0, 1}, 4000), uint16(1), uint16(65535), uint64(4), uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, zeroAt, zeroLen uint16, seed uint64, which uint8) {
		p := fuzzParams[int(which)%len(fuzzParams)]
		at := int(zeroAt) % (len(data) + 1)
		data = append(data[:at:at], append(make([]byte, zeroLen), data[at:]...)...)

		chunks, err := streamAll(newShortReader(data, seed), p)
		if err != nil {
			t.Fatal(err)
		}
		got := chunkLengths(chunks)
		if want := cutAll(data, p.Cut); !slices.Equal(got, want) {
			t.Fatalf("%s: stream and Cut differ at chunk %d", p, firstDifference(got, want))
		}
		if want := cutAll(data, func(b []byte) int { return referenceCut(p, b) }); !slices.Equal(got, want) {
			t.Fatalf("%s: stream and reference differ at chunk %d", p, firstDifference(got, want))
		}
		for i, n := range got {
			if n > int(p.Max) || n < int(p.Min) && i < len(got)-1 || n == 0 {
				t.Fatalf("%s: chunk %d of %d has %d bytes", p, i, len(got), n)
			}
		}
		if !bytes.Equal(bytes.Join(chunks, nil), data) {
			t.Fatal("chunks do not join to the input")
		}
	})
}

func chunkLengths(chunks [][]byte) []int {
	lengths := make([]int, len(chunks))
	for i, c := range chunks {
		lengths[i] = len(c)
	}
	return lengths
}
