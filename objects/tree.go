package objects

import (
	"fmt"
	"sort"
	"strings"
)

// EntryKind says what a tree entry names.
type EntryKind uint8

// The tree entry kinds. Values are stored on disk; never renumber.
const (
	EntryFile    EntryKind = 1 // a regular file; ID names a stream
	EntryDir     EntryKind = 2 // a directory; ID names a tree
	EntrySymlink EntryKind = 3 // a symbolic link; ID names a chunk holding the target
)

// MarshalText gives JSON the kind's name, as String.
func (k EntryKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

func (k EntryKind) String() string {
	switch k {
	case EntryFile:
		return "file"
	case EntryDir:
		return "dir"
	case EntrySymlink:
		return "symlink"
	}
	return fmt.Sprintf("entrykind(%d)", uint8(k))
}

// A Tree is a list of named entries sorted by name (bytewise), with no
// duplicates.
type Tree struct {
	Entries []TreeEntry `json:"entries"`
}

// A TreeEntry is one name in a tree. Size is the logical size in bytes of
// what it names (for a directory, the sum of its entries' sizes); Mode
// holds the Unix permission bits (07777).
type TreeEntry struct {
	Name string    `json:"name"`
	Kind EntryKind `json:"kind"`
	Mode uint32    `json:"mode"`
	Size uint64    `json:"size"`
	ID   ID        `json:"id"`
}

// ValidEntryName reports whether name may appear in a tree.
func ValidEntryName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("invalid entry name %q", name)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("invalid entry name %q: contains '/' or NUL", name)
	case len(name) > 4096:
		return fmt.Errorf("invalid entry name: %d bytes long", len(name))
	}
	return nil
}

// Sort orders the entries by name.
func (t *Tree) Sort() {
	sort.Slice(t.Entries, func(i, j int) bool { return t.Entries[i].Name < t.Entries[j].Name })
}

// Find returns the entry called name, or nil.
func (t *Tree) Find(name string) *TreeEntry {
	i := sort.Search(len(t.Entries), func(i int) bool { return t.Entries[i].Name >= name })
	if i < len(t.Entries) && t.Entries[i].Name == name {
		return &t.Entries[i]
	}
	return nil
}

// Size returns the sum of the entries' sizes.
func (t *Tree) Size() uint64 {
	var n uint64
	for _, e := range t.Entries {
		n += e.Size
	}
	return n
}

// Encode returns the canonical encoding. Entries must be sorted (see Sort):
//
//	count uvarint, count × (name string, kind byte, mode uvarint, size uvarint, ID [32]byte)
//
// where a string is a uvarint length followed by UTF-8 bytes.
func (t *Tree) Encode() []byte {
	e := newEncoder(KindTree, len(t.Entries)*(IDSize+24))
	e.uvarint(uint64(len(t.Entries)))
	for _, en := range t.Entries {
		e.string(en.Name)
		e.byte(byte(en.Kind))
		e.uvarint(uint64(en.Mode))
		e.uvarint(en.Size)
		e.id(en.ID)
	}
	return e.buf
}

// DecodeTree parses and checks a tree encoding: names valid, sorted and
// unique, kinds known.
func DecodeTree(enc []byte) (*Tree, error) {
	d := newDecoder(KindTree, enc)
	n := d.count(1 + 1 + 1 + 1 + 1 + IDSize)
	t := &Tree{Entries: make([]TreeEntry, 0, n)}
	for i := 0; i < n && d.err == nil; i++ {
		en := TreeEntry{Name: d.string(), Kind: EntryKind(d.byte()), Mode: d.uint32(), Size: d.uvarint(), ID: d.id()}
		if d.err != nil {
			break
		}
		if err := ValidEntryName(en.Name); err != nil {
			d.fail("entry %d: %v", i, err)
		}
		if en.Kind < EntryFile || en.Kind > EntrySymlink {
			d.fail("entry %q: unknown kind %d", en.Name, en.Kind)
		}
		if en.Mode&^07777 != 0 {
			d.fail("entry %q: mode %o has bits outside 07777", en.Name, en.Mode)
		}
		if i > 0 && t.Entries[i-1].Name >= en.Name {
			d.fail("entry %q: names not sorted or not unique", en.Name)
		}
		if en.ID.IsZero() {
			d.fail("entry %q: zero ID", en.Name)
		}
		t.Entries = append(t.Entries, en)
	}
	if err := d.finish(); err != nil {
		return nil, err
	}
	return t, nil
}

// References returns the IDs the entries name.
func (t *Tree) References() []ID {
	ids := make([]ID, len(t.Entries))
	for i, e := range t.Entries {
		ids[i] = e.ID
	}
	return ids
}
