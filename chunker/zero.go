package chunker

import (
	"encoding/binary"
	"math/bits"
)

// IsZero reports whether b is all zero bytes. It reads 32 bytes at a time.
func IsZero(b []byte) bool {
	for len(b) >= 32 {
		w := binary.LittleEndian.Uint64(b) |
			binary.LittleEndian.Uint64(b[8:]) |
			binary.LittleEndian.Uint64(b[16:]) |
			binary.LittleEndian.Uint64(b[24:])
		if w != 0 {
			return false
		}
		b = b[32:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// zeroPrefix returns the number of zero bytes at the start of b.
func zeroPrefix(b []byte) int {
	n := 0
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
