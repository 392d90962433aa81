// Package wire is the frame format of the sbuml agent protocol.
//
// A frame is a 24-byte header and a payload of at most MaxPayload bytes:
//
//	offset size
//	0      4    magic "\xf0SBA"
//	4      1    type
//	5      1    stream (Data, Close, Window frames), else 0
//	6      2    reserved, 0
//	8      4    session, little-endian; 0 for the connection itself
//	12     4    payload length, little-endian
//	16     4    CRC-32C of the payload
//	20     4    CRC-32C of bytes 0 to 19
//
// The header has a checksum of its own so that a garbled length is caught
// before the reader waits for a payload that will never come. A Reader
// starts in scanning mode: it discards bytes until it finds the magic
// followed by a valid Hello frame, and goes back to scanning after any
// malformed frame. Zero bytes between frames are padding. A sender puts a
// preamble of zero bytes before a Hello, enough to complete any frame the
// peer may have half received: the peer's reader then fails that frame
// and finds the Hello after it, and a reader in step skips the padding.
package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Magic starts every frame.
const Magic = "\xf0SBA"

// Sizes of the frame format.
const (
	HeaderSize = 24
	MaxPayload = 32 << 10
	// MaxHello bounds a Hello payload; scanning waits for no more than
	// this many bytes after a header that looks valid.
	MaxHello = 1 << 10
	// PreambleSize is the length of the zero bytes sent before the first
	// Hello of a connection: as long as the longest frame.
	PreambleSize = HeaderSize + MaxPayload
)

// Type is a frame's kind.
type Type uint8

// Frame types.
const (
	Hello  Type = 1 // handshake, session 0, JSON payload
	Msg    Type = 2 // control message, session 0, JSON payload
	Open   Type = 3 // a new session, JSON arguments
	Data   Type = 4 // bytes of one stream of a session
	Close  Type = 5 // end of one stream of a session
	Window Type = 6 // flow control: 4-byte little-endian credit for one stream
	Ctl    Type = 7 // session control (resize, signal, exit, abort), JSON payload
)

var typeNames = [...]string{Hello: "hello", Msg: "msg", Open: "open", Data: "data", Close: "close", Window: "window", Ctl: "ctl"}

// String returns the type's name, as in "data".
func (t Type) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return fmt.Sprintf("type%d", uint8(t))
}

// Frame is one decoded frame.
type Frame struct {
	Type    Type
	Stream  uint8
	Session uint32
	// Payload is valid until the next call of Reader.Next.
	Payload []byte
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Append appends the encoding of f to dst. The payload must not exceed
// MaxPayload.
func Append(dst []byte, f Frame) []byte {
	if len(f.Payload) > MaxPayload {
		panic(fmt.Sprintf("wire: %s frame of %d bytes exceeds MaxPayload", f.Type, len(f.Payload)))
	}
	var h [HeaderSize]byte
	copy(h[:], Magic)
	h[4] = byte(f.Type)
	h[5] = f.Stream
	binary.LittleEndian.PutUint32(h[8:], f.Session)
	binary.LittleEndian.PutUint32(h[12:], uint32(len(f.Payload)))
	binary.LittleEndian.PutUint32(h[16:], crc32.Checksum(f.Payload, castagnoli))
	binary.LittleEndian.PutUint32(h[20:], crc32.Checksum(h[:20], castagnoli))
	dst = append(dst, h[:]...)
	return append(dst, f.Payload...)
}

// AppendPreamble appends PreambleSize zero bytes to dst.
func AppendPreamble(dst []byte) []byte {
	return append(dst, make([]byte, PreambleSize)...)
}

// ErrCorrupt is wrapped by the errors Reader.Next returns for malformed
// frames. The reader is scanning for a Hello again when it returns one.
var ErrCorrupt = errors.New("corrupt frame")

// Reader decodes frames from a byte stream.
type Reader struct {
	r          io.Reader
	buf        []byte
	start, end int // unread bytes are buf[start:end]
	scanning   bool
	skipped    int64
}

// NewReader returns a Reader in scanning mode: the first frame Next
// returns is a Hello.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: r, buf: make([]byte, 2*PreambleSize), scanning: true}
}

// Resync makes the reader discard input until the next valid Hello.
func (r *Reader) Resync() { r.scanning = true }

// Skipped returns the number of bytes other than padding discarded
// since the last call, and resets the count.
func (r *Reader) Skipped() int64 {
	n := r.skipped
	r.skipped = 0
	return n
}

