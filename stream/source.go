package stream

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sbuml/sbuml/chunker"
	"github.com/sbuml/sbuml/objects"
)

// A block is a stretch of a stream being cut, shared by the jobs cutting
// from it. It starts with the bytes the previous block left uncut.
type block struct {
	buf  []byte
	refs atomic.Int32
	free func(*block) // called when the last reference goes
}

func (b *block) release() {
	if b.refs.Add(-1) == 0 {
		b.free(b)
	}
}

// A source yields a stream as blocks.
type source interface {
	// next returns the next block, which starts with carry (the uncut
	// tail of the block before), and whether it reaches the end of the
	// stream. The block holds one reference, the caller's.
	next(carry []byte) (blk *block, eof bool, err error)
	// finish checks, once every block has been released, that what was
	// read is whole.
	finish() error
}

// newSource reads r in blocks of at least size bytes. A regular file of
// mapMin bytes or more is mapped into memory instead of being copied in
// with read(2), which takes as long as cutting it.
func newSource(r io.Reader, size int, logical *atomic.Int64) (source, error) {
	if f, ok := r.(*os.File); ok {
		m, err := newMapSource(f, size, logical)
		if err != nil {
			return nil, err
		}
		if m != nil {
			return m, nil
		}
	}
	return newReadSource(r, size, logical), nil
}

func newReadSource(r io.Reader, size int, logical *atomic.Int64) *readSource {
	rs := &readSource{r: r, logical: logical}
	rs.pool.New = func() any {
		return &block{buf: make([]byte, size), free: func(b *block) { rs.pool.Put(b) }}
	}
	return rs
}

// readSource reads a stream into pooled buffers.
type readSource struct {
	r       io.Reader
	pool    sync.Pool
	logical *atomic.Int64
}

func (s *readSource) next(carry []byte) (*block, bool, error) {
	blk := s.pool.Get().(*block)
	blk.refs.Store(1)
	buf := blk.buf[:cap(blk.buf)]
	n := copy(buf, carry)
	m, err := io.ReadFull(s.r, buf[n:])
	s.logical.Add(int64(m))
	blk.buf = buf[:n+m]
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return blk, true, nil
	case err != nil:
		blk.release()
		return nil, false, err
	}
	return blk, false, nil
}

func (s *readSource) finish() error { return nil }

// mapMin is the smallest file a Saver maps rather than reads.
const mapMin = 1 << 20

// mapWindow is how much of a file one mapping covers: mappings are
// dropped as their chunks are stored, so page tables stay small however
// large the file is. A variable so tests can cross many windows.
var mapWindow int64 = 32 << 20

// mapSource maps a regular file window by window, from the file's offset
// when the Saver was given it to its end, taking in whatever the file has
// grown by meanwhile, as read(2) would.
type mapSource struct {
	f       *os.File
	pos     int64 // the end of the last window, in the file
	window  int64
	size    int // the block size, for reading the rest (see rest)
	logical *atomic.Int64
	// rest reads the file from pos on once a window could not be mapped.
	rest *readSource
	read *offsetReader
}

// mmap maps windows; a variable so tests can make it fail.
var mmap = unix.Mmap

// newMapSource returns a mapSource for f, or nil if f is not a regular
// file of mapMin bytes or more, has holes, or cannot be mapped.
//
// A sparse file is read instead: touching a hole through a mapping makes
// tmpfs allocate a page for it, so mapping a sparse 4 GiB disk image
// would fill it in; read(2) returns a hole's zeros without allocating.
// A file with holes occupies fewer blocks than its size (on tmpfs exactly
// so), which fstat tells at once; asking SEEK_HOLE walks the file's pages.
func newMapSource(f *os.File, size int, logical *atomic.Int64) (*mapSource, error) {
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() < mapMin {
		return nil, nil
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Blocks*512 < fi.Size() {
		return nil, nil
	}
	pos, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, nil
	}
	// Some file systems cannot map files; they are read instead.
	probe, err := unix.Mmap(int(f.Fd()), 0, os.Getpagesize(), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, nil
	}
	unix.Munmap(probe)
	return &mapSource{f: f, pos: pos, window: max(mapWindow, int64(size)), size: size, logical: logical}, nil
}

