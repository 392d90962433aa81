package objects

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// encoder appends the primitive fields of canonical encodings.
type encoder struct{ buf []byte }

func newEncoder(k Kind, sizeHint int) *encoder {
	return newEncoderVersion(k, Version, sizeHint)
}

// newEncoderVersion starts an encoding of kind k in encoding version v.
func newEncoderVersion(k Kind, v byte, sizeHint int) *encoder {
	e := &encoder{buf: make([]byte, 0, headerSize+sizeHint)}
	e.buf = append(e.buf, byte(k), v)
	return e
}

func (e *encoder) uvarint(v uint64) { e.buf = binary.AppendUvarint(e.buf, v) }
func (e *encoder) varint(v int64)   { e.buf = binary.AppendVarint(e.buf, v) }
func (e *encoder) byte(b byte)      { e.buf = append(e.buf, b) }
func (e *encoder) id(id ID)         { e.buf = append(e.buf, id[:]...) }
func (e *encoder) string(s string) {
	e.uvarint(uint64(len(s)))
	e.buf = append(e.buf, s...)
}

// decoder reads the primitive fields of canonical encodings. The first
// error sticks; later reads return zero values.
type decoder struct {
	kind    Kind
	version byte
	buf     []byte
	err     error
}

var errTruncated = errors.New("truncated")

func newDecoder(want Kind, enc []byte) *decoder {
	d := &decoder{kind: want}
	k, err := KindOf(enc)
	if err != nil {
		d.err = err
		return d
	}
	if k != want {
		d.err = fmt.Errorf("is a %s, not a %s", k, want)
		return d
	}
	d.version = VersionOf(enc)
	d.buf = enc[headerSize:]
	return d
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.fail("bad or truncated varint")
		return 0
	}
	// Canonical: the shortest encoding only.
	if n != len(binary.AppendUvarint(nil, v)) {
		d.fail("non-canonical varint")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.buf)
	if n <= 0 {
		d.fail("bad or truncated varint")
		return 0
	}
	if n != len(binary.AppendVarint(nil, v)) {
		d.fail("non-canonical varint")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.buf) < 1 {
		d.err = errTruncated
		return 0
	}
	b := d.buf[0]
	d.buf = d.buf[1:]
	return b
}

func (d *decoder) id() ID {
	var id ID
	if d.err != nil {
		return id
	}
	if len(d.buf) < IDSize {
		d.err = errTruncated
		return id
	}
	copy(id[:], d.buf)
	d.buf = d.buf[IDSize:]
	return id
}

// count reads a list length and checks that at least min bytes per
// element remain, so a hostile length cannot force a huge allocation.
func (d *decoder) count(minElemSize int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(len(d.buf)/minElemSize) {
		d.fail("list length %d exceeds the encoding", n)
		return 0
	}
	return int(n)
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.buf)) {
		d.err = errTruncated
		return ""
	}
	s := string(d.buf[:n])
	d.buf = d.buf[n:]
	if !utf8.ValidString(s) {
		d.fail("string is not valid UTF-8")
	}
	return s
}

// finish reports the first error, or trailing bytes.
func (d *decoder) finish() error {
	if d.err == nil && len(d.buf) != 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.buf))
	}
	if d.err != nil {
		return fmt.Errorf("decode %s: %w", d.kind, d.err)
	}
	return nil
}
