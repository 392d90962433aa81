package objects_test

import (
	"context"
	"encoding/binary"
	"path/filepath"
	"testing"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/osfs"
	luke "lukechampine.com/blake3"

	"github.com/sbuml/sbuml/objects"
)

// BenchmarkHash compares the two BLAKE3 implementations in go.mod on
// chunk-sized inputs: github.com/zeebo/blake3 through objects.Sum, which
// every ID goes through, and lukechampine.com/blake3.
func BenchmarkHash(b *testing.B) {
	hashes := []struct {
		name string
		sum  func([]byte) [32]byte
	}{
		{"zeebo", func(p []byte) [32]byte { return objects.Sum(p) }},
		{"lukechampine", luke.Sum256},
	}
	for _, size := range []int{4 << 10, 16 << 10, 64 << 10} {
		data := randomBytes(1, size)
		for _, h := range hashes {
			b.Run(h.name+"/"+sizeName(size), func(b *testing.B) {
				b.SetBytes(int64(size))
				for b.Loop() {
					h.sum(data)
				}
			})
		}
	}
}

// BenchmarkSeal measures compressing (text) and trying to compress
// (random data, which stays plain) a 64 KiB chunk.
func BenchmarkSeal(b *testing.B) {
	for _, in := range benchInputs() {
		b.Run(in.name, func(b *testing.B) {
			buf := make([]byte, 0, len(in.enc))
			b.SetBytes(int64(len(in.enc)))
			var stored []byte
			for b.Loop() {
				stored = objects.Seal(in.enc, buf)
			}
			b.ReportMetric(float64(len(stored))/float64(len(in.enc)), "stored/input")
		})
	}
}

// BenchmarkUnseal measures decompressing and verifying a 64 KiB chunk.
func BenchmarkUnseal(b *testing.B) {
	for _, in := range benchInputs() {
		b.Run(in.name, func(b *testing.B) {
			id := objects.Sum(in.enc)
			stored := objects.Seal(in.enc, nil)
			b.SetBytes(int64(len(in.enc)))
			for b.Loop() {
				if _, err := objects.Unseal(id, stored); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLoosePut measures storing new 64 KiB objects in a host
// directory (without Sync). Each iteration writes a distinct object.
func BenchmarkLoosePut(b *testing.B) {
	dir := b.TempDir()
	s := objects.NewLoose(osfs.New(dir), "objects", filepath.Join(dir, "objects"))
	stored := randomBytes(2, 64<<10)
	ctx := context.Background()
	id := idOf("base")
	b.SetBytes(int64(len(stored)))
	var n uint64
	for b.Loop() {
		n++
		binary.LittleEndian.PutUint64(id[8:], n)
		if err := s.Put(ctx, id, stored); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLooseGet measures reading a 64 KiB object back from a host
// directory, through osfs.New's default chroot wrapper and through its
// bound variant.
func BenchmarkLooseGet(b *testing.B) {
	for _, fsys := range []struct {
		name string
		new  func(dir string) billy.Filesystem
	}{
		{"chroot", func(dir string) billy.Filesystem { return osfs.New(dir) }},
		{"bound", func(dir string) billy.Filesystem { return osfs.New(dir, osfs.WithBoundOS()) }},
	} {
		b.Run(fsys.name, func(b *testing.B) {
			dir := b.TempDir()
			s := objects.NewLoose(fsys.new(dir), "objects", filepath.Join(dir, "objects"))
			stored := randomBytes(3, 64<<10)
			ctx := context.Background()
			id := objects.Sum(stored)
			if err := s.Put(ctx, id, stored); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(stored)))
			for b.Loop() {
				if _, err := s.Get(ctx, id); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type benchInput struct {
	name string
	enc  []byte
}

func benchInputs() []benchInput {
	return []benchInput{
		{"random-64KiB", objects.EncodeChunk(randomBytes(4, 64<<10))},
		{"text-64KiB", objects.EncodeChunk(textBytes(4, 64<<10))},
	}
}

func sizeName(n int) string {
	return map[int]string{4 << 10: "4KiB", 16 << 10: "16KiB", 64 << 10: "64KiB"}[n]
}
