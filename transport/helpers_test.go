package transport_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	sbuml "github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/objects"
)

// writeFiles writes files of pseudo-random (incompressible) bytes below
// dir, their sizes given by path; the same seed gives the same bytes.
func writeFiles(t testing.TB, dir string, seed uint64, files map[string]int) {
	t.Helper()
	rng := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}))
	for name, size := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// patchFile overwrites n bytes at off in a file with new pseudo-random ones.
func patchFile(t testing.TB, path string, off, n int, seed uint64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	if _, err := f.WriteAt(b, int64(off)); err != nil {
		t.Fatal(err)
	}
}

// source is a scrapbook with two snapshots on main: first, and second,
// its child, made from a small change of the same directory.
type source struct {
	book          *sbuml.Scrapbook
	first, second objects.ID
}

var sourceFiles = map[string]int{
	"big.bin":       1 << 20,
	"medium.bin":    300 << 10,
	"notes.txt":     100,
	"sub/inner.bin": 150 << 10,
	"sub/deep/x":    10,
}

func newSource(t testing.TB) *source {
	t.Helper()
	ctx := context.Background()
	book, err := sbuml.Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	writeFiles(t, work, 1, sourceFiles)
	r1, err := book.Import(ctx, work, sbuml.SnapshotOptions{Branch: "main", Message: "first"})
	if err != nil {
		t.Fatal(err)
	}
	patchFile(t, filepath.Join(work, "big.bin"), 500<<10, 4096, 2)
	writeFiles(t, work, 3, map[string]int{"added.txt": 200})
	r2, err := book.Import(ctx, work, sbuml.SnapshotOptions{Branch: "main", Message: "second"})
	if err != nil {
		t.Fatal(err)
	}
	return &source{book: book, first: r1.ID, second: r2.ID}
}

// reachable returns the objects reachable from snapshot id in s with the
// sizes of their stored forms.
func reachable(t testing.TB, s objects.Reader, id objects.ID) map[objects.ID]int64 {
	t.Helper()
	ctx := context.Background()
	out := map[objects.ID]int64{}
	err := objects.Walk(ctx, s, objects.Ref{ID: id, Kind: objects.KindSnapshot}, func(r objects.Ref) (bool, error) {
		if _, ok := out[r.ID]; ok {
			return false, nil
		}
		stored, err := s.Get(ctx, r.ID)
		if err != nil {
			return false, err
		}
		if _, err := objects.Unseal(r.ID, stored); err != nil {
			return false, err
		}
		out[r.ID] = int64(len(stored))
		return true, nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", id.Short(), err)
	}
	return out
}

// sum adds up the sizes of the objects in a that are not in b.
func sum(a, b map[objects.ID]int64) (n int, bytes int64) {
	for id, size := range a {
		if _, ok := b[id]; !ok {
			n++
			bytes += size
		}
	}
	return n, bytes
}

// checkClosed verifies that every object in s matches its ID and that
// everything it references is present: the closure invariant.
func checkClosed(t testing.TB, s objects.Reader) int {
	t.Helper()
	ctx := context.Background()
	var ids []objects.ID
	if err := s.List(ctx, func(id objects.ID, _ int64) error {
		ids = append(ids, id)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		enc, err := objects.Load(ctx, s, id)
		if err != nil {
			t.Errorf("bad object stored: %v", err)
			continue
		}
		_, refs, err := objects.References(enc)
		if err != nil {
			t.Errorf("object %s: %v", id, err)
		}
		for _, r := range refs {
			if ok, err := s.Has(ctx, r); err != nil || !ok {
				t.Errorf("object %s references missing %s (closure invariant broken)", id.Short(), r.Short())
			}
		}
	}
	return len(ids)
}

// has reports whether s holds id.
func has(t testing.TB, s objects.Reader, id objects.ID) bool {
	t.Helper()
	ok, err := s.Has(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func mustIs(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v; want one wrapping %q", err, target)
	}
}

// corruptLoose flips a byte of the loose object file of id below dir.
func corruptLoose(t testing.TB, dir string, id objects.ID) {
	t.Helper()
	h := id.String()
	p := filepath.Join(dir, "objects", h[:2], h[2:])
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o444); err != nil {
		t.Fatal(err)
	}
}
