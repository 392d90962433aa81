package objects

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// The stored form of an object is what a Store keeps: either the canonical
// encoding itself (its first byte is a Kind, 1-5) or a zstd frame holding
// it (first bytes 28 b5 2f fd). Seal chooses; Unseal reverses and verifies.

var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// MaxObjectSize bounds the decoded size of any object, so a hostile
// stored form cannot make a reader allocate without limit.
const MaxObjectSize = 64 << 20

var (
	zstdOnce sync.Once
	zstdEnc  *zstd.Encoder
	zstdDec  *zstd.Decoder
)

func codecs() (*zstd.Encoder, *zstd.Decoder) {
	zstdOnce.Do(func() {
		var err error
		zstdEnc, err = zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
			zstd.WithZeroFrames(true))
		if err != nil {
			panic(err)
		}
		zstdDec, err = zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)),
			zstd.WithDecoderMaxMemory(MaxObjectSize),
			zstd.WithDecoderMaxWindow(MaxObjectSize))
		if err != nil {
			panic(err)
		}
	})
	return zstdEnc, zstdDec
}

// Seal returns the stored form of a canonical encoding: compressed when
// that saves at least 1/32 of the size, else enc itself (not copied).
// buf, if not nil, is reused for the compressed bytes.
func Seal(enc, buf []byte) []byte {
	if len(enc) < 64 {
		return enc
	}
	e, _ := codecs()
	c := e.EncodeAll(enc, buf[:0])
	if len(c) < len(enc)-len(enc)/32 {
		return c
	}
	return enc
}

// ErrCorrupt marks objects whose stored bytes do not match their ID or
// cannot be decoded. Test with errors.Is.
var ErrCorrupt = errors.New("corrupt object")

// Unseal turns a stored form back into the canonical encoding and verifies
// that it hashes to id. The result may alias stored.
func Unseal(id ID, stored []byte) ([]byte, error) {
	enc := stored
	if bytes.HasPrefix(stored, zstdMagic) {
		_, d := codecs()
		var err error
		enc, err = d.DecodeAll(stored, nil)
		if err != nil {
			return nil, fmt.Errorf("object %s: %w: zstd: %v", id, ErrCorrupt, err)
		}
	}
	if len(enc) > MaxObjectSize+headerSize {
		return nil, fmt.Errorf("object %s: %w: %d bytes exceeds the limit", id, ErrCorrupt, len(enc))
	}
	if Sum(enc) != id {
		return nil, fmt.Errorf("object %s: %w: content hash mismatch", id, ErrCorrupt)
	}
	if _, err := KindOf(enc); err != nil {
		return nil, fmt.Errorf("object %s: %w: %v", id, ErrCorrupt, err)
	}
	return enc, nil
}
