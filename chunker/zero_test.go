package chunker

import "testing"

// TestIsZero puts a single non-zero byte at every position of buffers of
// many sizes, so every word and tail path sees it.
func TestIsZero(t *testing.T) {
	for size := 0; size <= 200; size++ {
		buf := make([]byte, size)
		if !IsZero(buf) {
			t.Fatalf("IsZero(%d zero bytes) = false", size)
		}
		if got := zeroPrefix(buf); got != size {
			t.Fatalf("zeroPrefix(%d zero bytes) = %d", size, got)
		}
		for i := range buf {
			for _, v := range []byte{1, 0x80, 0xff} {
				buf[i] = v
				if IsZero(buf) {
					t.Fatalf("IsZero(%d bytes with %#x at %d) = true", size, v, i)
				}
				if got := zeroPrefix(buf); got != i {
					t.Fatalf("zeroPrefix(%d bytes with %#x at %d) = %d", size, v, i, got)
				}
			}
			buf[i] = 0
		}
	}
}
