package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/sbuml/sbuml/objects"
)

// Limits of the smart HTTP protocol. A server refuses larger requests with
// 413; clients keep their batches well below them.
const (
	// MaxStoredSize bounds the stored form of one object. Seal never
	// makes a stored form larger than the encoding, which objects bounds.
	MaxStoredSize = objects.MaxObjectSize + 4096
	// MaxHasIDs bounds the IDs in one POST /objects/has.
	MaxHasIDs = 1 << 16
	// MaxGetIDs bounds the IDs in one POST /objects/get.
	MaxGetIDs = 1 << 12
	// MaxPutObjects and MaxPutBytes bound one POST /objects/put.
	MaxPutObjects = 1 << 16
	MaxPutBytes   = 256 << 20
	// maxRefUpdateSize bounds the JSON body of POST /refs/update.
	maxRefUpdateSize = 16 << 10
	// maxPackListSize bounds the pack list of a published directory.
	maxPackListSize = 16 << 20
)

// recordHeaderSize is the size of the header before each object in the
// bodies of /objects/get responses and /objects/put requests: the 32-byte
// ID and the length of the stored form as a big-endian uint32.
const recordHeaderSize = objects.IDSize + 4

// appendRecord appends one framed object to b.
func appendRecord(b []byte, id objects.ID, stored []byte) []byte {
	b = append(b, id[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(stored)))
	return append(b, stored...)
}

// recordReader reads framed objects.
type recordReader struct {
	r   io.Reader
	hdr [recordHeaderSize]byte
	// reserve, if set, is asked for the memory of each stored form
	// before it is read, and returns the function that gives it back.
	reserve func(n int64) (release func(), err error)
}

// next returns the next object, and the function that gives back its
// memory (see reserve). It returns io.EOF at a clean end and
// io.ErrUnexpectedEOF, wrapped, if the stream stops inside a record.
func (rr *recordReader) next() (objects.ID, []byte, func(), error) {
	var id objects.ID
	if _, err := io.ReadFull(rr.r, rr.hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return id, nil, nil, fmt.Errorf("object stream cut inside a record header: %w", err)
		}
		return id, nil, nil, err
	}
	copy(id[:], rr.hdr[:objects.IDSize])
	n := binary.BigEndian.Uint32(rr.hdr[objects.IDSize:])
	if n > MaxStoredSize {
		return id, nil, nil, fmt.Errorf("object %s: %w: announced stored size %d exceeds the limit of %d", id, ErrProtocol, n, MaxStoredSize)
	}
	release := func() {}
	if rr.reserve != nil {
		var err error
		if release, err = rr.reserve(int64(n)); err != nil {
			return id, nil, nil, err
		}
	}
	var stored []byte
	var err error
	if rr.reserve != nil {
		// The memory is reserved: read into it at once.
		stored = make([]byte, n)
		_, err = io.ReadFull(rr.r, stored)
	} else {
		stored, err = readN(rr.r, int(n))
	}
	if err != nil {
		release()
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return id, nil, nil, fmt.Errorf("object %s: stream cut after the header: %w", id, err)
	}
	return id, stored, release, nil
}

// readN reads exactly n bytes. Past a megabyte, the first quarter is
// read into a buffer that grows as the bytes arrive, and only then is
// the whole allocated: a length announced but not sent costs little.
func readN(r io.Reader, n int) ([]byte, error) {
	if n <= 1<<20 {
		b := make([]byte, n)
		_, err := io.ReadFull(r, b)
		return b, err
	}
	var buf bytes.Buffer
	if _, err := io.CopyN(&buf, r, int64(n/4)); err != nil {
		if err == io.EOF && buf.Len() > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	b := make([]byte, n)
	m := copy(b, buf.Bytes())
	buf = bytes.Buffer{}
	if _, err := io.ReadFull(r, b[m:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return b, nil
}

// encodeIDs concatenates ids, the body of /objects/has and /objects/get.
func encodeIDs(ids []objects.ID) []byte {
	b := make([]byte, 0, len(ids)*objects.IDSize)
	for _, id := range ids {
		b = append(b, id[:]...)
	}
	return b
}

// decodeIDs splits a body of concatenated IDs.
func decodeIDs(b []byte) ([]objects.ID, error) {
	if len(b)%objects.IDSize != 0 {
		return nil, fmt.Errorf("body of %d bytes is not a whole number of %d-byte IDs", len(b), objects.IDSize)
	}
	ids := make([]objects.ID, len(b)/objects.IDSize)
	for i := range ids {
		copy(ids[i][:], b[i*objects.IDSize:])
	}
	return ids, nil
}

// encodeBitmap packs has[i] into bit i%8 of byte i/8.
func encodeBitmap(has []bool) []byte {
	b := make([]byte, (len(has)+7)/8)
	for i, h := range has {
		if h {
			b[i/8] |= 1 << (i % 8)
		}
	}
	return b
}

// decodeBitmap unpacks n bits.
func decodeBitmap(b []byte, n int) ([]bool, error) {
	if len(b) != (n+7)/8 {
		return nil, fmt.Errorf("%w: bitmap of %d bytes for %d IDs", ErrProtocol, len(b), n)
	}
	has := make([]bool, n)
	for i := range has {
		has[i] = b[i/8]&(1<<(i%8)) != 0
	}
	return has, nil
}
