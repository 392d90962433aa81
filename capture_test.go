package sbuml

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestMirror(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	const size = 8 << 20
	rng := rand.New(rand.NewSource(1))
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	page := make([]byte, 4096)
	writePages := func(n int) {
		for i := 0; i < n; i++ {
			rng.Read(page)
			f.WriteAt(page, int64(rng.Intn(size/4096))*4096)
		}
	}
	writePages(300)
	// First pass: everything with data is copied, holes stay holes.
	rewritten, err := mirror(dst, src)
	if err != nil {
		t.Fatal(err)
	}
	if n := extentBytes(rewritten); n == 0 || n > 300*4096 {
		t.Fatalf("first pass wrote %d bytes", n)
	}
	sameFiles(t, src, dst)
	if blocks(t, dst) > blocks(t, src)+16 {
		t.Fatalf("copy uses %d blocks, source %d: holes were filled", blocks(t, dst), blocks(t, src))
	}
	// Second pass after 5 changed pages and two punched holes: only
	// those pages are written, and they are all said to be.
	before, _ := os.ReadFile(dst)
	writePages(5)
	// Holes at the start and at the end.
	for _, off := range []int64{0, size - 1<<20} {
		if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	rewritten, err = mirror(dst, src)
	if err != nil {
		t.Fatal(err)
	}
	if n := extentBytes(rewritten); n > 5*4096+2<<20 {
		t.Fatalf("second pass changed %d bytes, want at most 5 pages and the holes", n)
	}
	after, _ := os.ReadFile(dst)
	said := map[int]bool{}
	for _, r := range pageRanges(rewritten) {
		for pg := r.Start; pg < r.End; pg++ {
			said[pg] = true
		}
	}
	for pg := 0; pg < size/4096; pg++ {
		if !bytes.Equal(before[pg*4096:(pg+1)*4096], after[pg*4096:(pg+1)*4096]) && !said[pg] {
			t.Errorf("page %d changed but mirror did not say so", pg)
		}
	}
	sameFiles(t, src, dst)
	f.Close()
}

func extentBytes(es []extent) int64 {
	var n int64
	for _, e := range es {
		n += e.end - e.start
	}
	return n
}

func sameFiles(t *testing.T, a, b string) {
	t.Helper()
	x, _ := os.ReadFile(a)
	y, _ := os.ReadFile(b)
	if !bytes.Equal(x, y) {
		t.Fatal("copy differs from source")
	}
}

func blocks(t *testing.T, name string) int64 {
	var st unix.Stat_t
	if err := unix.Stat(name, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks
}
