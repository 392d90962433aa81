package objects

import "fmt"

// An Index is one node of a stream's index tree. A level-0 node lists
// chunks; a node at level n>0 lists index nodes of level n-1. Each entry
// carries the number of stream bytes below it, so any offset can be found
// by descending from the root.
type Index struct {
	Level   uint8        `json:"level"`
	Entries []IndexEntry `json:"entries"`
}

// An IndexEntry names a chunk (level 0) or a child index node (level>0)
// and the number of stream bytes it covers. At level 0 a Zero ID marks a
// hole: Length zero bytes that are stored nowhere.
type IndexEntry struct {
	ID     ID     `json:"id"`
	Length uint64 `json:"length"`
}

// MaxIndexLevel bounds the height of an index tree.
const MaxIndexLevel = 16

// Length returns the number of stream bytes the node covers.
func (x *Index) Length() uint64 {
	var n uint64
	for _, e := range x.Entries {
		n += e.Length
	}
	return n
}

// Encode returns the canonical encoding:
//
//	level byte, count uvarint, count × (ID [32]byte, length uvarint)
func (x *Index) Encode() []byte {
	e := newEncoder(KindIndex, 2+len(x.Entries)*(IDSize+4))
	e.byte(x.Level)
	e.uvarint(uint64(len(x.Entries)))
	for _, en := range x.Entries {
		e.id(en.ID)
		e.uvarint(en.Length)
	}
	return e.buf
}

// DecodeIndex parses and checks an index node encoding.
func DecodeIndex(enc []byte) (*Index, error) {
	d := newDecoder(KindIndex, enc)
	if d.err == nil && d.version != Version {
		d.fail("is a patch node, not a node of an index tree")
	}
	x := &Index{Level: d.byte()}
	n := d.count(IDSize + 1)
	if d.err == nil && x.Level > MaxIndexLevel {
		d.fail("level %d exceeds %d", x.Level, MaxIndexLevel)
	}
	if d.err == nil && n == 0 {
		d.fail("empty index node")
	}
	x.Entries = make([]IndexEntry, 0, n)
	var total uint64
	for i := 0; i < n && d.err == nil; i++ {
		en := IndexEntry{ID: d.id(), Length: d.uvarint()}
		if d.err != nil {
			break
		}
		if en.Length == 0 {
			d.fail("entry %d has length 0", i)
		}
		if en.ID.IsZero() && x.Level > 0 {
			d.fail("entry %d: hole above level 0", i)
		}
		if total+en.Length < total {
			d.fail("length overflows")
		}
		total += en.Length
		x.Entries = append(x.Entries, en)
	}
	if err := d.finish(); err != nil {
		return nil, err
	}
	return x, nil
}

// References returns the IDs the node names (holes excluded).
func (x *Index) References() []ID {
	ids := make([]ID, 0, len(x.Entries))
	for _, e := range x.Entries {
		if !e.ID.IsZero() {
			ids = append(ids, e.ID)
		}
	}
	return ids
}

func (x *Index) String() string {
	return fmt.Sprintf("index level %d, %d entries, %d bytes", x.Level, len(x.Entries), x.Length())
}
