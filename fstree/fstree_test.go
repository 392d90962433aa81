package fstree

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/go-git/go-billy/v5/memfs"
	"github.com/sbuml/sbuml/internal/testenv"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/stream"
)

func TestImportExport(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	files := map[string]string{
		"a.txt":          "hello",
		"empty":          "",
		"dir/b.bin":      strings.Repeat("x", 300_000),
		"dir/sub/c":      "deep",
		"with space.txt": "spaces are fine",
	}
	for name, data := range files {
		p := filepath.Join(src, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	os.Mkdir(filepath.Join(src, "emptydir"), 0o700)
	os.Symlink("a.txt", filepath.Join(src, "link"))
	if err := os.Chmod(filepath.Join(src, "dir", "sub", "c"), 0o755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	sparse := filepath.Join(src, "sparse")
	f, _ := os.Create(sparse)
	f.Truncate(8 << 20)
	f.WriteAt([]byte("end"), 8<<20-3)
	f.Close()

	store := objects.NewLoose(memfs.New(), "objects", "")
	saver := stream.NewSaver(store, 2)
	defer saver.Close()
	id, size, err := Import(ctx, saver, src, stream.Files)
	if err != nil {
		t.Fatal(err)
	}
	var want uint64 = 8 << 20
	for _, d := range files {
		want += uint64(len(d))
	}
	want += uint64(len("a.txt")) // the link's target
	if size != want {
		t.Fatalf("logical size %d, want %d", size, want)
	}

	dst := filepath.Join(t.TempDir(), "out")
	if err := Export(ctx, store, id, dst, ExportOptions{KeepSetuid: true}); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		got, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || string(got) != data {
			t.Errorf("%s: %q, %v", name, got, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(dst, "dir", "sub", "c")); err != nil || fi.Mode()&os.ModeSetuid == 0 || fi.Mode().Perm() != 0o755 {
		t.Errorf("mode of dir/sub/c: %v, %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "emptydir")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("emptydir: %v, %v", fi, err)
	}
	if target, err := os.Readlink(filepath.Join(dst, "link")); err != nil || target != "a.txt" {
		t.Errorf("link: %q, %v", target, err)
	}
	a, _ := os.ReadFile(sparse)
	b, _ := os.ReadFile(filepath.Join(dst, "sparse"))
	if !bytes.Equal(a, b) {
		t.Error("sparse file differs")
	}
	var st syscall.Stat_t
	syscall.Stat(filepath.Join(dst, "sparse"), &st)
	if st.Blocks*512 > 1<<20 {
		t.Errorf("exported sparse file uses %d bytes on disk: holes were filled", st.Blocks*512)
	}

	// Export refuses a non-empty directory and leaves it alone.
	if err := Export(ctx, store, id, src, ExportOptions{}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("export into a non-empty directory: %v", err)
	}
}

func TestImportRefusesSpecialFiles(t *testing.T) {
	src := t.TempDir()
	testenv.Need(t, "a named pipe", syscall.Mkfifo(filepath.Join(src, "fifo"), 0o644))
	saver := stream.NewSaver(objects.NewLoose(memfs.New(), "objects", ""), 2)
	defer saver.Close()
	_, _, err := Import(context.Background(), saver, src, stream.Files)
	if err == nil || !strings.Contains(err.Error(), "fifo") || !strings.Contains(err.Error(), "unsupported") {
		t.Fatalf("import of a FIFO: %v", err)
	}
}
