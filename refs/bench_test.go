package refs

import (
	"testing"

	"github.com/go-git/go-billy/v5/osfs"

	"github.com/sbuml/sbuml/objects"
)

// BenchmarkUpdate measures one compare-and-swap update of a branch: lock,
// write and fsync, reflog append and fsync, rename.
func BenchmarkUpdate(b *testing.B) {
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			s := New(be.new(b))
			cur := objects.Zero
			for i := 0; b.Loop(); i++ {
				next := id(i)
				if err := s.Update("refs/heads/main", cur, next, "bench"); err != nil {
					b.Fatal(err)
				}
				cur = next
			}
		})
	}
}

// BenchmarkGet measures reading a branch through HEAD.
func BenchmarkGet(b *testing.B) {
	s := New(osfs.New(b.TempDir()))
	if err := s.SetSymbolic("HEAD", "refs/heads/main"); err != nil {
		b.Fatal(err)
	}
	if err := s.Update("HEAD", objects.Zero, id(1), ""); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.Get("HEAD"); err != nil {
			b.Fatal(err)
		}
	}
}