// Next returns the next frame. In scanning mode it returns only a Hello;
// otherwise it returns any well-formed frame, or an error wrapping
// ErrCorrupt and starts scanning from the byte after the bad frame's
// first byte. Errors of the underlying reader are returned as they are.
func (r *Reader) Next() (Frame, error) {
	if r.scanning {
		return r.scan()
	}
	if err := r.skipPadding(); err != nil {
		return Frame{}, err
	}
	if err := r.fill(HeaderSize); err != nil {
		return Frame{}, err
	}
	h, err := parseHeader(r.buf[r.start : r.start+HeaderSize])
	if err == nil && h.length > MaxPayload {
		err = fmt.Errorf("%w: %s frame of %d bytes, more than %d", ErrCorrupt, h.typ, h.length, MaxPayload)
	}
	if err != nil {
		r.fail()
		return Frame{}, err
	}
	total := HeaderSize + int(h.length)
	if err := r.fill(total); err != nil {
		return Frame{}, err
	}
	payload := r.buf[r.start+HeaderSize : r.start+total]
	if crc32.Checksum(payload, castagnoli) != h.crc {
		r.fail()
		return Frame{}, fmt.Errorf("%w: %s frame of session %d: payload checksum mismatch", ErrCorrupt, h.typ, h.session)
	}
	r.start += total
	return Frame{Type: h.typ, Stream: h.stream, Session: h.session, Payload: payload}, nil
}

// fail skips the first byte of a bad frame and starts scanning.
func (r *Reader) fail() {
	r.discard(1)
	r.scanning = true
}

// scan discards input up to a valid Hello frame and returns it.
func (r *Reader) scan() (Frame, error) {
	for {
		i := bytes.Index(r.buf[r.start:r.end], []byte(Magic))
		if i < 0 {
			// Keep a tail that may be the start of a magic.
			keep := min(r.end-r.start, len(Magic)-1)
			r.discard(r.end - r.start - keep)
			if err := r.fill(r.end - r.start + 1); err != nil {
				return Frame{}, err
			}
			continue
		}
		r.discard(i)
		if err := r.fill(HeaderSize); err != nil {
			return Frame{}, err
		}
		h, err := parseHeader(r.buf[r.start : r.start+HeaderSize])
		if err != nil || h.typ != Hello || h.length > MaxHello {
			r.discard(1)
			continue
		}
		total := HeaderSize + int(h.length)
		if err := r.fill(total); err != nil {
			return Frame{}, err
		}
		payload := r.buf[r.start+HeaderSize : r.start+total]
		if crc32.Checksum(payload, castagnoli) != h.crc {
			r.discard(1)
			continue
		}
		r.start += total
		r.scanning = false
		return Frame{Type: Hello, Session: h.session, Payload: payload}, nil
	}
}

// discard drops n buffered bytes, counting those that are not padding.
func (r *Reader) discard(n int) {
	b := r.buf[r.start : r.start+n]
	r.skipped += int64(n - bytes.Count(b, []byte{0}))
	r.start += n
}

// skipPadding consumes zero bytes up to the next other byte.
func (r *Reader) skipPadding() error {
	for {
		for r.start < r.end && r.buf[r.start] == 0 {
			r.start++
		}
		if r.start < r.end {
			return nil
		}
		if err := r.fill(1); err != nil {
			return err
		}
	}
}

// fill reads until at least n unread bytes are buffered, moving them to
// the front of the buffer first if they would not fit.
func (r *Reader) fill(n int) error {
	if r.end-r.start >= n {
		return nil
	}
	if r.start+n > len(r.buf) {
		r.end = copy(r.buf, r.buf[r.start:r.end])
		r.start = 0
	}
	for r.end-r.start < n {
		m, err := r.r.Read(r.buf[r.end:])
		r.end += m
		if err != nil && r.end-r.start < n {
			if err == io.EOF && r.end > r.start {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

type header struct {
	typ     Type
	stream  uint8
	session uint32
	length  uint32
	crc     uint32
}

func parseHeader(b []byte) (header, error) {
	if string(b[:4]) != Magic {
		return header{}, fmt.Errorf("%w: bad magic %q", ErrCorrupt, b[:4])
	}
	if crc32.Checksum(b[:20], castagnoli) != binary.LittleEndian.Uint32(b[20:]) {
		return header{}, fmt.Errorf("%w: header checksum mismatch", ErrCorrupt)
	}
	h := header{
		typ:     Type(b[4]),
		stream:  b[5],
		session: binary.LittleEndian.Uint32(b[8:]),
		length:  binary.LittleEndian.Uint32(b[12:]),
		crc:     binary.LittleEndian.Uint32(b[16:]),
	}
	if b[6] != 0 || b[7] != 0 {
		return header{}, fmt.Errorf("%w: %s frame with reserved bits set", ErrCorrupt, h.typ)
	}
	return h, nil
}
