package chunker

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"
)

// measureCPU reports, besides the wall-clock MB/s, the throughput per second
// of CPU time the process used ("cpu-MB/s"), which holds still when other
// processes compete for the cores. Call it before the timed loop and call
// the function it returns after.
func measureCPU(b *testing.B, bytesPerOp int) func() {
	start := processCPU()
	return func() {
		if used := processCPU() - start; used > 10*time.Millisecond {
			b.ReportMetric(float64(b.N)*float64(bytesPerOp)/used.Seconds()/1e6, "cpu-MB/s")
		}
	}
}

// benchmarkStream chunks data with a Chunker b.N times.
func benchmarkStream(b *testing.B, data []byte, p Params) {
	c, err := New(nil, p)
	if err != nil {
		b.Fatal(err)
	}
	r := bytes.NewReader(data)
	b.SetBytes(int64(len(data)))
	defer measureCPU(b, len(data))()
	for b.Loop() {
		r.Reset(data)
		c.Reset(r)
		for {
			if _, err := c.Next(); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkChunker streams 64 MiB of random data through FastCDC Default.
func BenchmarkChunker(b *testing.B) {
	benchmarkStream(b, randomBytes("benchmark", 64<<20), Default)
}

// BenchmarkChunkerZeros streams 64 MiB of zero bytes through FastCDC
// Default: the zero-run fast path.
func BenchmarkChunkerZeros(b *testing.B) {
	benchmarkStream(b, make([]byte, 64<<20), Default)
}

// BenchmarkCut chunks 64 MiB of random data in memory with Params.Cut.
func BenchmarkCut(b *testing.B) {
	data := randomBytes("benchmark", 64<<20)
	b.SetBytes(int64(len(data)))
	defer measureCPU(b, len(data))()
	for b.Loop() {
		for rest := data; len(rest) > 0; {
			rest = rest[Default.Cut(rest):]
		}
	}
}

// BenchmarkIsZero checks zero buffers of a page, a chunk and a big chunk.
func BenchmarkIsZero(b *testing.B) {
	for _, size := range []int{4 << 10, 64 << 10, 1 << 20} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			buf := make([]byte, size)
			b.SetBytes(int64(size))
			defer measureCPU(b, size)()
			for b.Loop() {
				if !IsZero(buf) {
					b.Fatal("zero buffer not zero")
				}
			}
		})
	}
}
