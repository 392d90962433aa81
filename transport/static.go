package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/sbuml/sbuml/objects"
)

// StaticConcurrency is the number of requests a Static remote keeps in
// flight within one Get or Has.
const StaticConcurrency = 8

// Static is a read-only Remote on a published directory served by any web
// server: refs.json lists the refs, and packs.json the packs that hold
// the objects (see PackListFile). Directories published by older sbuml
// versions also hold each object as a loose file, objects/ab/cdef…,
// which Static reads where a pack does not serve.
//
// Get downloads a pack whole, once, as soon as it is asked for any object
// in it, and reads the objects out of it; other objects are one GET each.
// A fetch asks for objects in batches as it walks the snapshot, so no
// batch says how much of a pack will be wanted; but a pack holds exactly
// the objects that one publish added, and a client that lacks one of
// them lacks that publish and will, walking on, ask for most of the rest.
// The downloaded packs stay in unlinked temporary files until Close.
type Static struct {
	base   string // ends in "/"
	client *client
	count  counter

	packsMu     sync.Mutex
	packsLoaded bool
	packs       []*staticPack
	where       map[objects.ID]staticSlot
	// noRanges is set once the server answered a range request with the
	// whole file (as python3 -m http.server does): packs are then
	// downloaded whole.
	noRanges atomic.Bool
}

// NewStatic returns a client for the published directory at base,
// within the default Limits. hc nil means a client from NewHTTPClient.
func NewStatic(base string, hc *http.Client) *Static {
	return newStatic(base, newClient(hc, Limits{}))
}

func newStatic(base string, c *client) *Static {
	return &Static{base: withSlash(base), client: c}
}

// URL implements Remote.
func (s *Static) URL() string { return s.base }

// Traffic implements Remote: bytes of response bodies (requests have none).
func (s *Static) Traffic() Traffic { return s.count.traffic() }

// Close implements Remote.
func (s *Static) Close() error {
	s.client.hc.CloseIdleConnections()
	if err := s.closePacks(); err != nil {
		return fmt.Errorf("remote %s: %w", s.base, err)
	}
	return nil
}

// request sends a bodiless request, with the given header names and
// values, and returns the response, whatever its status, with the body
// counted.
func (s *Static) request(ctx context.Context, method, path string, header ...string) (*http.Response, error) {
	r := request{method: method, url: s.base + path, header: http.Header{}, idempotent: true}
	for i := 0; i+1 < len(header); i += 2 {
		r.header.Set(header[i], header[i+1])
	}
	resp, err := s.client.do(ctx, r, nil)
	if err != nil {
		return nil, fmt.Errorf("remote %s: %w", s.base, err)
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, n: &s.count.received}
	return resp, nil
}

// ListRefs implements Remote: GET refs.json.
func (s *Static) ListRefs(ctx context.Context) (*RefList, error) {
	resp, err := s.request(ctx, "GET", RefListFile)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("remote %s: GET %s: %s", s.base, RefListFile, resp.Status)
	}
	return readRefList(resp, "remote "+s.base+RefListFile, s.client.limits.MaxRefs)
}

func objectPath(id objects.ID) string {
	h := id.String()
	return "objects/" + h[:2] + "/" + h[2:]
}

// Has implements Remote: an object a pack lists is there; for any other,
// one HEAD request for its loose file (older published directories).
func (s *Static) Has(ctx context.Context, ids []objects.ID) ([]bool, error) {
	if err := s.loadPacks(ctx); err != nil {
		return nil, err
	}
	has := make([]bool, len(ids))
	g := newGroup(ctx, StaticConcurrency)
	for i, id := range ids {
		if _, ok := s.where[id]; ok {
			has[i] = true
			continue
		}
		g.run(func(ctx context.Context) error {
			resp, err := s.request(ctx, "HEAD", objectPath(id))
			if err != nil {
				return err
			}
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK:
				has[i] = true
			case http.StatusNotFound:
			default:
				return fmt.Errorf("remote %s: HEAD %s: %s", s.base, objectPath(id), resp.Status)
			}
			return nil
		})
	}
	if err := g.wait(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return has, nil
}

// Get implements Remote: the objects in packs are read from the packs,
// the rest downloaded one by one, with StaticConcurrency GETs in flight.
// An object read from a pack that fn refuses as corrupt (errors.Is
// objects.ErrCorrupt) is downloaded again on its own, where the directory
// holds loose files; where it holds none, the error says which object
// and pack are damaged.
func (s *Static) Get(ctx context.Context, ids []objects.ID, fn func(objects.ID, []byte) error) error {
	var mu sync.Mutex
	deliver := func(id objects.ID, stored []byte) error {
		mu.Lock()
		defer mu.Unlock()
		return fn(id, stored)
	}
	ids, err := s.fromPacks(ctx, ids, deliver)
	if err != nil {
		return err
	}
	g := newGroup(ctx, StaticConcurrency)
	for _, id := range ids {
		g.run(func(ctx context.Context) error {
			stored, err := s.getOne(ctx, id)
			if slot, ok := s.where[id]; ok && errors.Is(err, objects.ErrNotFound) {
				return fmt.Errorf("remote %s: object %s: %w: its copy in %s/%s.pack could not be read or is damaged, and the directory holds no other", s.base, id, objects.ErrCorrupt, PackDir, slot.pack.Name)
			}
			if err != nil {
				return err
			}
			return deliver(id, stored)
		})
	}
	if err := g.wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// getOne downloads one object; an object under way when ctx is
// cancelled is still read while it keeps arriving (see drainIdle).
func (s *Static) getOne(ctx context.Context, id objects.ID) ([]byte, error) {
	d := startDraining(ctx)
	defer d.close()
	resp, err := s.request(d.ctx, "GET", objectPath(id))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	resp.Body = &countingBody{ReadCloser: resp.Body, n: &d.read}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, fmt.Errorf("remote %s: object %s: %w", s.base, id, objects.ErrNotFound)
	default:
		return nil, fmt.Errorf("remote %s: GET %s: %s", s.base, objectPath(id), resp.Status)
	}
	stored, err := io.ReadAll(io.LimitReader(resp.Body, MaxStoredSize+1))
	if err != nil {
		return nil, fmt.Errorf("remote %s: GET %s: %w", s.base, objectPath(id), err)
	}
	if len(stored) > MaxStoredSize {
		return nil, fmt.Errorf("remote %s: object %s: %w: larger than %d bytes", s.base, id, objects.ErrCorrupt, MaxStoredSize)
	}
	return stored, nil
}

// Put implements Remote: a published directory on a web server is read-only.
func (s *Static) Put(context.Context, []Object) error { return s.readOnly() }

// UpdateRef implements Remote: a published directory on a web server is read-only.
func (s *Static) UpdateRef(context.Context, string, objects.ID, objects.ID) error {
	return s.readOnly()
}

func (s *Static) readOnly() error {
	return fmt.Errorf("remote %s: %w: it is a published directory; publish again with 'sbuml publish' instead", s.base, ErrReadOnly)
}
