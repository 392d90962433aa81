package objects

import "fmt"

// A Stream is one large byte stream (a file, a disk, a RAM image): its
// length, how it was cut into chunks, and the root of its index tree.
// Readers never need the chunking parameters; they are recorded so that
// writers cut the same data the same way and so tools can report them.
type Stream struct {
	Length   uint64   `json:"length"`
	Chunking Chunking `json:"chunking"`
	// Fanout is the average number of entries per index node the writer
	// aimed for (a power of two).
	Fanout uint32 `json:"fanout"`
	// Root is the top index node, or Zero for an empty stream.
	Root ID `json:"root"`
	// Patch, unless Zero, names a patch node whose entries replace parts
	// of what Root's tree holds: the stream is that tree so patched. A
	// writer patches the tree of a stream the data is a new version of
	// (a machine's RAM at its last snapshot) when that is smaller than a
	// tree of its own.
	Patch ID `json:"patch,omitempty"`
}

// Chunking records the chunker that cut a stream. Algorithm values are
// those of package chunker (1 FastCDC, 2 fixed-size).
type Chunking struct {
	Algorithm uint8  `json:"algorithm"`
	Min       uint32 `json:"min"`
	Avg       uint32 `json:"avg"`
	Max       uint32 `json:"max"`
}

// Encode returns the canonical encoding:
//
//	length uvarint, algorithm byte, min, avg, max, fanout uvarint, root [32]byte
//
// in encoding version 1, followed by patch [32]byte in version 2, which
// is used exactly when Patch is not Zero.
func (s *Stream) Encode() []byte {
	v := byte(Version)
	if !s.Patch.IsZero() {
		v = VersionPatch
	}
	e := newEncoderVersion(KindStream, v, 96)
	e.uvarint(s.Length)
	e.byte(s.Chunking.Algorithm)
	e.uvarint(uint64(s.Chunking.Min))
	e.uvarint(uint64(s.Chunking.Avg))
	e.uvarint(uint64(s.Chunking.Max))
	e.uvarint(uint64(s.Fanout))
	e.id(s.Root)
	if v == VersionPatch {
		e.id(s.Patch)
	}
	return e.buf
}

// DecodeStream parses and checks a stream encoding.
func DecodeStream(enc []byte) (*Stream, error) {
	d := newDecoder(KindStream, enc)
	s := &Stream{Length: d.uvarint()}
	s.Chunking.Algorithm = d.byte()
	s.Chunking.Min = d.uint32()
	s.Chunking.Avg = d.uint32()
	s.Chunking.Max = d.uint32()
	s.Fanout = d.uint32()
	s.Root = d.id()
	if d.version == VersionPatch {
		s.Patch = d.id()
	}
	if d.err == nil && (s.Length == 0) != s.Root.IsZero() {
		d.fail("length %d with root %s", s.Length, s.Root.Short())
	}
	if d.err == nil && d.version == VersionPatch && (s.Patch.IsZero() || s.Root.IsZero()) {
		d.fail("version %d without a patch node and a root", VersionPatch)
	}
	if err := d.finish(); err != nil {
		return nil, err
	}
	return s, nil
}

// References returns the root index node and the patch node, if any.
func (s *Stream) References() []ID {
	var ids []ID
	for _, id := range []ID{s.Root, s.Patch} {
		if !id.IsZero() {
			ids = append(ids, id)
		}
	}
	return ids
}

func (d *decoder) uint32() uint32 {
	v := d.uvarint()
	if v > 1<<32-1 {
		d.fail("value %d does not fit 32 bits", v)
		return 0
	}
	return uint32(v)
}

func (s *Stream) String() string {
	if !s.Patch.IsZero() {
		return fmt.Sprintf("stream %d bytes, root %s, patch %s", s.Length, s.Root.Short(), s.Patch.Short())
	}
	return fmt.Sprintf("stream %d bytes, root %s", s.Length, s.Root.Short())
}
