// Package objects defines the content-addressed objects of a scrapbook
// (chunks, index nodes, streams, trees and snapshots), their canonical
// encodings, and the Store interface that keeps them.
package objects

import (
	"encoding/hex"
	"fmt"

	"github.com/zeebo/blake3"
)

// IDSize is the length of an object ID in bytes.
const IDSize = 32

// ID names an object: the BLAKE3-256 digest of its canonical encoding.
type ID [IDSize]byte

// Zero is the zero ID. It never names a stored object; stream index
// entries use it to mark holes.
var Zero ID

// Sum returns the ID of a canonical encoding. Every object ID in sbuml is
// computed here.
func Sum(encoding []byte) ID {
	return ID(blake3.Sum256(encoding))
}

// String returns the ID as 64 lowercase hex digits.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 12 hex digits, for display.
func (id ID) Short() string { return id.String()[:12] }

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == Zero }

// MarshalText implements encoding.TextMarshaler (hex).
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler (hex).
func (id *ID) UnmarshalText(b []byte) error {
	p, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = p
	return nil
}

// ParseID parses 64 hex digits.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*IDSize {
		return id, fmt.Errorf("invalid object id %q: want %d hex digits", s, 2*IDSize)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("invalid object id %q: %v", s, err)
	}
	return id, nil
}
