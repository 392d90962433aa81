package sbuml_test

import (
	"context"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/internal/lockfile"
	"github.com/sbuml/sbuml/objects"
)

// TestFsckFindsFlippedReflogBytes flips random bytes of a scrapbook's
// reflogs, one at a time, and counts how many fsck finds, naming the
// reflog. Reflogs have no checksum; fsck checks their form, that each
// line starts where the one before left the ref and that the last one
// leaves it where it is, so it finds all but flips that leave a reason
// readable or a time plausible.
func TestFsckFindsFlippedReflogBytes(t *testing.T) {
	ctx := context.Background()
	s := newScrapbook(t)
	src := t.TempDir()
	for i := range 3 {
		writeFile(t, filepath.Join(src, "f"), []byte{byte(i)}, 0o644)
		mustImport(t, s, src, sbuml.SnapshotOptions{Message: "import number " + string(rune('a'+i))})
	}
	other := mustImport(t, s, src, sbuml.SnapshotOptions{Branch: "other"}).ID
	if _, err := s.CreateRef(ctx, "refs/tags/v1", "main", sbuml.RefOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Refs.Update("refs/heads/other", other, objects.Zero, "branch -d"); err != nil {
		t.Fatal(err)
	}
	requireFsckClean(t, s)

	var logs []string
	filepath.WalkDir(filepath.Join(s.Dir, "logs"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			logs = append(logs, p)
		}
		return nil
	})
	rng := rand.New(rand.NewPCG(13, 8))
	const flips = 40
	found := 0
	for range flips {
		file := logs[rng.IntN(len(logs))]
		fi, _ := os.Stat(file)
		off := rng.Int64N(fi.Size())
		undo := flipByte(t, file, off, byte(1+rng.IntN(255)))
		r, err := s.Fsck(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range r.Problems {
			if p.Where != file || !strings.Contains(p.Problem, "damaged reflog: line ") {
				t.Errorf("flip at %s:%d: fsck says %s; want only problems of that reflog", file, off, p)
			}
		}
		if len(r.Problems) > 0 {
			found++
		}
		undo()
	}
	t.Logf("fsck found %d of %d flipped reflog bytes", found, flips)
	if found < flips*8/10 {
		t.Errorf("fsck found %d of %d flipped reflog bytes, want at least 80%%", found, flips)
	}
}

// A lock file left by a killed writer is listed by fsck, as no problem;
// a lock a live process holds is not listed.
func TestFsckStaleLocks(t *testing.T) {
	s := newScrapbook(t)
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "f"), []byte("x"), 0o644)
	mustImport(t, s, src, sbuml.SnapshotOptions{})
	stale := filepath.Join(s.Dir, "refs", "heads", "main.lock")
	writeFile(t, stale, nil, 0o644)
	staleTop := filepath.Join(s.Dir, "remotes.lock")
	writeFile(t, staleTop, nil, 0o644)
	held, err := lockfile.Create(filepath.Join(s.Dir, "refs", "tags", "v1.lock"), 0o644, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	r := requireFsckClean(t, s)
	if want := []string{staleTop, stale}; !slices.Equal(r.StaleLocks, want) {
		t.Errorf("fsck lists stale locks %q, want %q", r.StaleLocks, want)
	}
}

// Every damaged byte of the config file either leaves it meaning what it
// did, or makes Open fail with a line naming the file.
func TestOpenDamagedConfig(t *testing.T) {
	s := newScrapbook(t)
	config := filepath.Join(s.Dir, "config")
	clean, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	for i := range clean {
		for _, mask := range []byte{0x01, 0x02, 0x04, 0x10, 0x20, 0x40, 0x80} {
			damaged := slices.Clone(clean)
			damaged[i] ^= mask
			if err := os.WriteFile(config, damaged, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := sbuml.Open(s.Dir)
			if err != nil && (!strings.Contains(err.Error(), "config file "+config) || strings.Contains(err.Error(), "\n")) {
				t.Errorf("config %q: Open says %q; want one line naming %s", damaged, err, config)
			}
		}
	}
}
