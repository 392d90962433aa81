// Package transport moves snapshots between scrapbooks. A Remote is the
// other side: another scrapbook directory, a published (static) directory,
// a smart HTTP server (`sbuml serve`) or a published directory on any web
// server. Push and Fetch decide what to move from the closure invariant of
// the object store: an object present on a side implies everything below
// it is present there, so a walk from the snapshots being moved stops
// wherever the receiving side already has an object.
//
// Objects travel in their stored form and are verified against their ID
// (objects.Unseal) by whoever receives them before they are stored, and
// they are stored children first, so the receiving store keeps the
// closure invariant at every moment. Refs move last, by compare-and-swap.
//
// A remote may be slow, broken or hostile: every HTTP request a client
// sends is bounded in time and retried only when it failed in passing
// (Limits), follows no redirect that could carry the push token, and
// reads what comes back with bounds; the Server likewise bounds what
// clients can make it hold (ServerLimits). docs/transport.md describes
// the wire protocol, the published layout and these limits.
package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"

	"github.com/sbuml/sbuml/objects"
)

// A Remote is a scrapbook at the other end of a transfer. Implementations
// are safe for concurrent use; transfers call Has, Get and Put from
// several goroutines at once.
type Remote interface {
	// URL names the remote in messages.
	URL() string
	// ListRefs returns the remote's refs.
	ListRefs(ctx context.Context) (*RefList, error)
	// Has reports for each of ids whether the remote holds it. A present
	// object implies its whole subtree is present.
	Has(ctx context.Context, ids []objects.ID) ([]bool, error)
	// Get fetches the stored forms of ids and calls fn once for each, in
	// any order, never concurrently within one call. The bytes are not
	// verified: the caller must Unseal them against the ID. A missing
	// object gives an error wrapping objects.ErrNotFound. Each stored
	// slice is fresh: fn may keep it.
	Get(ctx context.Context, ids []objects.ID, fn func(id objects.ID, stored []byte) error) error
	// Put stores objects in the order given. The remote verifies each
	// against its ID and stores it only if every object it references is
	// already present (earlier in objs or before), so the caller must
	// order children before parents. Read-only remotes return an error
	// wrapping ErrReadOnly, and remotes that want a token one wrapping
	// ErrPushDenied, also for an empty objs: Push checks access so.
	Put(ctx context.Context, objs []Object) error
	// UpdateRef sets ref name to new if it holds old, as one
	// compare-and-swap (old Zero: the ref must not exist; new Zero:
	// delete it). new must be a snapshot the remote holds. A lost race
	// gives an error wrapping refs.ErrConflict.
	UpdateRef(ctx context.Context, name string, old, new objects.ID) error
	// Traffic returns the bytes sent to and received from the remote so
	// far: HTTP bodies for HTTP remotes, stored forms for directories.
	Traffic() Traffic
	// Close releases idle connections.
	Close() error
}

// An Object is an object in its stored form, on its way to a remote.
type Object struct {
	ID     objects.ID
	Stored []byte
}

// RefList is what a remote says about its refs. It is also the content
// of refs.json in a published directory and the body of GET /refs.
type RefList struct {
	// Format is RefListFormat.
	Format int `json:"format"`
	// Head is the full name of the ref HEAD points at, if any.
	Head string `json:"head,omitempty"`
	// Refs are sorted by name.
	Refs []Ref `json:"refs"`
}

// RefListFormat is the version of the refs.json format that sbuml
// writes. Format 2 (2026-12-07) says the objects behind the list may be
// version 2 objects (docs/format.md), which a reader of format 1 would
// refuse one object at a time; it refuses the list instead, in one
// line. The list itself is the same in both, and sbuml reads both.
const RefListFormat = 2

// oldestRefListFormat is the oldest refs.json format sbuml reads.
const oldestRefListFormat = 1

// Ref is one ref of a remote.
type Ref struct {
	Name string     `json:"name"`
	ID   objects.ID `json:"id"`
}

// Get returns the ID of ref name, or Zero if the list does not hold it.
func (l *RefList) Get(name string) objects.ID {
	for _, r := range l.Refs {
		if r.Name == name {
			return r.ID
		}
	}
	return objects.Zero
}

