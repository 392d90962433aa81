package cpio

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"strings"
)

// ErrWriteTooLong is returned when more bytes are written than the current
// Header's Size announced.
var ErrWriteTooLong = errors.New("cpio: write too long")

// Writer writes a newc cpio archive. Call WriteHeader to begin an entry,
// Write to supply a regular file's contents, and Close to append the
// trailer. Inode numbers are assigned in order starting at 1, so the same
// sequence of calls always produces the same bytes.
type Writer struct {
	w         io.Writer
	ino       uint32
	remaining int64 // bytes of the current entry's data still expected
	pad       int64 // padding owed after the current entry's data
	closed    bool
	err       error
}

// NewWriter returns a Writer that writes an archive to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w}
}

// WriteHeader finishes the previous entry and writes hdr. For a symlink
// the target from hdr.Linkname is written as the entry's data at once.
func (w *Writer) WriteHeader(hdr *Header) error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return errors.New("cpio: write header after close")
	}
	if err := w.finishEntry(); err != nil {
		return err
	}
	if hdr.Name == "" || hdr.Name == trailerName || strings.HasPrefix(hdr.Name, "/") {
		return fmt.Errorf("cpio: invalid entry name %q", hdr.Name)
	}
	mode, err := unixMode(hdr.Mode)
	if err != nil {
		return fmt.Errorf("cpio: %s: %w", hdr.Name, err)
	}
	size := hdr.Size
	switch hdr.Mode.Type() {
	case 0:
	case fs.ModeSymlink:
		if hdr.Linkname == "" {
			return fmt.Errorf("cpio: %s: symlink without a target", hdr.Name)
		}
		size = int64(len(hdr.Linkname))
	default:
		if size != 0 {
			return fmt.Errorf("cpio: %s: size %d for a %v entry", hdr.Name, size, hdr.Mode.Type())
		}
	}
	nlink := hdr.Nlink
	if nlink == 0 {
		nlink = 1
		if hdr.Mode.IsDir() {
			nlink = 2
		}
	}
	w.ino++
	fields := []int64{
		int64(w.ino), int64(mode), int64(hdr.UID), int64(hdr.GID), int64(nlink),
		hdr.ModTime, size, 0, 0, int64(hdr.Devmajor), int64(hdr.Devminor),
	}
	if err := w.writeHeader(hdr.Name, fields); err != nil {
		return err
	}
	w.remaining, w.pad = size, pad4(size)
	if hdr.Mode.Type() == fs.ModeSymlink {
		if _, err := w.Write([]byte(hdr.Linkname)); err != nil {
			return err
		}
	}
	return nil
}

// writeHeader writes the fixed header fields that precede namesize, then
// the name and its padding. A failure is sticky: the archive is unusable.
func (w *Writer) writeHeader(name string, fields []int64) error {
	var b strings.Builder
	b.Grow(headerSize + len(name) + 4)
	b.WriteString(magic)
	fields = append(fields, int64(len(name)+1), 0) // namesize, check
	for i, v := range fields {
		if v < 0 || v > math.MaxUint32 {
			w.err = fmt.Errorf("cpio: %s: header field %d value %d does not fit in 32 bits", name, i, v)
			return w.err
		}
		fmt.Fprintf(&b, "%08x", v)
	}
	b.WriteString(name)
	b.WriteByte(0)
	for range pad4(int64(headerSize + len(name) + 1)) {
		b.WriteByte(0)
	}
	if _, err := io.WriteString(w.w, b.String()); err != nil {
		w.err = fmt.Errorf("cpio: write header %s: %w", name, err)
		return w.err
	}
	return nil
}

// Write writes contents of the current entry. It returns ErrWriteTooLong
// if more than the Header's Size bytes are written.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	tooLong := int64(len(p)) > w.remaining
	if tooLong {
		p = p[:w.remaining]
	}
	n, err := w.w.Write(p)
	w.remaining -= int64(n)
	if err != nil {
		w.err = fmt.Errorf("cpio: write data: %w", err)
		return n, w.err
	}
	if tooLong {
		return n, ErrWriteTooLong
	}
	return n, nil
}

// finishEntry checks the current entry is complete and writes its padding.
func (w *Writer) finishEntry() error {
	if w.remaining > 0 {
		return fmt.Errorf("cpio: entry closed with %d bytes of data missing", w.remaining)
	}
	if w.pad > 0 {
		if _, err := w.w.Write(make([]byte, w.pad)); err != nil {
			w.err = fmt.Errorf("cpio: write padding: %w", err)
			return w.err
		}
		w.pad = 0
	}
	return nil
}

// Close finishes the last entry and writes the trailer. It does not close
// the underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return nil
	}
	if err := w.finishEntry(); err != nil {
		return err
	}
	w.closed = true
	return w.writeHeader(trailerName, []int64{0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0})
}
