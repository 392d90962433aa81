package cpio

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
)

// maxNameSize bounds entry names so a corrupt header cannot make the Reader
// allocate without limit. Linux's PATH_MAX is 4096.
const maxNameSize = 4096

// Reader reads a newc cpio archive. Next advances to the next entry and
// Read reads the current entry's contents.
type Reader struct {
	r         *bufio.Reader
	remaining int64
	pad       int64
	offset    int64 // bytes consumed from r, for error messages
	err       error
}

// NewReader returns a Reader that reads an archive from r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReader(r)}
}

// Next skips the rest of the current entry and returns the next entry's
// header. At the trailer it returns io.EOF. A symlink's Linkname is filled
// in from its data, which then reads as empty.
func (r *Reader) Next() (*Header, error) {
	if r.err != nil {
		return nil, r.err
	}
	if err := r.skip(r.remaining + r.pad); err != nil {
		return nil, r.fail(err)
	}
	r.remaining, r.pad = 0, 0
	start := r.offset
	var raw [headerSize]byte
	if err := r.readFull(raw[:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, r.fail(fmt.Errorf("cpio: header at offset %d: %w", start, err))
	}
	if string(raw[:6]) != magic {
		return nil, r.fail(fmt.Errorf("cpio: header at offset %d: bad magic %q, want %q", start, raw[:6], magic))
	}
	var f [13]uint32
	for i := range f {
		field := raw[6+8*i : 14+8*i]
		v, err := strconv.ParseUint(string(field), 16, 32)
		if err != nil {
			return nil, r.fail(fmt.Errorf("cpio: header at offset %d: field %d %q is not hex", start, i, field))
		}
		f[i] = uint32(v)
	}
	mode, size, namesize := f[1], int64(f[6]), int64(f[11])
	if namesize < 1 || namesize > maxNameSize {
		return nil, r.fail(fmt.Errorf("cpio: header at offset %d: name size %d out of range", start, namesize))
	}
	name := make([]byte, namesize+pad4(headerSize+namesize))
	if err := r.readFull(name); err != nil {
		return nil, r.fail(fmt.Errorf("cpio: name at offset %d: %w", start, unexpected(err)))
	}
	if name[namesize-1] != 0 {
		return nil, r.fail(fmt.Errorf("cpio: name at offset %d is not NUL-terminated", start))
	}
	hdr := &Header{
		Name:     string(name[:namesize-1]),
		UID:      int(f[2]),
		GID:      int(f[3]),
		Nlink:    int(f[4]),
		ModTime:  int64(f[5]),
		Size:     size,
		Devmajor: int(f[9]),
		Devminor: int(f[10]),
	}
	if hdr.Name == trailerName {
		r.err = io.EOF
		return nil, io.EOF
	}
	m, err := fileMode(mode)
	if err != nil {
		return nil, r.fail(fmt.Errorf("cpio: %s: %w", hdr.Name, err))
	}
	hdr.Mode = m
	r.remaining, r.pad = size, pad4(size)
	if m.Type() == fs.ModeSymlink {
		target := make([]byte, size)
		if err := r.readFull(target); err != nil {
			return nil, r.fail(fmt.Errorf("cpio: %s: symlink target: %w", hdr.Name, unexpected(err)))
		}
		hdr.Linkname = string(target)
		r.remaining = 0
	}
	return hdr, nil
}

// Read reads from the current entry's contents.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil && r.err != io.EOF {
		return 0, r.err
	}
	if r.remaining == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.remaining {
		p = p[:r.remaining]
	}
	n, err := r.r.Read(p)
	r.remaining -= int64(n)
	r.offset += int64(n)
	if err == io.EOF && r.remaining > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err != nil && err != io.EOF {
		return n, r.fail(fmt.Errorf("cpio: read data: %w", err))
	}
	return n, nil
}

func (r *Reader) readFull(p []byte) error {
	n, err := io.ReadFull(r.r, p)
	r.offset += int64(n)
	return err
}

func (r *Reader) skip(n int64) error {
	m, err := io.CopyN(io.Discard, r.r, n)
	r.offset += m
	if err != nil {
		return fmt.Errorf("cpio: skip %d bytes at offset %d: %w", n, r.offset, unexpected(err))
	}
	return nil
}

func (r *Reader) fail(err error) error {
	r.err = err
	return err
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