// parseRefList decodes and checks a ref list received from a remote: the
// format is known, it lists at most maxRefs refs, and every name is a
// valid ref name of at most MaxWireRefName bytes (a remote must not make
// us create refs such as "refs/heads/../../x", nor refs without end).
func parseRefList(data []byte, where string, maxRefs int) (*RefList, error) {
	var l RefList
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, fmt.Errorf("%s: ref list is not valid JSON: %v", where, err)
	}
	if l.Format < oldestRefListFormat || l.Format > RefListFormat {
		return nil, fmt.Errorf("%s: ref list has format %d, this sbuml reads formats %d to %d: update sbuml", where, l.Format, oldestRefListFormat, RefListFormat)
	}
	if len(l.Refs) > maxRefs {
		return nil, fmt.Errorf("%s: %w: the remote lists %d refs, more than the %d sbuml takes from a remote (set SBUML_MAX_REFS to allow more, if you trust it)", where, ErrProtocol, len(l.Refs), maxRefs)
	}
	if l.Head != "" {
		if err := validateWireName(l.Head); err != nil {
			return nil, fmt.Errorf("%s: HEAD: %w", where, err)
		}
	}
	seen := map[string]bool{}
	for _, r := range l.Refs {
		if err := validateWireName(r.Name); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if r.ID.IsZero() {
			return nil, fmt.Errorf("%s: ref %s has the zero ID", where, r.Name)
		}
		if seen[r.Name] {
			return nil, fmt.Errorf("%s: ref %s is listed twice", where, r.Name)
		}
		seen[r.Name] = true
	}
	return &l, nil
}

// validateWireName checks the name of a ref a remote lists.
func validateWireName(name string) error {
	if len(name) > MaxWireRefName {
		return fmt.Errorf("%w: a ref name of %d bytes, more than the %d sbuml takes from a remote", ErrProtocol, len(name), MaxWireRefName)
	}
	return validatePushName(name)
}

// refListSize bounds the ref list of a remote that may list maxRefs
// refs: each of a name, an ID and JSON around them.
func refListSize(maxRefs int) int64 {
	return int64(maxRefs)*(MaxWireRefName+2*objects.IDSize+64) + 4096
}

// readRefList reads the body of a ref list of at most maxRefs refs.
func readRefList(resp *http.Response, where string, maxRefs int) (*RefList, error) {
	limit := refListSize(maxRefs)
	b, err := readAll(resp, limit, "ref list")
	if errors.Is(err, ErrProtocol) {
		return nil, fmt.Errorf("%s: %w: the ref list exceeds %d bytes, more than the %d refs sbuml takes from a remote can fill (set SBUML_MAX_REFS to allow more, if you trust it)", where, ErrProtocol, limit, maxRefs)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return parseRefList(b, where, maxRefs)
}

// Traffic counts bytes on the wire.
type Traffic struct {
	Sent     int64
	Received int64
}

// counter accumulates Traffic from many goroutines.
type counter struct{ sent, received atomic.Int64 }

func (c *counter) traffic() Traffic {
	return Traffic{Sent: c.sent.Load(), Received: c.received.Load()}
}

var (
	// ErrReadOnly is returned when writing to a remote that cannot be
	// written: a published directory served over HTTP, or a server
	// started with --read-only.
	ErrReadOnly = errors.New("remote is read-only")
	// ErrPushDenied is returned when a server refuses to be written to
	// without the right bearer token.
	ErrPushDenied = errors.New("push denied")
	// ErrMissingReference is returned when an object is sent before an
	// object it references; the receiver refuses it.
	ErrMissingReference = errors.New("object references a missing object")
	// ErrNotFastForward is returned when a push would move a remote ref
	// to a snapshot that does not descend from where it is now.
	ErrNotFastForward = errors.New("not a fast-forward")
	// ErrNotSnapshot is returned when a ref would point at an object
	// that is not a snapshot.
	ErrNotSnapshot = errors.New("not a snapshot")
	// ErrProtocol marks a remote that breaks the protocol.
	ErrProtocol = errors.New("protocol error")
)

// readStored reads the stored form of id from s to pass on undecoded,
// checked as far as is cheap: a pack checks the CRC of a compressed form
// as it reads it, and an uncompressed form, whose only checksum is its
// ID, is hashed here. Damage in s is then reported as s's, not as a
// receiver's refusal.
func readStored(ctx context.Context, s objects.Store, id objects.ID) ([]byte, error) {
	stored, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if !objects.IsCompressed(stored) {
		if _, err := objects.Unseal(id, stored); err != nil {
			return nil, fmt.Errorf("%w (%s)", err, objects.Where(s, id))
		}
	}
	return stored, nil
}
