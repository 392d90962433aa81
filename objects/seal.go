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
			zstd.WithDecodeAllCapLimit(true),
			zstd.WithDecoderMaxMemory(MaxObjectSize),
			zstd.WithDecoderMaxWindow(MaxObjectSize))
		if err != nil {
			panic(err)
		}
	})
	return zstdEnc, zstdDec
}

// sealSample is the size of the sample Seal compresses to judge a large object.
const sealSample = 4 << 10

// Seal returns the stored form of a canonical encoding: compressed when
// that saves at least 1/32 of the size, else enc itself (not copied).
// buf, if not nil, is reused for the compressed bytes.
func Seal(enc, buf []byte) []byte {
	if len(enc) < 64 {
		return enc
	}
	e, _ := codecs()
	// Large objects are sampled first: random data (most of a new disk
	// or a compressed file) is kept as it is without a full attempt.
	if len(enc) >= 4*sealSample {
		mid := len(enc)/2 - sealSample/2
		if incompressible(e, enc[mid:mid+sealSample], buf) {
			return enc
		}
	}
	c := e.EncodeAll(enc, buf[:0])
	if len(c) < len(enc)-len(enc)/32 {
		return c
	}
	return enc
}

func incompressible(e *zstd.Encoder, sample, buf []byte) bool {
	c := e.EncodeAll(sample, buf[:0])
	return len(c) >= sealSample-sealSample/32
}

// ChunkStoredRaw reports, without building the chunk's encoding, whether
// Seal keeps the chunk holding data as it is because a sample of it does
// not compress. Then its stored form is ChunkHeader followed by data, and
// writers can store the two parts without joining them.
func ChunkStoredRaw(data []byte) bool {
	n := len(ChunkHeader) + len(data)
	if n < 4*sealSample {
		return false
	}
	// The same sample Seal takes, in data's coordinates.
	mid := n/2 - sealSample/2 - len(ChunkHeader)
	e, _ := codecs()
	return incompressible(e, data[mid:mid+sealSample], nil)
}

// ErrCorrupt marks objects whose stored bytes do not match their ID or
// cannot be decoded. Test with errors.Is.
var ErrCorrupt = errors.New("corrupt object")

// undeclaredSizeLimit bounds the content of a zstd frame that does not
// declare its size (the encoder leaves it out below 256 bytes).
const undeclaredSizeLimit = 4 << 10

// Unseal turns a stored form back into the canonical encoding and verifies
// that it hashes to id. The result may alias stored.
func Unseal(id ID, stored []byte) ([]byte, error) {
	enc := stored
	if bytes.HasPrefix(stored, zstdMagic) {
		// Size the output from the frame header, so a small hostile frame
		// cannot make the decoder grow a buffer up to the object limit.
		// Frames of under 256 bytes of content may not declare a size.
		var h zstd.Header
		if err := h.Decode(stored); err != nil {
			return nil, fmt.Errorf("object %s: %w: zstd header: %v", id, ErrCorrupt, err)
		}
		size := uint64(undeclaredSizeLimit)
		if h.HasFCS {
			size = h.FrameContentSize
		}
		if size > MaxObjectSize+headerSize {
			return nil, fmt.Errorf("object %s: %w: declares %d bytes, over the limit", id, ErrCorrupt, size)
		}
		_, d := codecs()
		var err error
		enc, err = d.DecodeAll(stored, make([]byte, 0, size))
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
