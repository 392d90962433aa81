package stream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sbuml/sbuml/chunker"
)

// writeFile writes data to a new file under t's temporary directory and
// opens it for reading.
func writeFile(t *testing.T, data []byte) *os.File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestMappedMatchesRead checks that a mapped file is cut exactly as the
// same bytes read through an io.Reader, across many windows, from the
// file's start and from an offset that is not page-aligned.
func TestMappedMatchesRead(t *testing.T) {
	defer func(w int64) { mapWindow = w }(mapWindow)
	mapWindow = 1 << 20 // windows of blockSize, 4 MiB

	data := randomBytes(7, 13<<20+12345)
	copy(data[5<<20:], make([]byte, 1<<20)) // a hole across a window edge
	for _, start := range []int64{0, 4097} {
		for _, p := range []Params{Files, {Chunking: chunker.RAM, Fanout: 32}} {
			f := writeFile(t, data)
			if _, err := f.Seek(start, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			if m, err := newMapSource(f, blockSize(p.Chunking), new(atomic.Int64)); m == nil || err != nil {
				t.Fatalf("the file is not mapped (%v)", err)
			}
			ctx := context.Background()
			store := newStore()
			s := NewSaver(store, 2)
			mapped, _, err := s.SaveStream(ctx, f, p)
			if err != nil {
				t.Fatal(err)
			}
			read, _, err := s.SaveStream(ctx, bytes.NewReader(data[start:]), p)
			if err != nil {
				t.Fatal(err)
			}
			if st := s.Stats(); st.LogicalBytes != 2*int64(len(data[start:])) {
				t.Errorf("logical bytes %d, want %d", st.LogicalBytes, 2*len(data[start:]))
			}
			s.Close()
			if mapped != read {
				t.Errorf("start %d, %s: mapped stream %s, read stream %s", start, p.Chunking, mapped, read)
			}
		}
	}
}

// TestMapFailureReadsTheRest makes the mapping of a window fail, as it
// does when the address space or the count of mappings runs out (a fake:
// neither can be exhausted here without harming the test process). The
// rest of the file is read instead: the stream is the same, and the
// file's offset ends at its end.
func TestMapFailureReadsTheRest(t *testing.T) {
	defer func(w int64) { mapWindow = w }(mapWindow)
	mapWindow = 1 << 20 // windows of blockSize, 4 MiB
	defer func(m func(int, int64, int, int, int) ([]byte, error)) { mmap = m }(mmap)
	for _, failFrom := range []int{1, 2} {
		calls := 0
		mmap = func(fd int, off int64, n, prot, flags int) ([]byte, error) {
			calls++
			if calls >= failFrom {
				return nil, unix.ENOMEM
			}
			return unix.Mmap(fd, off, n, prot, flags)
		}
		data := randomBytes(int64(20+failFrom), 13<<20+777)
		f := writeFile(t, data)
		ctx := context.Background()
		s := NewSaver(newStore(), 2)
		mapped, st, err := s.SaveStream(ctx, f, Files)
		if err != nil {
			t.Fatalf("window %d on failing: %v", failFrom, err)
		}
		if st.Length != uint64(len(data)) {
			t.Errorf("window %d on failing: stream of %d bytes, want %d", failFrom, st.Length, len(data))
		}
		read, _, err := s.SaveStream(ctx, bytes.NewReader(data), Files)
		if err != nil {
			t.Fatal(err)
		}
		if mapped != read {
			t.Errorf("window %d on failing: stream %s, read as %s", failFrom, mapped.Short(), read.Short())
		}
		if off, err := f.Seek(0, io.SeekCurrent); err != nil || off != int64(len(data)) {
			t.Errorf("window %d on failing: offset %d (%v) after saving, want %d", failFrom, off, err, len(data))
		}
		s.Close()
	}
}

// TestSparseFileKeepsItsHoles checks that saving a sparse file does not
// allocate its holes (tmpfs fills in a hole touched through a mapping),
// however small they are, and that large holes are stored as holes.
func TestSparseFileKeepsItsHoles(t *testing.T) {
	dir := t.TempDir()
	if shm, err := os.MkdirTemp("/dev/shm", "sbuml-test-"); err == nil {
		dir = shm // where the difference shows
		defer os.RemoveAll(shm)
	}
	tests := []struct {
		name      string
		data      [][2]int64 // offset, length of each written stretch
		holeBytes int64      // at least this many bytes stored as holes
	}{
		{"mostly hole", [][2]int64{{20 << 20, 1 << 20}}, 60 << 20},
		{"one page", [][2]int64{{0, 30 << 20}, {30<<20 + 4096, 34<<20 - 4096}}, 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.name)
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(64 << 20); err != nil {
				t.Fatal(err)
			}
			for j, d := range tt.data {
				if _, err := f.WriteAt(randomBytes(int64(10*i+j), int(d[1])), d[0]); err != nil {
					t.Fatal(err)
				}
			}
			f.Close()
			allocated := func() int64 {
				var st unix.Stat_t
				if err := unix.Stat(path, &st); err != nil {
					t.Fatal(err)
				}
				return st.Blocks * 512
			}
			before := allocated()

			f, err = os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			s := NewSaver(newStore(), 2)
			defer s.Close()
			if _, _, err := s.SaveStream(context.Background(), f, Files); err != nil {
				t.Fatal(err)
			}
			if after := allocated(); after != before {
				t.Errorf("saving the file changed its allocation from %d to %d bytes", before, after)
			}
			if st := s.Stats(); st.HoleBytes < tt.holeBytes {
				t.Errorf("%d bytes of holes, want at least %d", st.HoleBytes, tt.holeBytes)
			}
		})
	}
}

