package objects

import (
	"context"
	"errors"
	"fmt"
)

// A Reader reads objects in their stored form (see Seal), keyed by ID.
// Implementations are safe for concurrent use.
type Reader interface {
	// Has reports whether the object is present.
	Has(ctx context.Context, id ID) (bool, error)
	// Get returns the stored form. A missing object gives an error
	// satisfying errors.Is(err, ErrNotFound).
	Get(ctx context.Context, id ID) ([]byte, error)
	// List calls fn for every object with the size of its stored form,
	// in no particular order, each object once. It stops at the first
	// error fn returns, and returns that error; a cancelled ctx stops it
	// too.
	List(ctx context.Context, fn func(id ID, size int64) error) error
}

// A Store keeps objects in their stored form, keyed by ID. It knows
// nothing of encodings: callers seal before Put and unseal after Get.
// Every store does all of what this interface says; what only some
// stores can do is a small interface of its own (Deleter, Repacker,
// FileChecker, Refresher, LeafPutter, DeltaPutter, Loader, Locator,
// PrefixFinder, FailStopper), found by a type assertion to that
// interface.
// objects/storetest holds the suite every Store passes.
//
// Implementations are safe for concurrent use, including concurrent
// Puts of the same object, and Put is atomic: a reader sees the whole
// object or none of it. An object is readable in this process as soon
// as its Put returns.
//
// Callers keep the closure invariant: an object is Put only after every
// object it references is present. A present stream, tree or snapshot
// therefore implies its whole subtree is present.
type Store interface {
	Reader
	// Put stores the stored form of id. Putting a present object is not
	// an error.
	Put(ctx context.Context, id ID, stored []byte) error
	// Sync makes every Put that returned before it durable and visible
	// to other processes that open the same store. Refs-last depends on
	// it: callers Sync before they move a ref to new objects. A store in
	// memory has nothing to make durable, and returns nil.
	Sync(ctx context.Context) error
	// Close releases the files the store holds open. Objects Put since
	// the last Sync may be lost, as after a crash.
	Close() error
}

// A Deleter is a Store that removes single objects (the loose store).
// Deleting a missing object is not an error. A pack store removes
// objects only by rewriting packs (see Repacker).
type Deleter interface {
	Delete(ctx context.Context, id ID) error
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

// A Refresher is a Store that keeps a view of what other processes had
// published when it last looked: Refresh looks again, so that Has sees
// objects they have synced since.
type Refresher interface {
	Refresh() error
}

// A FileChecker is a Store whose files can be checked apart from the
// objects they hold; fsck asks it.
type FileChecker interface {
	// Damaged reports the damage the store found without looking for
	// it: files it could not read when it opened them (an unreadable
	// pack index), whose objects are unreachable until they are
	// repaired. It reads nothing.
	Damaged() []error
	// CheckFiles reads every file and reports what Damaged does and the damage that reading objects does not see (an
	// unreadable pack index, records that disagree with it, stray bytes),
	// one error per damaged file.
	CheckFiles(ctx context.Context) []error
	// Leftovers lists the files that killed writers (or writers at work)
	// left, which hold no published object, and their total size.
	Leftovers() (names []string, size int64, err error)
	// Checksummed reports whether every stored byte of id is covered by
	// a checksum that Get or Unseal verifies.
	Checksummed(id ID) bool
}

// A Repacker is a Store that removes objects by rewriting the files
// that hold them, planned first (see RepackPlan). The caller makes sure
// that no other process writes between PlanRepack and the end of Repack
// (see scrapbook.LockShared).
type Repacker interface {
	// PlanRepack decides what a repack that keeps the objects for which
	// keep returns true would do. It writes nothing: a dry run is the
	// plan.
	PlanRepack(ctx context.Context, keep func(ID) bool) (*RepackPlan, error)
	// Repack carries out a plan, calling progress (if not nil) now and
	// then with the bytes copied so far and the bytes to copy in all.
	Repack(ctx context.Context, plan *RepackPlan, progress func(copied, total int64)) (RepackStats, error)
	// SmallPacks counts the published packs that a repack merges even
	// when it drops nothing.
	SmallPacks() int
}

// A FailStopper is a Store that writes no more once a write has failed
// (a full disk), since objects it believed stored may not be: Err
// returns that error, nil while it writes. To go on, open the store
// again.
type FailStopper interface {
	Err() error
}

// A DeltaPutter is a Store that can keep a chunk as a delta against
// an earlier version of it (see EncodeDelta): only a scrapbook's own
// pack store (Packed). Its Get still returns self-contained stored
// forms, so deltas never leave it.
type DeltaPutter interface {
	// BaseFor returns the object a delta for a new version of prev is
	// made against, and its canonical encoding: prev if the store
	// holds it whole, else the base of prev's delta, so that no delta's
	// base is a delta. ok is false if no base can serve (prev is not
	// in a published pack).
	BaseFor(ctx context.Context, prev ID) (base ID, enc []byte, ok bool, err error)
	// PutDelta stores id as delta, which EncodeDelta made against a
	// base BaseFor returned, or, should that base no longer serve, as
	// whole, its self-contained stored form; isDelta says which. Like
	// PutLeaf, it is for chunks.
	PutDelta(ctx context.Context, id ID, delta, whole []byte) (isDelta bool, err error)
}

// A Loader is a Reader with a faster way to an object's canonical
// encoding than Get and Unseal: a store that keeps deltas resolves them
// without sealing again. Load uses it.
type Loader interface {
	// Load returns the canonical encoding of id, verified against id.
	Load(ctx context.Context, id ID) ([]byte, error)
}

// ErrNotFound is returned for missing objects.
var ErrNotFound = errors.New("object not found")

// Where describes the location of id in s for error messages.
func Where(s Reader, id ID) string {
	if l, ok := s.(Locator); ok {
		return l.Locate(id)
	}
	return id.String()
}

// Load gets, unseals and verifies the canonical encoding of id (through
// s's Loader, if it is one).
func Load(ctx context.Context, s Reader, id ID) ([]byte, error) {
	if l, ok := s.(Loader); ok {
		return l.Load(ctx, id)
	}
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
func loadAs[T any](ctx context.Context, s Reader, id ID, decode func([]byte) (T, error)) (T, error) {
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
func LoadIndex(ctx context.Context, s Reader, id ID) (*Index, error) {
	return loadAs(ctx, s, id, DecodeIndex)
}

// LoadPatch loads and decodes a patch node.
func LoadPatch(ctx context.Context, s Reader, id ID) (*Patch, error) {
	return loadAs(ctx, s, id, DecodePatch)
}

// LoadStream loads and decodes a stream.
func LoadStream(ctx context.Context, s Reader, id ID) (*Stream, error) {
	return loadAs(ctx, s, id, DecodeStream)
}

// LoadTree loads and decodes a tree.
func LoadTree(ctx context.Context, s Reader, id ID) (*Tree, error) {
	return loadAs(ctx, s, id, DecodeTree)
}

// LoadSnapshot loads and decodes a snapshot.
func LoadSnapshot(ctx context.Context, s Reader, id ID) (*Snapshot, error) {
	return loadAs(ctx, s, id, DecodeSnapshot)
}

// LoadChunk loads a chunk's raw bytes.
func LoadChunk(ctx context.Context, s Reader, id ID) ([]byte, error) {
	return loadAs(ctx, s, id, DecodeChunk)
}

// A PrefixFinder is a Store that can find objects by a prefix of their
// hex ID, as users type them.
type PrefixFinder interface {
	FindPrefix(ctx context.Context, prefix string) ([]ID, error)
}
