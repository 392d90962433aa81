package chunker

import "math/bits"

// FastCDC (Xia et al., "FastCDC: a Fast and Efficient Content-Defined
// Chunking Approach for Data Deduplication", USENIX ATC 2016) as specified in
// docs/chunker.md:
//
//   - The gear hash of the bytes up to index i is
//     fp(i) = fp(i-1)<<1 + gear[data[i]] (mod 2^64). A byte's contribution
//     is shifted out after 64 more bytes, so fp(i) depends only on the 64
//     bytes ending at i: hashing starts 64 bytes before the first possible
//     cut point, and every fp(i) tested is this window hash.
//   - Cut-point skipping: no cut is considered before Min bytes.
//   - Normalized chunking, level 2: below Avg bytes the mask has
//     log2(Avg)+2 bits (cuts are 4 times rarer), from Avg on log2(Avg)-2
//     bits (4 times likelier). Masks are the top bits of the hash, since bit
//     k of fp depends on the last k+1 bytes only: the top bit sees all 64.
//   - A chunk of length L ends after data[L-1] if fp(L-1)&mask == 0; a
//     chunk reaching Max bytes is cut there.

// window is the number of bytes the gear hash depends on.
const window = 64

// normLevel is the FastCDC normalization level.
const normLevel = 2

// zeroHash is the gear hash of 64 zero bytes. It is a fixed point of the hash
// over zero bytes: zeroHash<<1 + gear[0] == zeroHash, so once it is reached
// every further zero byte keeps it, whatever preceded the zeros.
var zeroHash = -gear[0]

// scanBlock is how many bytes are hashed between checks for a zero run.
const scanBlock = 256

// fastCDC holds a valid FastCDC parameter set in the form cut uses.
type fastCDC struct {
	min, avg, max int
	maskS, maskL  uint64 // the masks for chunks shorter than avg, and the rest
}

// newFastCDC returns the form of p that cut uses; p must be valid.
func newFastCDC(p Params) fastCDC {
	avgBits := bits.TrailingZeros32(p.Avg)
	return fastCDC{
		min:   int(p.Min),
		avg:   int(p.Avg),
		max:   int(p.Max),
		maskS: topBits(avgBits + normLevel),
		maskL: topBits(avgBits - normLevel),
	}
}

// topBits returns a mask of the n most significant bits of a uint64.
func topBits(n int) uint64 { return ^uint64(0) << (64 - n) }

// cut returns the length of the first chunk of data; see Params.Cut.
func (f *fastCDC) cut(data []byte) int {
	if len(data) <= f.min {
		return len(data)
	}
	limit := min(len(data), f.max)
	// The window hash of a cut after data[i] takes data[i-63:i+1]; the
	// first candidate is i = min-1.
	var fp uint64
	for _, b := range data[f.min-window : f.min-1] {
		fp = fp<<1 + gear[b]
	}
	// Candidates are i in [min-1, limit-1): a chunk reaching limit is cut
	// there anyway, so data[limit-1] is never hashed.
	normal := min(f.avg, limit)
	i, fp := scan(data[:normal-1], f.min-1, fp, f.maskS)
	if i < normal-1 {
		return i + 1
	}
	i, _ = scan(data[:limit-1], i, fp, f.maskL)
	return i + 1
}

// scan hashes data[i:] into fp and returns the index of the first byte after
// which fp&mask == 0, or len(data) if there is none, and the hash there.
// Long runs of zero bytes are skipped without hashing each byte; the result
// is the same as hashing them.
func scan(data []byte, i int, fp, mask uint64) (int, uint64) {
	for i < len(data) {
		end := min(i+scanBlock, len(data))
		block := data[i:end]
		// Eight bytes a round, in pairs: the hash after a pair is computed
		// from the hash before it (fp<<2 + ...), which halves the chain of
		// dependent instructions; the hash in between is checked aside.
		for len(block) >= 8 {
			g0, g1 := gear[block[0]], gear[block[1]]
			f := fp<<1 + g0
			fp = fp<<2 + (g0<<1 + g1)
			if f&mask == 0 {
				return end - len(block), f
			}
			if fp&mask == 0 {
				return end - len(block) + 1, fp
			}
			g0, g1 = gear[block[2]], gear[block[3]]
			f = fp<<1 + g0
			fp = fp<<2 + (g0<<1 + g1)
			if f&mask == 0 {
				return end - len(block) + 2, f
			}
			if fp&mask == 0 {
				return end - len(block) + 3, fp
			}
			g0, g1 = gear[block[4]], gear[block[5]]
			f = fp<<1 + g0
			fp = fp<<2 + (g0<<1 + g1)
			if f&mask == 0 {
				return end - len(block) + 4, f
			}
			if fp&mask == 0 {
				return end - len(block) + 5, fp
			}
			g0, g1 = gear[block[6]], gear[block[7]]
			f = fp<<1 + g0
			fp = fp<<2 + (g0<<1 + g1)
			if f&mask == 0 {
				return end - len(block) + 6, f
			}
			if fp&mask == 0 {
				return end - len(block) + 7, fp
			}
			block = block[8:]
		}
		for j, b := range block {
			if fp = fp<<1 + gear[b]; fp&mask == 0 {
				return end - len(block) + j, fp
			}
		}
		i = end
		// Zero bytes keep the hash at zeroHash, which does not match the
		// mask (the last byte hashed would have been a cut): no cut falls
		// in a run of zeros that follows.
		if fp == zeroHash {
			i += zeroPrefix(data[i:])
		}
	}
	return i, fp
}
