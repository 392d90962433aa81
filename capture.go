package sbuml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// A private copy of a machine's RAM file or disk is made in two passes so
// that the guest is frozen only for the second: mirror copies the file
// while the guest runs, then, frozen, mirror runs again and rewrites only
// the pages that changed in between. Holes in the source (untouched guest
// RAM, unwritten disk blocks) are never read and stay holes in the copy.

const mirrorBlock = 1 << 20 // unit of comparison and copying work

// mirror makes dst (created if missing) an exact copy of src, writing only
// the 4 KiB pages that differ, and returns the number of bytes written.
func mirror(dst, src string) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return 0, err
	}
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return 0, err
	}
	defer out.Close()
	size := fi.Size()
	if err := out.Truncate(size); err != nil {
		return 0, err
	}
	extents, err := dataExtents(in, size)
	if err != nil {
		return 0, fmt.Errorf("mirror %s: %w", src, err)
	}
	// The copy must have holes where src has them: punch the gaps.
	var off int64
	for _, e := range extents {
		if e.start > off {
			if err := punch(out, off, e.start-off); err != nil {
				return 0, err
			}
		}
		off = e.end
	}
	if size > off {
		if err := punch(out, off, size-off); err != nil {
			return 0, err
		}
	}
	// Compare and copy the data extents block by block on all cores.
	blocks := make(chan extent, 64)
	var written int64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := make([]byte, mirrorBlock)
			b := make([]byte, mirrorBlock)
			var n int64
			for e := range blocks {
				w, err := mirrorBlockAt(out, in, a[:e.end-e.start], b[:e.end-e.start], e.start)
				n += w
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
			mu.Lock()
			written += n
			mu.Unlock()
		}()
	}
	for _, e := range extents {
		for s := e.start; s < e.end; s += mirrorBlock {
			blocks <- extent{s, min(s+mirrorBlock, e.end)}
		}
	}
	close(blocks)
	wg.Wait()
	if firstErr != nil {
		return written, fmt.Errorf("mirror %s: %w", src, firstErr)
	}
	return written, nil
}

// mirrorBlockAt copies the pages of one block that differ between in and out.
func mirrorBlockAt(out, in *os.File, a, b []byte, off int64) (int64, error) {
	if _, err := in.ReadAt(a, off); err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	if _, err := out.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	const page = 4096
	var written int64
	for p := 0; p < len(a); {
		if bytes.Equal(a[p:min(p+page, len(a))], b[p:min(p+page, len(b))]) {
			p += page
			continue
		}
		// Coalesce a run of differing pages into one write.
		q := p + page
		for q < len(a) && !bytes.Equal(a[q:min(q+page, len(a))], b[q:min(q+page, len(b))]) {
			q += page
		}
		q = min(q, len(a))
		if _, err := out.WriteAt(a[p:q], off+int64(p)); err != nil {
			return written, err
		}
		written += int64(q - p)
		p = q
	}
	return written, nil
}

type extent struct{ start, end int64 }

// dataExtents lists the data regions of f (SEEK_DATA/SEEK_HOLE); a file
// system without them yields one extent covering the file.
func dataExtents(f *os.File, size int64) ([]extent, error) {
	var out []extent
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if errors.Is(err, unix.EINVAL) {
			return []extent{{off, size}}, nil
		}
		if err != nil {
			return nil, err
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		out = append(out, extent{data, min(hole, size)})
		off = hole
	}
	return out, nil
}

// punch deallocates a range of f, leaving a hole (reads give zeros).
func punch(f *os.File, off, n int64) error {
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if errors.Is(err, unix.EOPNOTSUPP) {
		// No hole punching: write zeros only where the copy holds data.
		return zeroRange(f, off, n)
	}
	return err
}

func zeroRange(f *os.File, off, n int64) error {
	ext, err := dataExtents(f, off+n)
	if err != nil {
		return err
	}
	zero := make([]byte, mirrorBlock)
	for _, e := range ext {
		s, end := max(e.start, off), min(e.end, off+n)
		for ; s < end; s += mirrorBlock {
			if _, err := f.WriteAt(zero[:min(mirrorBlock, end-s)], s); err != nil {
				return err
			}
		}
	}
	return nil
}
