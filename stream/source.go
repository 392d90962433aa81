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
}

// newSource reads r in blocks of at least size bytes. A regular file of
// mapMin bytes or more is mapped into memory instead of being copied in
// with read(2), which takes as long as cutting it.
func newSource(r io.Reader, size int, logical *atomic.Int64) source {
	if f, ok := r.(*os.File); ok {
		if m := newMapSource(f, size, logical); m != nil {
			return m
		}
	}
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
	logical *atomic.Int64
}

// newMapSource returns a mapSource for f, or nil if f is not a regular
// file of mapMin bytes or more, has holes, or cannot be mapped.
//
// A sparse file is read instead: touching a hole through a mapping makes
// tmpfs allocate a page for it, so mapping a sparse 4 GiB disk image
// would fill it in; read(2) returns a hole's zeros without allocating.
func newMapSource(f *os.File, size int, logical *atomic.Int64) *mapSource {
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() < mapMin {
		return nil
	}
	pos, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil
	}
	hole, err := unix.Seek(int(f.Fd()), pos, unix.SEEK_HOLE)
	if _, serr := f.Seek(pos, io.SeekStart); serr != nil || err != nil || hole < fi.Size() {
		return nil
	}
	// Some file systems cannot map files; they are read instead.
	probe, err := unix.Mmap(int(f.Fd()), 0, os.Getpagesize(), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil
	}
	unix.Munmap(probe)
	return &mapSource{f: f, pos: pos, window: max(mapWindow, int64(size)), logical: logical}
}

func (s *mapSource) next(carry []byte) (*block, bool, error) {
	fi, err := s.f.Stat()
	if err != nil {
		return nil, false, err
	}
	start := s.pos - int64(len(carry))
	if fi.Size() <= s.pos {
		// Nothing more: the carry, from a private copy since its window
		// is gone, is the last block.
		blk := &block{buf: append([]byte(nil), carry...), free: func(*block) {}}
		blk.refs.Store(1)
		return blk, true, nil
	}
	page := int64(os.Getpagesize())
	aligned := start &^ (page - 1)
	end := min(aligned+s.window, fi.Size())
	m, err := unix.Mmap(int(s.f.Fd()), aligned, int(end-aligned), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, false, fmt.Errorf("map %s: %w", s.f.Name(), err)
	}
	s.logical.Add(end - s.pos)
	s.pos = end
	blk := &block{buf: m[start-aligned:], free: func(*block) { unix.Munmap(m) }}
	blk.refs.Store(1)
	return blk, end == fi.Size(), nil
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
