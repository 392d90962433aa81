package objects

import "fmt"

// A Patch is a patch node: the ranges of a stream that differ from the
// index tree the stream names, each a chunk or a hole. It is an index
// object of encoding version VersionPatch. Readers take every byte a
// patch entry does not cover from the tree.
type Patch struct {
	Entries []PatchEntry `json:"entries"`
}

// A PatchEntry replaces Length bytes at Offset in a stream with a chunk,
// or with zeros (a hole) when ID is Zero.
type PatchEntry struct {
	Offset uint64 `json:"offset"`
	ID     ID     `json:"id"`
	Length uint64 `json:"length"`
}

// End returns the offset just after the entry.
func (e PatchEntry) End() uint64 { return e.Offset + e.Length }

// Encode returns the canonical encoding:
//
//	count uvarint, count × (gap uvarint, ID [32]byte, length uvarint)
//
// where gap is the number of bytes between the end of the previous entry
// (the start of the stream for the first) and the entry.
func (p *Patch) Encode() []byte {
	e := newEncoderVersion(KindIndex, VersionPatch, 2+len(p.Entries)*(IDSize+5))
	e.uvarint(uint64(len(p.Entries)))
	var end uint64
	for _, en := range p.Entries {
		e.uvarint(en.Offset - end)
		e.id(en.ID)
		e.uvarint(en.Length)
		end = en.End()
	}
	return e.buf
}

// DecodePatch parses and checks a patch node encoding: at least one
// entry, in stream order without overlaps, none empty, and no hole right
// after another (neighbouring holes are one entry).
func DecodePatch(enc []byte) (*Patch, error) {
	d := newDecoder(KindIndex, enc)
	if d.err == nil && d.version != VersionPatch {
		d.fail("is a node of an index tree, not a patch node")
	}
	n := d.count(IDSize + 2)
	if d.err == nil && n == 0 {
		d.fail("empty patch node")
	}
	p := &Patch{Entries: make([]PatchEntry, 0, n)}
	var end uint64
	for i := 0; i < n && d.err == nil; i++ {
		gap := d.uvarint()
		en := PatchEntry{Offset: end + gap, ID: d.id(), Length: d.uvarint()}
		if d.err != nil {
			break
		}
		switch {
		case en.Length == 0:
			d.fail("entry %d has length 0", i)
		case en.Offset < end || en.End() < en.Offset:
			d.fail("entry %d: offset overflows", i)
		case i > 0 && gap == 0 && en.ID.IsZero() && p.Entries[i-1].ID.IsZero():
			d.fail("entry %d: a hole right after a hole", i)
		}
		end = en.End()
		p.Entries = append(p.Entries, en)
	}
	if err := d.finish(); err != nil {
		return nil, err
	}
	return p, nil
}

// End returns the offset just after the last entry.
func (p *Patch) End() uint64 {
	if len(p.Entries) == 0 {
		return 0
	}
	return p.Entries[len(p.Entries)-1].End()
}

// References returns the chunks the patch names (holes excluded).
func (p *Patch) References() []ID {
	ids := make([]ID, 0, len(p.Entries))
	for _, e := range p.Entries {
		if !e.ID.IsZero() {
			ids = append(ids, e.ID)
		}
	}
	return ids
}

func (p *Patch) String() string {
	return fmt.Sprintf("patch node, %d entries up to byte %d", len(p.Entries), p.End())
}
