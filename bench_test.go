package sbuml

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sbuml/sbuml/chunker"
	"github.com/sbuml/sbuml/objects"
)

// BenchmarkImport measures, in one run, the chunker alone and the hash
// alone on one core, then importing 256 MiB of new incompressible data and
// re-importing it unchanged. It reports each rate and the ratios to
// ideal = 2 / (1/chunker + 1/hash), the rate two cores would reach if all
// they did was cut and hash. Targets: unchanged >= 0.7x ideal, new >= 0.5x
// ideal, chunker >= 1000 MB/s.
//
//	go test -run '^$' -bench BenchmarkImport -benchtime 3x .
func BenchmarkImport(b *testing.B) {
	const fileSize, files = 64 << 20, 4
	src := benchDir(b)
	data := make([]byte, fileSize)
	rng := rand.NewChaCha8([32]byte{1})
	for i := 0; i < files; i++ {
		rng.Read(data)
		if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("f%d", i)), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	chunkRate := rate(func() int64 {
		c, _ := chunker.New(bytes.NewReader(data), chunker.Default)
		for {
			if _, err := c.Next(); err != nil {
				break
			}
		}
		return int64(len(data))
	})
	hashRate := rate(func() int64 {
		const piece = 64 << 10
		for off := 0; off+piece <= len(data); off += piece {
			objects.Sum(data[off : off+piece])
		}
		return int64(len(data))
	})
	ideal := 2 / (1/chunkRate + 1/hashRate)

	ctx := context.Background()
	var newSecs, sameSecs float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dir := filepath.Join(benchDir(b), "sb")
		s, err := Init(dir)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t0 := time.Now()
		if _, err := s.Import(ctx, src, SnapshotOptions{Message: "new"}); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := s.Import(ctx, src, SnapshotOptions{Message: "unchanged"}); err != nil {
			b.Fatal(err)
		}
		newSecs += t1.Sub(t0).Seconds()
		sameSecs += time.Since(t1).Seconds()
		b.StopTimer()
		s.Close()
		os.RemoveAll(dir)
		b.StartTimer()
	}
	total := float64(fileSize*files) * float64(b.N) / 1e6
	newRate, sameRate := total/newSecs, total/sameSecs
	b.ReportMetric(chunkRate, "chunker-MB/s")
	b.ReportMetric(hashRate, "hash-MB/s")
	b.ReportMetric(ideal, "ideal-MB/s")
	b.ReportMetric(newRate, "new-MB/s")
	b.ReportMetric(sameRate, "unchanged-MB/s")
	b.ReportMetric(newRate/ideal, "new/ideal")
	b.ReportMetric(sameRate/ideal, "unchanged/ideal")
}

// benchDir returns a fresh directory on tmpfs (or $SBUML_BENCH_DIR),
// removed when the benchmark ends.
func benchDir(b *testing.B) string {
	root := os.Getenv("SBUML_BENCH_DIR")
	if root == "" {
		root = "/dev/shm"
	}
	dir, err := os.MkdirTemp(root, "sbuml-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// rate runs fn for about a second on the calling goroutine and returns MB/s.
func rate(fn func() int64) float64 {
	var n int64
	start := time.Now()
	for time.Since(start) < time.Second {
		n += fn()
	}
	return float64(n) / 1e6 / time.Since(start).Seconds()
}
