package sbuml_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/internal/tinyfs"
)

// TestImportDiskFull imports into a scrapbook on a small tmpfs that runs
// out of space at a different point in each trial: while chunks are
// written, while packs and their indexes are published, while the
// snapshot and the branch are written. Every import that fails must say
// so in one line naming the lack of space, leave the scrapbook whole (fsck
// clean, every ref naming a snapshot that loads), leave no temporary
// files taking up space, and leave the branch where it was. Once there is
// room again, an import succeeds and exports byte for byte.
//
// It is long because it is one scenario: each step starts from what the
// steps before it left.
func TestImportDiskFull(t *testing.T) {
	mnt := tinyfs.Mount(t, 32*mib)
	bin := sbumlCommand(t)
	ctx := context.Background()
	sbDir := filepath.Join(mnt, "scrapbook")
	s, err := sbuml.Init(sbDir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// Each trial's import adds about 2.3 MiB: a megabyte and a half of
	// new random bytes in a.bin, a new b.bin, and new text, which is
	// stored compressed.
	src := t.TempDir()
	base := randomBytes(70, 4*mib)
	change := func(trial int) {
		a := bytes.Clone(base)
		copy(a[mib:], randomBytes(uint64(7000+trial), 3*mib/2))
		writeFile(t, filepath.Join(src, "a.bin"), a, 0o644)
		writeFile(t, filepath.Join(src, "sub", "b.bin"), randomBytes(uint64(8000+trial), 700<<10), 0o644)
		text := strings.Repeat(fmt.Sprintf("trial %d: a line of notes\n", trial), 4000)
		writeFile(t, filepath.Join(src, "notes.txt"), []byte(text), 0o644)
	}
	importCmd := func() (stderr string, err error) {
		return runStderr(bin, sbDir, "import", "-m", "disk full", src)
	}
	change(-1)
	if out, err := importCmd(); err != nil {
		t.Fatalf("first import: %v\n%s", err, out)
	}

	free := func() int64 { return tinyfs.Free(t, mnt) }
	var failed, fitted int
	phases := map[string]int{}
	// try runs one import with room bytes free and reports whether it
	// fitted.
	try := func(trial int, room int64) bool {
		change(trial)
		before, err := s.Resolve(ctx, "main")
		if err != nil {
			t.Fatal(err)
		}
		avail := free()
		defer tinyfs.Fill(t, mnt, room)()
		usedBefore := avail - free()
		packsBefore := packBytes(t, sbDir)

		stderr, ierr := importCmd()
		when := fmt.Sprintf("trial %d (%d KiB free)", trial, room>>10)
		after, err := s.Resolve(ctx, "main")
		if err != nil {
			t.Fatalf("%s: resolve main: %v", when, err)
		}
		if ierr == nil {
			fitted++
			if after == before {
				t.Errorf("%s: the import succeeded but main did not move", when)
			}
		} else {
			failed++
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if len(lines) != 1 || !strings.Contains(stderr, "no space left on device") {
				t.Errorf("%s: want one line saying there is no space, got:\n%s", when, stderr)
			}
			if after != before {
				t.Errorf("%s: the import failed but main moved from %s to %s", when, before.Short(), after.Short())
			}
			// Whatever the failed import wrote and did not publish is
			// gone, so the space it took is free again. Packs of chunks
			// published before the failure stay (they are whole, and
			// another import may already use them) until sbuml gc.
			published := packBytes(t, sbDir) - packsBefore
			if used := avail - free() - usedBefore - published; used > 64<<10 {
				t.Errorf("%s: the failed import left %d KiB in use besides %d KiB of published packs", when, used>>10, published>>10)
			}
			phases[phase(stderr)]++
		}
		fresh, err := sbuml.Open(sbDir)
		if err != nil {
			t.Fatal(err)
		}
		requireWhole(t, fresh, when)
		fresh.Close()
		if leftovers := tempFiles(t, sbDir); len(leftovers) > 0 {
			t.Errorf("%s: temporary files left: %v", when, leftovers)
		}
		if t.Failed() {
			t.FailNow()
		}
		return ierr == nil
	}
	// Coarse steps find how much room an import needs; fine steps then
	// end the space during the writes of its last kilobytes: the pack
	// indexes, the snapshot, the branch and its log.
	const coarse, fine = 48 << 10, 4 << 10
	trial := 0
	var room int64
	for ; !try(trial, room); room += coarse {
		trial++
	}
	for r := room - coarse; r <= room+coarse/2; r += fine {
		trial++
		try(trial, r)
	}
	t.Logf("%d imports ran out of space (%v), %d fitted", failed, phases, fitted)
	if failed < 20 {
		t.Errorf("only %d imports ran out of space: the trials do not cover the import", failed)
	}
	requireSameTree(t, src, mustExport(t, s, "main"))
}

// tempFiles lists the temporary files under dir: those named .tmp-…, and
// ref lock files.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".tmp-") || strings.HasSuffix(d.Name(), ".lock") && d.Name() != "gc.lock" {
			rel, _ := filepath.Rel(dir, path)
			found = append(found, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// packBytes returns the size of the published packs and indexes of the
// scrapbook in dir.
func packBytes(t *testing.T, dir string) int64 {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "objects", "pack", "pack-*"))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// phase names what a failed import was doing, from its error message.
func phase(msg string) string {
	switch {
	case strings.Contains(msg, ".pack: no space"):
		return "writing objects"
	case strings.Contains(msg, "pack index"):
		return "publishing a pack"
	case strings.Contains(msg, "refs/") || strings.Contains(msg, "logs/"):
		return "moving the branch"
	default:
		return "other: " + msg
	}
}

// TestGcDiskFull runs sbuml gc on a full tmpfs after a branch was
// deleted: gc removes the packs that hold nothing to keep before it copies
// anything, so the space comes back even when there is no room to merge
// the other packs; it then fails in one line that says both. Nothing kept
// is lost, and once there is room a second gc merges the packs.
func TestGcDiskFull(t *testing.T) {
	mnt := tinyfs.Mount(t, 24*mib)
	bin := sbumlCommand(t)
	sbDir := filepath.Join(mnt, "scrapbook")
	s, err := sbuml.Init(sbDir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	run := func(args ...string) (string, error) { return runStderr(bin, sbDir, args...) }
	srcs := map[string]string{}
	for i, branch := range []string{"b1", "b2", "b3"} {
		src := t.TempDir()
		writeFile(t, filepath.Join(src, "x.bin"), randomBytes(uint64(90+i), 3*mib), 0o644)
		if out, err := run("import", "-b", branch, src); err != nil {
			t.Fatalf("import: %v\n%s", err, out)
		}
		srcs[branch] = src
	}
	if out, err := run("branch", "-d", "b2"); err != nil {
		t.Fatalf("branch -d: %v\n%s", err, out)
	}

	free := func() int64 { return tinyfs.Free(t, mnt) }
	emptyFiller := tinyfs.Fill(t, mnt, 8<<10)
	before := free()
	stderr, err := run("gc")
	if err == nil {
		t.Fatal("gc on a full disk succeeded: it had room to merge, so the test proves nothing")
	}
	t.Logf("gc on a full disk: %s", strings.TrimSpace(stderr))
	if lines := strings.Split(strings.TrimSpace(stderr), "\n"); len(lines) != 1 ||
		!strings.Contains(stderr, "no space left on device") || !strings.Contains(stderr, "removed first") {
		t.Errorf("want one line saying there is no space and what was removed first, got:\n%s", stderr)
	}
	if gained := free() - before; gained < 3*mib {
		t.Errorf("gc freed %d KiB, want the 3 MiB of the deleted branch", gained>>10)
	}
	if leftovers := tempFiles(t, sbDir); len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
	check := func(when string) {
		fresh, err := sbuml.Open(sbDir)
		if err != nil {
			t.Fatal(err)
		}
		defer fresh.Close()
		requireWhole(t, fresh, when)
		for _, b := range []string{"b1", "b3"} {
			requireSameTree(t, srcs[b], mustExport(t, fresh, b))
		}
	}
	check("after gc on a full disk")

	emptyFiller()
	if out, err := run("gc"); err != nil {
		t.Fatalf("gc with room: %v\n%s", err, out)
	}
	check("after gc with room")
	packs, _ := filepath.Glob(filepath.Join(sbDir, "objects", "pack", "pack-*.pack"))
	if len(packs) != 1 {
		t.Errorf("%d packs after gc with room, want them merged into 1", len(packs))
	}
}

// runStderr runs the sbuml command bin on the scrapbook sbDir and returns
// what it wrote to standard error.
func runStderr(bin, sbDir string, args ...string) (string, error) {
	cmd := exec.Command(bin, append([]string{"--scrapbook", sbDir}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	return stderr.String(), err
}
