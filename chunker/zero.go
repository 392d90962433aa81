package chunker

import (
	"bytes"
	"encoding/binary"
	"math/bits"
)

// zeroPage is compared with data by IsZero.
var zeroPage [4096]byte

// IsZero reports whether b is all zero bytes. It compares b with a page of
// zeros, 4 KiB at a time, using bytes.Equal, whose vectorized
// implementation is faster than reading words in Go.
func IsZero(b []byte) bool {
	for len(b) > len(zeroPage) {
		if !bytes.Equal(b[:len(zeroPage)], zeroPage[:]) {
			return false
		}
		b = b[len(zeroPage):]
	}
	return bytes.Equal(b, zeroPage[:len(b)])
}

// zeroPrefix returns the number of zero bytes at the start of b.
func zeroPrefix(b []byte) int {
	n := 0
	for len(b)-n >= 256 && IsZero(b[n:n+256]) {
		n += 256
	}
	for len(b)-n >= 8 {
		if w := binary.LittleEndian.Uint64(b[n:]); w != 0 {
			return n + bits.TrailingZeros64(w)/8
		}
		n += 8
	}
	for n < len(b) && b[n] == 0 {
		n++
	}
	return n
}
