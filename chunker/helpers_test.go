package chunker

import (
	"encoding/binary"
	"io"
	"math/rand/v2"

	"github.com/zeebo/blake3"
)

// randomBytes returns the first n bytes of the BLAKE3 extendable output of
// the ASCII string seed: deterministic data anyone can regenerate.
func randomBytes(seed string, n int) []byte {
	h := blake3.New()
	h.WriteString(seed)
	b := make([]byte, n)
	if _, err := io.ReadFull(h.Digest(), b); err != nil {
		panic(err)
	}
	return b
}

// sparseBytes returns n bytes of alternating zero runs and data, like a
// sparse disk image. It reads the BLAKE3 extendable output R of seed and
// repeats, until n bytes are made: a zero run of length next(), then next()
// bytes taken from R, where next() reads one byte k and a little-endian
// uint32 v from R and returns v mod 2^(k mod (maxLog+1)), so lengths spread
// from 0 to 2^maxLog. The result is cut to n bytes.
func sparseBytes(seed string, n, maxLog int) []byte {
	h := blake3.New()
	h.WriteString(seed)
	r := h.Digest()
	next := func() int {
		var b [5]byte
		r.Read(b[:])
		k := int(b[0]) % (maxLog + 1)
		return int(binary.LittleEndian.Uint32(b[1:]) & (1<<k - 1))
	}
	out := make([]byte, 0, n+2<<maxLog)
	for len(out) < n {
		out = append(out, make([]byte, next())...)
		data := make([]byte, next())
		r.Read(data)
		out = append(out, data...)
	}
	return out[:n]
}

// referenceCut is the cut rule of docs/chunker.md written as plainly as
// possible, to check the optimized code against: hash every byte from the
// start of the chunk, no zero-run skipping, no unrolling.
func referenceCut(p Params, data []byte) int {
	if p.Kind == Fixed {
		return min(len(data), int(p.Avg))
	}
	if len(data) <= int(p.Min) {
		return len(data)
	}
	limit := min(len(data), int(p.Max))
	log2Avg := 0
	for 1<<log2Avg < p.Avg {
		log2Avg++
	}
	maskS := ^uint64(0) << (64 - (log2Avg + 2))
	maskL := ^uint64(0) << (64 - (log2Avg - 2))
	var fp uint64
	for i := 0; i < limit; i++ {
		fp = fp<<1 + gear[data[i]]
		length := i + 1
		if length < int(p.Min) {
			continue
		}
		mask := maskL
		if length < int(p.Avg) {
			mask = maskS
		}
		if fp&mask == 0 {
			return length
		}
	}
	return limit
}

// cutAll splits data with cut and returns the chunk lengths.
func cutAll(data []byte, cut func([]byte) int) []int {
	var lengths []int
	for len(data) > 0 {
		n := cut(data)
		lengths = append(lengths, n)
		data = data[n:]
	}
	return lengths
}

// streamAll splits r with a Chunker and returns copies of the chunks.
func streamAll(r io.Reader, p Params) ([][]byte, error) {
	c, err := New(r, p)
	if err != nil {
		return nil, err
	}
	var chunks [][]byte
	for {
		chunk, err := c.Next()
		if err == io.EOF {
			return chunks, nil
		}
		if err != nil {
			return chunks, err
		}
		chunks = append(chunks, append([]byte(nil), chunk...))
	}
}

// shortReader returns data in reads of random, often tiny, sizes; some reads
// return nothing, and the last may come with io.EOF.
type shortReader struct {
	data []byte
	rng  *rand.Rand
}

func newShortReader(data []byte, seed uint64) *shortReader {
	return &shortReader{data, rand.New(rand.NewPCG(seed, 0x5b0d))}
}

func (r *shortReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	var n int
	switch r.rng.IntN(4) {
	case 0:
		n = 0
	case 1:
		n = 1 + r.rng.IntN(16)
	case 2:
		n = 1 + r.rng.IntN(4096)
	default:
		n = len(p)
	}
	n = copy(p[:min(n, len(p))], r.data)
	r.data = r.data[n:]
	if len(r.data) == 0 && r.rng.IntN(2) == 0 {
		return n, io.EOF
	}
	return n, nil
}
