// Package chunker splits byte streams into chunks for deduplication.
//
// Two algorithms are provided: FastCDC, a content-defined chunker whose cut
// points follow the data (so an insertion early in a file does not shift
// every later chunk), and Fixed, which cuts every Avg bytes (for guest RAM,
// whose pages never shift). Where the chunks fall is part of the on-disk
// format: deduplication between scrapbooks relies on every version of this
// package cutting the same data at the same places. docs/chunker.md specifies
// the cut rule bit for bit.
package chunker

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// Kind selects the cutting algorithm; its numeric value is stored on disk in
// stream objects, so never renumber.
type Kind uint8

const (
	// FastCDC cuts where a gear rolling hash of the data matches a mask
	// (content-defined chunking with normalized chunk sizes).
	FastCDC Kind = 1
	// Fixed cuts fixed-size chunks of Avg bytes (used for guest RAM: page
	// aligned, RAM does not shift).
	Fixed Kind = 2
)

// String returns the lower-case name of k, or "kind(N)" if k is unknown.
func (k Kind) String() string {
	switch k {
	case FastCDC:
		return "fastcdc"
	case Fixed:
		return "fixed"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// MaxSize is the largest chunk size Params allows.
const MaxSize = 16 << 20

// Params selects an algorithm and the chunk sizes it aims for. Every chunk is
// at least Min and at most Max bytes long, except that the last chunk of a
// stream may be shorter than Min. For FastCDC, chunks are Avg bytes long on
// average on random data; for Fixed, all three sizes are equal.
type Params struct {
	Kind          Kind
	Min, Avg, Max uint32
}

// Default is the parameter set for files and disks.
var Default = Params{FastCDC, 16 << 10, 64 << 10, 256 << 10}

// RAM is the parameter set for guest RAM: one chunk per 4 KiB page.
var RAM = Params{Fixed, 4 << 10, 4 << 10, 4 << 10}

// String formats p as "fastcdc 16384/65536/262144" (min/avg/max).
func (p Params) String() string {
	return fmt.Sprintf("%s %d/%d/%d", p.Kind, p.Min, p.Avg, p.Max)
}

// Validate reports whether p describes a usable chunker. For FastCDC, Avg
// must be a power of two and 64 <= Min <= Avg <= Max <= MaxSize (64 bytes is
// the window of the rolling hash). For Fixed, Min, Avg and Max must be equal,
// non-zero and at most MaxSize.
func (p Params) Validate() error {
	var err error
	switch {
	case p.Kind != FastCDC && p.Kind != Fixed:
		err = fmt.Errorf("unknown kind %d", uint8(p.Kind))
	case p.Min == 0 || p.Avg == 0 || p.Max == 0:
		err = errors.New("sizes must not be zero")
	case p.Max > MaxSize:
		err = fmt.Errorf("max %d is above the limit of %d", p.Max, MaxSize)
	case p.Kind == Fixed && (p.Min != p.Avg || p.Avg != p.Max):
		err = errors.New("fixed chunking needs min, avg and max equal")
	case p.Kind == FastCDC && p.Min < window:
		err = fmt.Errorf("min %d is below the hash window of %d bytes", p.Min, window)
	case p.Kind == FastCDC && p.Min > p.Avg:
		err = fmt.Errorf("min %d is above avg %d", p.Min, p.Avg)
	case p.Kind == FastCDC && p.Max < p.Avg:
		err = fmt.Errorf("max %d is below avg %d", p.Max, p.Avg)
	case p.Kind == FastCDC && bits.OnesCount32(p.Avg) != 1:
		err = fmt.Errorf("avg %d is not a power of two", p.Avg)
	}
	if err != nil {
		return fmt.Errorf("chunker params %s: %w", p, err)
	}
	return nil
}

// Cut returns the length of the first chunk of data, where data is the rest
// of the stream: len(data) may be below Max only at the end of the stream.
// It returns 0 only for empty data. Cut panics if p is not valid.
//
// Chunking in memory is repeated cutting:
//
//	for len(data) > 0 {
//		n := p.Cut(data)
//		chunk, data := data[:n], data[n:]
//		...
//	}
func (p Params) Cut(data []byte) int {
	if err := p.Validate(); err != nil {
		panic(err)
	}
	if p.Kind == Fixed {
		return cutFixed(data, int(p.Avg))
	}
	f := newFastCDC(p)
	return f.cut(data)
}

// Chunker splits a stream into chunks as it reads it, holding at most a few
// times Max bytes (at least 1 MiB) in memory.
type Chunker struct {
	r          io.Reader
	p          Params
	fastcdc    fastCDC
	buf        []byte
	start, end int // buf[start:end] is read but not yet returned
	eof        bool
	err        error // sticky: returned by every later Next
}

// New returns a Chunker that reads r and cuts it as p says.
func New(r io.Reader, p Params) (*Chunker, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	size := max(2*int(p.Max), 1<<20)
	c := &Chunker{p: p, buf: make([]byte, size)}
	if p.Kind == FastCDC {
		c.fastcdc = newFastCDC(p)
	}
	c.Reset(r)
	return c, nil
}

// Reset makes c chunk r from its start, reusing c's buffer.
func (c *Chunker) Reset(r io.Reader) {
	c.r, c.start, c.end, c.eof, c.err = r, 0, 0, false, nil
}

// Next returns the next chunk. The slice is only valid until the next call.
// Returns io.EOF after the last chunk; an empty stream has no chunks. A read
// error is returned wrapped, and again by every later call.
func (c *Chunker) Next() ([]byte, error) {
	if c.err != nil {
		return nil, c.err
	}
	if c.end-c.start < int(c.p.Max) && !c.eof {
		if err := c.fill(); err != nil {
			c.err = fmt.Errorf("chunker: read: %w", err)
			return nil, c.err
		}
	}
	if c.start == c.end {
		c.err = io.EOF
		return nil, io.EOF
	}
	data := c.buf[c.start:c.end]
	var n int
	if c.p.Kind == Fixed {
		n = cutFixed(data, int(c.p.Avg))
	} else {
		n = c.fastcdc.cut(data)
	}
	c.start += n
	return data[:n:n], nil
}

// fill moves the unreturned bytes to the front of the buffer and reads until
// at least Max bytes are buffered or the stream ends.
func (c *Chunker) fill() error {
	c.end = copy(c.buf, c.buf[c.start:c.end])
	c.start = 0
	for empty := 0; c.end < int(c.p.Max); {
		n, err := c.r.Read(c.buf[c.end:])
		c.end += n
		switch {
		case err == io.EOF:
			c.eof = true
			return nil
		case err != nil:
			return err
		case n > 0:
			empty = 0
		default:
			if empty++; empty >= 100 {
				return io.ErrNoProgress
			}
		}
	}
	return nil
}