func (s *mapSource) next(carry []byte) (*block, bool, error) {
	if s.rest != nil {
		return s.rest.next(carry)
	}
	fi, err := s.f.Stat()
	if err != nil {
		return nil, false, err
	}
	start := s.pos - int64(len(carry))
	if fi.Size() < s.pos {
		// The last window did not reach the end then.
		return nil, false, fmt.Errorf("read %s: %w", s.f.Name(), ErrShrank)
	}
	page := int64(os.Getpagesize())
	aligned := start &^ (page - 1)
	end := min(aligned+s.window, fi.Size())
	if end == start {
		// The file ends where the last window did.
		blk := &block{free: func(*block) {}}
		blk.refs.Store(1)
		return blk, true, nil
	}
	m, err := mmap(int(s.f.Fd()), aligned, int(end-aligned), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		// The file system maps files (see the probe in newMapSource),
		// so this is a want of address space or of mappings: read the
		// rest instead.
		s.read = &offsetReader{f: s.f, off: s.pos}
		s.rest = newReadSource(s.read, s.size, s.logical)
		return s.rest.next(carry)
	}
	s.logical.Add(end - s.pos)
	s.pos = end
	blk := &block{buf: m[start-aligned:], free: func(*block) { unix.Munmap(m) }}
	blk.refs.Store(1)
	return blk, end == fi.Size(), nil
}

// finish checks that the file still holds every byte that was mapped:
// one truncated within the last page gives zeros there rather than
// SIGBUS. It leaves the file's offset at the end of what was read, as
// read(2) would have.
func (s *mapSource) finish() error {
	if s.read != nil {
		s.pos = s.read.off
		_, err := s.f.Seek(s.pos, io.SeekStart)
		return err
	}
	fi, err := s.f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() < s.pos {
		return fmt.Errorf("read %s: %w", s.f.Name(), ErrShrank)
	}
	_, err = s.f.Seek(s.pos, io.SeekStart)
	return err
}

// offsetReader reads f from off on with pread, leaving f's offset alone.
type offsetReader struct {
	f   *os.File
	off int64
}

func (r *offsetReader) Read(p []byte) (int, error) {
	n, err := r.f.ReadAt(p, r.off)
	r.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// ErrShrank reports that a mapped file became shorter while it was being
// read, so the stream would have been torn.
var ErrShrank = errors.New("the file shrank while it was being read")

// faultsAsErrors makes a fault on the calling goroutine (SIGBUS, from
// touching a mapped page past the end of a file that was truncated) a
// panic that onFault can recover, rather than a crash. It returns a
// function that restores the goroutine's previous setting.
func faultsAsErrors() (restore func()) {
	old := debug.SetPanicOnFault(true)
	return func() { debug.SetPanicOnFault(old) }
}

// onFault, deferred, turns a recovered memory fault into ErrShrank in
// *err. Other panics go on.
func onFault(err *error) {
	if r := recover(); r != nil {
		if re, ok := r.(runtime.Error); ok {
			if _, isFault := re.(interface{ Addr() uintptr }); isFault {
				*err = ErrShrank
				return
			}
		}
		panic(r)
	}
}

// cutMapped is cp.Cut(data) for data that may be part of a mapped file:
// a fault reading it is ErrShrank.
func cutMapped(cp chunker.Params, data []byte) (_ int, err error) {
	defer onFault(&err)
	return cp.Cut(data), nil
}

// copyMapped appends data, which may be part of a mapped file, to dst.
func copyMapped(dst, data []byte) (_ []byte, err error) {
	defer onFault(&err)
	return append(dst, data...), nil
}

// encodeChunk builds in *buf the encoding of the chunk holding data, or
// returns nil if data is all zero (a hole). data may be part of a mapped
// file: a fault reading it is ErrShrank.
func encodeChunk(buf *[]byte, data []byte) (_ []byte, err error) {
	defer onFault(&err)
	if chunker.IsZero(data) {
		return nil, nil
	}
	*buf = append(append((*buf)[:0], objects.ChunkHeader[:]...), data...)
	return *buf, nil
}
