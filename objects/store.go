package objects

import (
	"context"
	"errors"
	"fmt"
)

// A Store keeps objects in their stored form (see Seal), keyed by ID. It
// knows nothing of encodings: callers seal before Put and unseal after Get.
// Implementations must be safe for concurrent use, including concurrent
// Puts of the same object, and Put must be atomic: a reader sees the whole
// object or none of it.
//
// Callers keep the closure invariant: an object is Put only after every
// object it references is present. A present stream, tree or snapshot
// therefore implies its whole subtree is present.
type Store interface {
	// Has reports whether the object is present.
	Has(ctx context.Context, id ID) (bool, error)
	// Get returns the stored form. A missing object gives an error
	// satisfying errors.Is(err, ErrNotFound).
	Get(ctx context.Context, id ID) ([]byte, error)
	// Put stores the stored form of id. Putting a present object is not an error.
	Put(ctx context.Context, id ID, stored []byte) error
	// List calls fn for every object with the size of its stored form, in no particular order.
	List(ctx context.Context, fn func(id ID, size int64) error) error
	// Delete removes an object. Deleting a missing object is not an error.
	Delete(ctx context.Context, id ID) error
}

// A Syncer is a Store that can make every completed Put durable at once.
// Callers sync before publishing a ref to new objects.
type Syncer interface {
	Sync(ctx context.Context) error
}

// A LeafPutter is a Store with a faster way to store objects that
// reference no others (chunks): PutLeaf is Put, and may write several
// leaves at once.
type LeafPutter interface {
	PutLeaf(ctx context.Context, id ID, stored []byte) error
}

// A Locator is a Store that can say where an object lives, for messages.
type Locator interface {
	Locate(id ID) string
}

// ErrNotFound is returned for missing objects.
var ErrNotFound = errors.New("object not found")

// Where describes the location of id in s for error messages.
func Where(s Store, id ID) string {
	if l, ok := s.(Locator); ok {
		return l.Locate(id)
	}
	return id.String()
}

// Load gets, unseals and verifies the canonical encoding of id.
func Load(ctx context.Context, s Store, id ID) ([]byte, error) {
	stored, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	enc, err := Unseal(id, stored)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, Where(s, id))
	}
	return enc, nil
}

// Save seals and stores a canonical encoding, returning its ID and the
// size of its stored form.
func Save(ctx context.Context, s Store, enc []byte) (ID, int, error) {
	id := Sum(enc)
	stored := Seal(enc, nil)
	if err := s.Put(ctx, id, stored); err != nil {
		return id, 0, err
	}
	return id, len(stored), nil
}

// loadAs loads id and decodes it with decode, wrapping errors with the object.
func loadAs[T any](ctx context.Context, s Store, id ID, decode func([]byte) (T, error)) (T, error) {
	var zero T
	enc, err := Load(ctx, s, id)
	if err != nil {
		return zero, err
	}
	v, err := decode(enc)
	if err != nil {
		return zero, fmt.Errorf("object %s: %w: %v (%s)", id, ErrCorrupt, err, Where(s, id))
	}
	return v, nil
}

// LoadIndex loads and decodes an index node.
func LoadIndex(ctx context.Context, s Store, id ID) (*Index, error) {
	return loadAs(ctx, s, id, DecodeIndex)
}

// LoadStream loads and decodes a stream.
func LoadStream(ctx context.Context, s Store, id ID) (*Stream, error) {
	return loadAs(ctx, s, id, DecodeStream)
}

// LoadTree loads and decodes a tree.
func LoadTree(ctx context.Context, s Store, id ID) (*Tree, error) {
	return loadAs(ctx, s, id, DecodeTree)
}

// LoadSnapshot loads and decodes a snapshot.
func LoadSnapshot(ctx context.Context, s Store, id ID) (*Snapshot, error) {
	return loadAs(ctx, s, id, DecodeSnapshot)
}

// LoadChunk loads a chunk's raw bytes.
func LoadChunk(ctx context.Context, s Store, id ID) ([]byte, error) {
	return loadAs(ctx, s, id, DecodeChunk)
}

// A PrefixFinder is a Store that can find objects by a prefix of their
// hex ID, as users type them.
type PrefixFinder interface {
	FindPrefix(ctx context.Context, prefix string) ([]ID, error)
}
