package objects

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// The stored form of an object is what a Store keeps: either the canonical
// encoding itself (its first byte is a Kind, 1-5) or a zstd frame holding
// it (first bytes 28 b5 2f fd). Seal chooses; Unseal reverses and verifies.
// A scrapbook's pack store also keeps deltas (see delta.go), which it
// resolves itself.

var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// IsCompressed reports whether a stored form is a zstd frame rather than
// the canonical encoding itself.
func IsCompressed(stored []byte) bool { return bytes.HasPrefix(stored, zstdMagic) }

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

// Compress returns enc as a zstd frame: the stored form Seal chooses for
// enc whenever it chooses to compress.
func Compress(enc []byte) []byte {
	e, _ := codecs()
	return e.EncodeAll(enc, nil)
}

// incompressible reports whether a sample of sealSample bytes fails to
// compress by 1/32. A sample whose bytes look random is judged without
// trying zstd, which costs several times more on tables out of cache.
func incompressible(e *zstd.Encoder, sample, buf []byte) bool {
	if looksRandom(sample) {
		return true
	}
	if cap(buf) < 2*sealSample {
		// Allocating an output buffer per sample cost more than
		// compressing the sample.
		pooled := sampleBufs.Get().(*[]byte)
		defer sampleBufs.Put(pooled)
		buf = *pooled
	}
	c := e.EncodeAll(sample, buf[:0])
	return len(c) >= sealSample-sealSample/32
}

var sampleBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, 2*sealSample)
	return &b
}}

// looksRandom reports whether the byte histogram of a sample of
// sealSample bytes is as flat as random data's: Pearson's chi-squared
// statistic against the uniform distribution lies within [180, 400]. For
// random samples it has mean 255 and standard deviation 23, so 99.98% of
// them fall inside. Text and code lie far above (a skewed histogram), and
// tables or repeated sequences below (too regular to be chance); both go on
// to the zstd trial. Of 121,709 samples of files under /usr, one that zstd
// could shrink by 3% fell inside. What it cannot see is repetition among
// random bytes (a sample a fifth of which repeats earlier 64-byte runs
// looks random, though zstd would save a few percent); such data is
// stored as it is.
func looksRandom(sample []byte) bool {
	if len(sample) != sealSample {
		panic("objects: looksRandom needs a sample of sealSample bytes")
	}
	// Four sets of counters, so consecutive equal bytes do not wait on
	// each other's increments.
	var h [4][256]uint32
	for i := 0; i+8 <= len(sample); i += 8 {
		v := binary.LittleEndian.Uint64(sample[i:])
		h[0][byte(v)]++
		h[1][byte(v>>8)]++
		h[2][byte(v>>16)]++
		h[3][byte(v>>24)]++
		h[0][byte(v>>32)]++
		h[1][byte(v>>40)]++
		h[2][byte(v>>48)]++
		h[3][byte(v>>56)]++
	}
	const expected = sealSample / 256
	chi2 := 0
	for c := 0; c < 256; c++ {
		d := int(h[0][c]+h[1][c]+h[2][c]+h[3][c]) - expected
		chi2 += d * d
	}
	chi2 /= expected
	return chi2 >= 180 && chi2 <= 400
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
	if IsDelta(stored) {
		return nil, fmt.Errorf("object %s: %w: a delta, which only the store that holds its base can resolve", id, ErrCorrupt)
	}
	enc := stored
	if IsCompressed(stored) {
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
