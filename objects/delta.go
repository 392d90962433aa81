package objects

import (
	"crypto/subtle"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// A delta is the third stored form of an object, kept only by the local
// pack store (see DeltaPutter): the object as the difference from
// another object of the same length, its base, which the same store
// holds whole:
//
//	0xde, base ID [32], zstd frame of (canonical(base) XOR canonical(object))
//
// Its first byte is neither a Kind (1-5) nor the first of the zstd magic
// (0x28), so it is told apart from the other two forms by that byte. The
// base of a delta is never itself a delta: reading one costs two records
// at most, and a chain cannot loop. A delta is not self-contained, so no
// store ever hands one out (Get resolves it) and Unseal refuses it.
const deltaMagic = 0xde

// DeltaHeaderSize is the size of the bytes before a delta's zstd frame:
// its magic byte and its base's ID.
const DeltaHeaderSize = 1 + IDSize

// IsDelta reports whether a stored form is a delta.
func IsDelta(stored []byte) bool { return len(stored) > 0 && stored[0] == deltaMagic }

// DeltaBase returns the ID of the base a delta names; ok is false if
// stored is not a delta.
func DeltaBase(stored []byte) (base ID, ok bool) {
	if !IsDelta(stored) || len(stored) < DeltaHeaderSize {
		return Zero, false
	}
	return ID(stored[1:DeltaHeaderSize]), true
}

var xorBufs = sync.Pool{New: func() any { return new([]byte) }}

// EncodeDelta returns the delta of enc against base, whose ID is baseID
// and whose canonical encoding has the same length as enc, appended to
// buf[:0].
func EncodeDelta(baseID ID, base, enc, buf []byte) []byte {
	if len(base) != len(enc) {
		panic("objects: EncodeDelta of encodings of different lengths")
	}
	pooled := xorBufs.Get().(*[]byte)
	defer xorBufs.Put(pooled)
	x := grow(*pooled, len(enc))
	*pooled = x
	subtle.XORBytes(x, base, enc)
	out := append(buf[:0], deltaMagic)
	out = append(out, baseID[:]...)
	e, _ := codecs()
	return e.EncodeAll(x, out)
}

// ApplyDelta returns the canonical encoding of id from its delta and
// the canonical encoding of the delta's base, and verifies that it
// hashes to id.
func ApplyDelta(id ID, delta, base []byte) ([]byte, error) {
	if len(delta) < DeltaHeaderSize || !IsDelta(delta) {
		return nil, fmt.Errorf("object %s: %w: not a delta", id, ErrCorrupt)
	}
	frame := delta[DeltaHeaderSize:]
	var h zstd.Header
	if err := h.Decode(frame); err != nil {
		return nil, fmt.Errorf("object %s: %w: delta's zstd header: %v", id, ErrCorrupt, err)
	}
	if h.HasFCS && h.FrameContentSize != uint64(len(base)) {
		return nil, fmt.Errorf("object %s: %w: delta of %d bytes against a base of %d", id, ErrCorrupt, h.FrameContentSize, len(base))
	}
	_, d := codecs()
	enc, err := d.DecodeAll(frame, make([]byte, 0, len(base)))
	if err != nil {
		return nil, fmt.Errorf("object %s: %w: delta's zstd frame: %v", id, ErrCorrupt, err)
	}
	if len(enc) != len(base) {
		return nil, fmt.Errorf("object %s: %w: delta of %d bytes against a base of %d", id, ErrCorrupt, len(enc), len(base))
	}
	subtle.XORBytes(enc, enc, base)
	if Sum(enc) != id {
		return nil, fmt.Errorf("object %s: %w: content hash mismatch after applying its delta", id, ErrCorrupt)
	}
	if _, err := KindOf(enc); err != nil {
		return nil, fmt.Errorf("object %s: %w: %v", id, ErrCorrupt, err)
	}
	return enc, nil
}

// grow returns b resized to n bytes, reallocated if its capacity is short.
func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}
