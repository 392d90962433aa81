package sbuml_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/chunker"
	"github.com/sbuml/sbuml/objects"
	"golang.org/x/sys/unix"
)

const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
)

// newScrapbook creates an empty scrapbook in a temporary directory.
func newScrapbook(t testing.TB) *sbuml.Scrapbook {
	t.Helper()
	s, err := sbuml.Init(filepath.Join(t.TempDir(), "scrapbook"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// mustImport imports dir and fails the test on error.
func mustImport(t testing.TB, s *sbuml.Scrapbook, dir string, opts sbuml.SnapshotOptions) *sbuml.Result {
	t.Helper()
	res, err := s.Import(context.Background(), dir, opts)
	if err != nil {
		t.Fatalf("import %s: %v", dir, err)
	}
	return res
}

// mustExport exports rev into a new directory and returns its path.
func mustExport(t testing.TB, s *sbuml.Scrapbook, rev string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "export")
	if _, err := s.Export(context.Background(), rev, dir); err != nil {
		t.Fatalf("export %s: %v", rev, err)
	}
	return dir
}

// requireFsckClean runs Fsck and fails the test on any problem.
func requireFsckClean(t testing.TB, s *sbuml.Scrapbook) *sbuml.FsckReport {
	t.Helper()
	r, err := s.Fsck(context.Background())
	if err != nil {
		t.Fatalf("fsck: %v", err)
	}
	for _, p := range r.Problems {
		t.Errorf("fsck: %s", p)
	}
	if !r.OK() {
		t.FailNow()
	}
	return r
}

// randomBytes returns n bytes from a ChaCha8 generator seeded with seed.
func randomBytes(seed uint64, n int) []byte {
	var key [32]byte
	key[0], key[1], key[2], key[3] = byte(seed), byte(seed>>8), byte(seed>>16), byte(seed>>24)
	key[4], key[5], key[6], key[7] = byte(seed>>32), byte(seed>>40), byte(seed>>48), byte(seed>>56)
	b := make([]byte, n)
	rand.NewChaCha8(key).Read(b)
	return b
}

// writeRandomFile writes size pseudo-random bytes derived from seed to path.
func writeRandomFile(t testing.TB, path string, size int64, seed uint64) {
	t.Helper()
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.NewChaCha8(key), size); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// writeFile writes data to path, creating its directory, and gives it mode.
func writeFile(t testing.TB, path string, data []byte, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// permBits are the parts of a file mode an export must reproduce.
const permBits = fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky

// requireSameTree fails the test unless got holds exactly the files of
// want: the same names, types, permission bits, symlink targets and
// contents. Directory modes are compared too.
func requireSameTree(t testing.TB, want, got string) {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(want, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, path)
		seen[rel] = true
		wi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		gi, err := os.Lstat(filepath.Join(got, rel))
		if err != nil {
			t.Errorf("%s: missing from the export: %v", rel, err)
			if d.IsDir() && rel != "." {
				return filepath.SkipDir
			}
			return nil
		}
		if wi.Mode().Type() != gi.Mode().Type() {
			t.Errorf("%s: type %v, want %v", rel, gi.Mode().Type(), wi.Mode().Type())
			return nil
		}
		if rel != "." && wi.Mode().Type() != fs.ModeSymlink && wi.Mode()&permBits != gi.Mode()&permBits {
			t.Errorf("%s: mode %v, want %v", rel, gi.Mode()&permBits, wi.Mode()&permBits)
		}
		switch {
		case wi.Mode().Type() == fs.ModeSymlink:
			wt, _ := os.Readlink(path)
			gt, _ := os.Readlink(filepath.Join(got, rel))
			if wt != gt {
				t.Errorf("%s: symlink to %q, want %q", rel, gt, wt)
			}
		case wi.Mode().IsRegular():
			if wi.Size() != gi.Size() {
				t.Errorf("%s: %d bytes, want %d", rel, gi.Size(), wi.Size())
				return nil
			}
			if off, same := sameContent(t, path, filepath.Join(got, rel)); !same {
				t.Errorf("%s: contents differ at byte %d", rel, off)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(got, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(got, path)
		if !seen[rel] {
			t.Errorf("%s: in the export but not in the original", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// sameContent compares two files of equal size and returns the offset of
// the first difference. Ranges that are holes in both files read as zeros
// in both and are skipped, so comparing large sparse files is cheap.
func sameContent(t testing.TB, a, b string) (int64, bool) {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	fi, err := fa.Stat()
	if err != nil {
		t.Fatal(err)
	}
	size := fi.Size()
	ba, bb := make([]byte, 4*mib), make([]byte, 4*mib)
	for off := int64(0); off < size; {
		// Compare from the first data in either file to the end of
		// the data run that reaches furthest.
		start := min(seekData(t, fa, off, unix.SEEK_DATA, size), seekData(t, fb, off, unix.SEEK_DATA, size))
		if start >= size {
			break
		}
		end := max(seekData(t, fa, start, unix.SEEK_HOLE, size), seekData(t, fb, start, unix.SEEK_HOLE, size))
		for off = start; off < end; {
			n := int(min(int64(len(ba)), end-off))
			if _, err := fa.ReadAt(ba[:n], off); err != nil {
				t.Fatal(err)
			}
			if _, err := fb.ReadAt(bb[:n], off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ba[:n], bb[:n]) {
				for i := range n {
					if ba[i] != bb[i] {
						return off + int64(i), false
					}
				}
			}
			off += int64(n)
		}
	}
	return size, true
}

// seekData returns the offset of the next data (whence SEEK_DATA) or hole
// (SEEK_HOLE) at or after off, or size if there is none.
func seekData(t testing.TB, f *os.File, off int64, whence int, size int64) int64 {
	t.Helper()
	n, err := unix.Seek(int(f.Fd()), off, whence)
	if errors.Is(err, unix.ENXIO) {
		return size
	}
	if err != nil {
		t.Fatalf("seek %s: %v", f.Name(), err)
	}
	return min(n, size)
}

// allocated returns the bytes of disk a file occupies.
func allocated(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}

// TestImportSmallChange imports 256 MiB of random data, then the same
// directory with one 1 MiB region of one file rewritten: the second
// snapshot must add less than 2 MiB, and both must export byte for byte.
//
// It is long because its 256 MiB import is made once and checked several
// ways.
func TestImportSmallChange(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and imports 256 MiB")
	}
	ctx := context.Background()
	src := t.TempDir()
	files := []string{"a.bin", "b.bin", "sub/c.bin", "sub/deeper/d.bin"}
	for i, name := range files {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		writeRandomFile(t, p, 64*mib, uint64(100+i))
	}
	s := newScrapbook(t)
	first := mustImport(t, s, src, sbuml.SnapshotOptions{Message: "original"})
	if first.LogicalBytes != 256*mib || first.Stats.LogicalBytes != 256*mib {
		t.Errorf("first import: logical %d, read %d, want %d", first.LogicalBytes, first.Stats.LogicalBytes, 256*mib)
	}
	if first.Stats.NewChunkBytes != 256*mib {
		t.Errorf("first import stored %d bytes of new chunks, want all %d", first.Stats.NewChunkBytes, 256*mib)
	}

	// Rewrite 1 MiB of b.bin at an offset that is not chunk aligned.
	const off = 37*mib + 12345
	target := filepath.Join(src, "b.bin")
	f, err := os.OpenFile(target, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	old := make([]byte, mib)
	if _, err := f.ReadAt(old, off); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(randomBytes(999, mib), off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	second := mustImport(t, s, src, sbuml.SnapshotOptions{Message: "changed"})
	t.Logf("second import: %d new objects, %d new bytes (%d of chunk data)",
		second.Stats.NewObjects, second.Stats.NewBytes, second.Stats.NewChunkBytes)
	if second.Stats.NewBytes >= 2*mib {
		t.Errorf("second import added %d bytes, want < 2 MiB", second.Stats.NewBytes)
	}
	if second.Stats.NewChunkBytes < mib {
		t.Errorf("second import stored %d bytes of new chunks, want at least the 1 MiB that changed", second.Stats.NewChunkBytes)
	}
	if second.Parent != first.ID {
		t.Errorf("second snapshot's parent is %s, want %s", second.Parent.Short(), first.ID.Short())
	}

	du, err := s.Du(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(du.Snapshots) != 2 {
		t.Fatalf("du lists %d snapshots, want 2", len(du.Snapshots))
	}
	for i, res := range []*sbuml.Result{first, second} {
		got := du.Snapshots[i]
		if got.ID != res.ID || got.AddedBytes != res.Stats.NewBytes || got.AddedObjects != res.Stats.NewObjects {
			t.Errorf("du snapshot %d: %s added %d bytes in %d objects; import said %s added %d bytes in %d objects",
				i, got.ID.Short(), got.AddedBytes, got.AddedObjects, res.ID.Short(), res.Stats.NewBytes, res.Stats.NewObjects)
		}
	}
	if du.Snapshots[1].AddedBytes >= 2*mib {
		t.Errorf("du: second snapshot added %d bytes, want < 2 MiB", du.Snapshots[1].AddedBytes)
	}
	if sum := du.Snapshots[0].AddedBytes + du.Snapshots[1].AddedBytes; sum != du.StoredBytes {
		t.Errorf("du: snapshots added %d bytes in all, store holds %d", sum, du.StoredBytes)
	}
	if du.LogicalBytes != 512*mib {
		t.Errorf("du: %d logical bytes, want %d", du.LogicalBytes, 512*mib)
	}
	if du.DedupRatio < 1.9 || du.DedupRatio > 2 {
		t.Errorf("du: dedup ratio %.3f, want just under 2", du.DedupRatio)
	}

	requireSameTree(t, src, mustExport(t, s, "main"))

	// The first snapshot still holds the old bytes.
	oldDir := mustExport(t, s, "main~1")
	f, err = os.Open(filepath.Join(oldDir, "b.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, mib)
	if _, err := f.ReadAt(got, off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, old) {
		t.Error("main~1:b.bin does not hold the original bytes of the rewritten region")
	}
	if o, same := sameContent(t, filepath.Join(oldDir, "a.bin"), filepath.Join(src, "a.bin")); !same {
		t.Errorf("main~1:a.bin differs at byte %d", o)
	}
}

// TestImportSparse imports a 1 GiB all-zero sparse file, and a file with
// data between holes: holes cost nothing to store and stay holes on export.
func TestImportSparse(t *testing.T) {
	maxChunk := int64(chunker.Default.Max)

	t.Run("zero", func(t *testing.T) {
		src := t.TempDir()
		zero := filepath.Join(src, "zero.img")
		if err := os.WriteFile(zero, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(zero, gib); err != nil {
			t.Fatal(err)
		}
		s := newScrapbook(t)
		res := mustImport(t, s, src, sbuml.SnapshotOptions{})
		if res.LogicalBytes != gib || res.Stats.HoleBytes != gib || res.Stats.Chunks != 0 {
			t.Errorf("import: %d logical bytes, %d hole bytes, %d chunks; want 1 GiB, all holes, no chunks",
				res.LogicalBytes, res.Stats.HoleBytes, res.Stats.Chunks)
		}
		t.Logf("a 1 GiB zero file added %d bytes in %d objects", res.Stats.NewBytes, res.Stats.NewObjects)
		if res.Stats.NewBytes >= 64*kib {
			t.Errorf("a 1 GiB zero file added %d bytes, want < 64 KiB", res.Stats.NewBytes)
		}
		out := mustExport(t, s, "main")
		requireSameTree(t, src, out)
		if a := allocated(t, filepath.Join(out, "zero.img")); a > 64*kib {
			t.Errorf("exported zero.img occupies %d bytes of disk, want a hole", a)
		}
	})

	t.Run("holey", func(t *testing.T) {
		// 64 MiB: 1 MiB of data at 0, 2 MiB at 40 MiB, a hole to the end.
		src := t.TempDir()
		holey := filepath.Join(src, "holey.img")
		f, err := os.Create(holey)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(randomBytes(1, mib), 0); err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(randomBytes(2, 2*mib), 40*mib); err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(64 * mib); err != nil {
			t.Fatal(err)
		}
		f.Close()
		const dataBytes = 3 * mib

		s := newScrapbook(t)
		res := mustImport(t, s, src, sbuml.SnapshotOptions{})
		// Chunks holding data may take some zeros next to it along.
		if holes := res.Stats.HoleBytes; holes > 61*mib || holes < 61*mib-4*maxChunk {
			t.Errorf("%d bytes became holes, want about %d", holes, 61*mib)
		}
		if res.Stats.NewBytes > dataBytes+4*maxChunk {
			t.Errorf("import stored %d bytes for %d bytes of data: holes are not free", res.Stats.NewBytes, dataBytes)
		}
		out := mustExport(t, s, "main")
		requireSameTree(t, src, out)
		a := allocated(t, filepath.Join(out, "holey.img"))
		t.Logf("64 MiB with 3 MiB of data: %d bytes stored, export occupies %d bytes", res.Stats.NewBytes, a)
		if a < dataBytes || a > dataBytes+4*maxChunk {
			t.Errorf("exported holey.img occupies %d bytes of disk, want about %d", a, dataBytes)
		}
	})
}

// variedTree builds a directory with every kind of entry sbuml stores:
// nested and empty directories, empty, small, compressible and
// multi-chunk files, symbolic links (relative, absolute, dangling, to a
// directory) and unusual permission bits and names.
func variedTree(t testing.TB, dir string) {
	t.Helper()
	text := bytes.Repeat([]byte("all work and no play makes jack a dull boy\n"), 20000)
	files := []struct {
		path string
		data []byte
		mode fs.FileMode
	}{
		{"empty", nil, 0o644},
		{"one-byte", []byte{0}, 0o644},
		{"hello.txt", []byte("hello, scrapbook\n"), 0o644},
		{"text/jack.txt", text, 0o640},
		{"bin/tool", []byte("#!/bin/sh\necho tool\n"), 0o755},
		{"bin/suid", []byte("pretend setuid program"), fs.ModeSetuid | 0o755},
		{"secret", []byte("nobody else reads this"), 0o600},
		{"read-only", []byte("do not change"), 0o444},
		{"nested/a/b/c/deep.txt", []byte("deep"), 0o644},
		{"random/multi-chunk.bin", randomBytes(7, 3*mib+17), 0o644},
		{"names/with space", []byte("space"), 0o644},
		{"names/-leading-dash", []byte("dash"), 0o644},
		{"names/ünïcødé ☃", []byte("snowman"), 0o644},
		{"names/.hidden", []byte("dot"), 0o644},
	}
	for _, f := range files {
		writeFile(t, filepath.Join(dir, f.path), f.data, f.mode)
	}
	for _, d := range []string{"empty-dir", "nested/empty-too/inner-empty"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"link-relative":     "hello.txt",
		"link-absolute":     "/etc/hostname",
		"link-dangling":     "no/such/file",
		"link-to-dir":       "nested/a",
		"nested/a/link-up":  "../../hello.txt",
		"names/link-spaces": "with space",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	// A file whose data starts after a hole.
	f, err := os.Create(filepath.Join(dir, "late-data"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("after the hole"), 5*mib); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// Directory permission bits, set last so the directories stay writable
	// while they are filled.
	for d, mode := range map[string]fs.FileMode{
		"text":         0o750,
		"sticky":       fs.ModeSticky | 0o777,
		"setgid":       fs.ModeSetgid | 0o775,
		"nested/a/b":   0o700,
		"locked-empty": 0o555,
	} {
		p := filepath.Join(dir, d)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
}

// TestImportExportRoundTrip exports a varied tree and compares it with the
// original: contents, symlinks, modes, nested and empty directories.
func TestImportExportRoundTrip(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	variedTree(t, src)
	s := newScrapbook(t)
	res := mustImport(t, s, src, sbuml.SnapshotOptions{Message: "varied"})
	out := filepath.Join(t.TempDir(), "export")
	if _, err := s.ExportWith(context.Background(), res.ID.String(), out, sbuml.ExportOptions{KeepSetuid: true}); err != nil {
		t.Fatal(err)
	}
	requireSameTree(t, src, out)
	requireFsckClean(t, s)

	// Without KeepSetuid, files and directories lose their setuid and
	// setgid bits, and keep the others.
	plain := mustExport(t, s, res.ID.String())
	for name, want := range map[string]fs.FileMode{"bin/suid": 0o755, "setgid": fs.ModeDir | 0o775, "sticky": fs.ModeDir | fs.ModeSticky | 0o777} {
		if fi, err := os.Lstat(filepath.Join(plain, name)); err != nil || fi.Mode() != want {
			t.Errorf("plain export: %s has mode %v (%v), want %v", name, fi.Mode(), err, want)
		}
	}

	// Importing the export again gives the same tree, and stores nothing
	// but the new snapshot object.
	again := mustImport(t, s, out, sbuml.SnapshotOptions{Message: "again"})
	if again.Stats.NewObjects != 1 {
		t.Errorf("re-import of the export stored %d new objects, want 1 (the snapshot)", again.Stats.NewObjects)
	}
	show1, err := s.Show(context.Background(), "main~1")
	if err != nil {
		t.Fatal(err)
	}
	show2, err := s.Show(context.Background(), "main")
	if err != nil {
		t.Fatal(err)
	}
	if show1.Tree != show2.Tree {
		t.Errorf("export then import changed the tree: %s, then %s", show1.Tree.Short(), show2.Tree.Short())
	}
}

// TestExportTarget checks where Export may write: a missing or empty
// directory, not one holding anything.
func TestExportTarget(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "f"), []byte("x"), 0o644)
	s := newScrapbook(t)
	mustImport(t, s, src, sbuml.SnapshotOptions{})

	empty := t.TempDir()
	if _, err := s.Export(ctx, "main", empty); err != nil {
		t.Errorf("export into an empty directory: %v", err)
	}
	requireSameTree(t, src, empty)

	missing := filepath.Join(t.TempDir(), "a", "b")
	if _, err := s.Export(ctx, "main", missing); err != nil {
		t.Errorf("export into a missing directory: %v", err)
	}
	requireSameTree(t, src, missing)

	full := t.TempDir()
	writeFile(t, filepath.Join(full, "keep"), []byte("mine"), 0o644)
	_, err := s.Export(ctx, "main", full)
	if err == nil || !strings.Contains(err.Error(), full) || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("export into a non-empty directory: got %v, want an error naming %s as not empty", err, full)
	}
	if b, _ := os.ReadFile(filepath.Join(full, "keep")); string(b) != "mine" {
		t.Error("a failed export changed the target directory")
	}

	bad := filepath.Join(t.TempDir(), "x")
	if _, err := s.Export(ctx, "nosuchbranch", bad); err == nil || !strings.Contains(err.Error(), "nosuchbranch") {
		t.Errorf("export of an unknown revision: got %v, want an error naming it", err)
	}
	if _, err := os.Stat(bad); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("export of an unknown revision created %s", bad)
	}
}

// TestImportRejects checks that bad input gives one clear error naming the
// path, and records no snapshot.
func TestImportRejects(t *testing.T) {
	ctx := context.Background()
	fifoDir := t.TempDir()
	writeFile(t, filepath.Join(fifoDir, "ok"), []byte("fine"), 0o644)
	fifo := filepath.Join(fifoDir, "sub", "pipe")
	if err := os.MkdirAll(filepath.Dir(fifo), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "plain")
	writeFile(t, file, []byte("not a dir"), 0o644)
	missing := filepath.Join(t.TempDir(), "missing")

	tests := []struct {
		name string
		dir  string
		want []string
	}{
		{"fifo", fifoDir, []string{fifo, "unsupported file type"}},
		{"file", file, []string{file, "not a directory"}},
		{"missing", missing, []string{missing, "no such file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newScrapbook(t)
			_, err := s.Import(ctx, tt.dir, sbuml.SnapshotOptions{})
			if err == nil {
				t.Fatalf("import %s succeeded", tt.dir)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is more than one line", err)
			}
			if _, err := s.Refs.Get("refs/heads/main"); err == nil {
				t.Error("a failed import created the branch")
			}
			requireFsckClean(t, s)
		})
	}
}

// TestImportUnchanged re-imports a directory: the tree is the same object
// and the only new object is the snapshot.
func TestImportUnchanged(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	variedTree(t, src)
	s := newScrapbook(t)
	first := mustImport(t, s, src, sbuml.SnapshotOptions{})
	second := mustImport(t, s, src, sbuml.SnapshotOptions{})
	if second.Stats.NewObjects != 1 || second.Stats.NewChunkBytes != 0 {
		t.Errorf("unchanged re-import stored %d objects with %d chunk bytes, want only the snapshot",
			second.Stats.NewObjects, second.Stats.NewChunkBytes)
	}
	if second.Stats.LogicalBytes != first.Stats.LogicalBytes || second.LogicalBytes != first.LogicalBytes {
		t.Errorf("re-import read %d/%d bytes, first import %d/%d",
			second.Stats.LogicalBytes, second.LogicalBytes, first.Stats.LogicalBytes, first.LogicalBytes)
	}
	s1, err := objects.LoadSnapshot(context.Background(), s.Objects, first.ID)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := objects.LoadSnapshot(context.Background(), s.Objects, second.ID)
	if err != nil {
		t.Fatal(err)
	}
	if s1.Tree != s2.Tree {
		t.Errorf("same directory, different trees: %s and %s", s1.Tree.Short(), s2.Tree.Short())
	}
	if len(s2.Parents) != 1 || s2.Parents[0] != first.ID {
		t.Errorf("second snapshot's parents are %v, want [%s]", s2.Parents, first.ID.Short())
	}
}