// TestMappedGrows checks that a file that grows while it is being mapped
// is read to its new end, as read(2) would.
func TestMappedGrows(t *testing.T) {
	defer func(w int64) { mapWindow = w }(mapWindow)
	mapWindow = 1 << 20

	data := randomBytes(8, 10<<20)
	f := writeFile(t, data[:6<<20])
	var logical atomic.Int64
	src, err := newMapSource(f, blockSize(Files.Chunking), &logical)
	if err != nil {
		t.Fatal(err)
	}
	blk, eof, err := src.next(nil)
	if err != nil || eof {
		t.Fatalf("first window: eof %v, err %v", eof, err)
	}
	blk.release()
	w, err := os.OpenFile(f.Name(), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data[6<<20:]); err != nil {
		t.Fatal(err)
	}
	w.Close()
	for !eof {
		if blk, eof, err = src.next(nil); err != nil {
			t.Fatal(err)
		}
		blk.release()
	}
	if logical.Load() != int64(len(data)) {
		t.Errorf("read %d bytes, want %d", logical.Load(), len(data))
	}
}

// mapThenTruncate maps a file of size random bytes, takes its first
// window, then truncates the file to keep bytes.
func mapThenTruncate(t *testing.T, size, keep int64) (*mapSource, *block, bool) {
	t.Helper()
	f := writeFile(t, randomBytes(size, int(size)))
	src, err := newMapSource(f, blockSize(Files.Chunking), new(atomic.Int64))
	if err != nil || src == nil {
		t.Fatalf("map: %v", err)
	}
	blk, eof, err := src.next(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(f.Name(), keep); err != nil {
		t.Fatal(err)
	}
	return src, blk, eof
}

// TestMappedShrinks truncates a file after it is mapped: touching the
// lost pages must give ErrShrank, whether cutting or storing, and never
// crash the program.
func TestMappedShrinks(t *testing.T) {
	ctx := context.Background()
	shrunk := func(t *testing.T) *block {
		_, blk, _ := mapThenTruncate(t, 8<<20, 0)
		return blk
	}

	t.Run("cutting", func(t *testing.T) {
		s := NewSaver(newStore(), 1)
		defer s.Close()
		blk := shrunk(t)
		defer faultsAsErrors()()
		pending := make(chan chan []result, 64)
		_, err := s.cutBlock(ctx, blk, true, Files.Chunking, pending, new(scratch), nil)
		if !errors.Is(err, ErrShrank) {
			t.Fatalf("cutBlock: %v, want ErrShrank", err)
		}
	})
	t.Run("between windows", func(t *testing.T) {
		defer func(w int64) { mapWindow = w }(mapWindow)
		mapWindow = 1 << 20
		src, blk, _ := mapThenTruncate(t, 12<<20, 1<<20)
		blk.release()
		if _, _, err := src.next(nil); !errors.Is(err, ErrShrank) {
			t.Fatalf("next: %v, want ErrShrank", err)
		}
	})
	t.Run("within the last page", func(t *testing.T) {
		// No SIGBUS here: the rest of the page reads as zeros.
		src, blk, eof := mapThenTruncate(t, 8<<20+3000, 8<<20+1000)
		blk.release()
		if !eof {
			t.Fatal("the first window does not reach the end")
		}
		if err := src.finish(); !errors.Is(err, ErrShrank) {
			t.Fatalf("finish: %v, want ErrShrank", err)
		}
	})
	t.Run("storing", func(t *testing.T) {
		s := NewSaver(newStore(), 1)
		defer s.Close()
		blk := shrunk(t)
		res := make(chan []result, 1)
		blk.refs.Add(1)
		s.jobs <- &job{ctx: ctx, blk: blk, spans: []span{{0, 64 << 10}}, res: res}
		if rs := <-res; !errors.Is(rs[0].err, ErrShrank) {
			t.Fatalf("worker: %v, want ErrShrank", rs[0].err)
		}
		blk.release()
	})
}
