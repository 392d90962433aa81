package transport

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sbuml/sbuml/objects"
)

// Batch sizes of a fetch: at most this many objects, or about this many
// bytes (estimated from the lengths referrers give), per request.
const (
	fetchBatchObjects = 1024
	fetchBatchBytes   = 4 << 20
	// interiorEstimate is the size guessed for objects whose referrer
	// gives no length.
	interiorEstimate = 4 << 10
)

// Fetch copies the snapshots want, and everything they reach that local
// lacks, from remote into local. The walk starts at want and stops
// wherever local already has an object. Every object is verified against
// its ID and checked to be of the kind its referrer says before it is
// stored, and it is stored as soon as everything it references is:
// chunks at once, other objects when their last child arrives. So local
// keeps the closure invariant throughout, and a fetch that is cut off
// leaves whole subtrees behind, which the next fetch does not ask for
// again. Only objects that were received but were still waiting for
// children are lost. When ctx is cancelled, no request is started, the
// ones under way hand over what is already on its way (see drainIdle),
// and what arrived is stored and synced before Fetch returns.
func Fetch(ctx context.Context, local objects.Store, remote Remote, want []objects.ID, opts Options) (*Stats, error) {
	start := time.Now()
	before := remote.Traffic()
	f := &fetcher{
		local:  local,
		remote: remote,
		nodes:  map[objects.ID]*fnode{},
		done:   objects.Seen{},
		wake:   make(chan struct{}, 1),

		syncedAt: time.Now(),
	}
	f.meter = startMeter("receiving", func() int64 { return remote.Traffic().Received - before.Received }, opts.Progress)
	err := f.run(ctx, want, opts.concurrency())
	// Keep what arrived, also when the fetch failed: the next one starts
	// from there.
	if serr := local.Sync(context.WithoutCancel(ctx)); err == nil {
		err = serr
	}
	f.meter.finish()
	after := remote.Traffic()
	f.stats.BytesSent = after.Sent - before.Sent
	f.stats.BytesReceived = after.Received - before.Received
	f.stats.Duration = time.Since(start)
	if err != nil {
		return &f.stats, fmt.Errorf("fetch from %s: %w", remote.URL(), err)
	}
	return &f.stats, nil
}

// fnode is an object the fetch needs and local lacks.
type fnode struct {
	id   objects.ID
	kind objects.Kind // as its referrer says
	// received is set once the object arrived and its children were
	// looked up; stored holds its bytes until pending drops to zero.
	received bool
	stored   []byte
	pending  int      // children not yet stored locally
	waiters  []*fnode // parents waiting for this object
}

type fetcher struct {
	local  objects.Store
	remote Remote
	meter  *meter

	mu       sync.Mutex
	nodes    map[objects.ID]*fnode // needed, not yet stored
	done     objects.Seen          // present locally, found or stored
	queue    []objects.Ref         // to ask the remote for
	inflight int
	err      error
	stats    Stats
	wake     chan struct{}

	// syncedBytes and syncedAt record the last sync of local.
	syncedBytes int64
	syncedAt    time.Time
}

// A fetch syncs the local store after this many bytes or this long.
const (
	syncEvery    = 64 << 20
	syncInterval = 10 * time.Second
)

// run schedules requests until nothing is left to fetch.
func (f *fetcher) run(ctx context.Context, want []objects.ID, concurrency int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Objects that arrive are stored also after ctx is cancelled: a
	// download under way goes on for a moment to hand over what is
	// already on its way (see drainIdle), and all of it is worth keeping.
	keep := context.WithoutCancel(ctx)
	f.mu.Lock()
	for _, id := range want {
		if err := f.discover(ctx, objects.Ref{ID: id, Kind: objects.KindSnapshot}, nil); err != nil {
			f.mu.Unlock()
			return err
		}
	}
	for {
		for f.err == nil && ctx.Err() == nil && f.inflight < concurrency && len(f.queue) > 0 {
			batch := f.takeBatch()
			f.inflight++
			go func() {
				err := f.remote.Get(ctx, batch, func(id objects.ID, stored []byte) error {
					return f.receive(keep, id, stored)
				})
				f.mu.Lock()
				f.inflight--
				if err != nil && f.err == nil {
					f.err = err
					cancel()
				}
				f.mu.Unlock()
				f.signal()
			}()
		}
		if f.inflight == 0 && (len(f.queue) == 0 || f.err != nil || ctx.Err() != nil) {
			break
		}
		f.mu.Unlock()
		<-f.wake // every finished request signals, as does new work
		f.mu.Lock()
		if f.err == nil && ctx.Err() == nil && (f.stats.ObjectBytes-f.syncedBytes >= syncEvery || time.Since(f.syncedAt) >= syncInterval) {
			// Make the objects stored so far durable, so that a fetch
			// killed later need not fetch them again.
			stored := f.stats.ObjectBytes
			f.mu.Unlock()
			err := f.local.Sync(ctx)
			f.mu.Lock()
			if err != nil && f.err == nil {
				f.err = err
				cancel()
			}
			f.syncedBytes, f.syncedAt = stored, time.Now()
		}
	}
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	for id, n := range f.nodes {
		return fmt.Errorf("object %s (%s) still waits for %d objects after the fetch ended", id, n.kind, n.pending)
	}
	return nil
}

func (f *fetcher) signal() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// takeBatch removes the next batch of IDs from the queue.
func (f *fetcher) takeBatch() []objects.ID {
	var ids []objects.ID
	var size uint64
	for len(f.queue) > 0 && len(ids) < fetchBatchObjects && size < fetchBatchBytes {
		r := f.queue[0]
		f.queue = f.queue[1:]
		ids = append(ids, r.ID)
		if r.Kind == objects.KindChunk && r.Length > 0 {
			size += r.Length
		} else {
			size += interiorEstimate
		}
	}
	return ids
}

// discover notes that parent (nil for a wanted snapshot) references r:
// if local has it, nothing is to be done; else r is queued (once) and
// parent waits for it. f.mu is held.
func (f *fetcher) discover(ctx context.Context, r objects.Ref, parent *fnode) error {
	if _, ok := f.done[r.ID]; ok {
		return nil
	}
	n := f.nodes[r.ID]
	if n == nil {
		ok, err := f.local.Has(ctx, r.ID)
		if err != nil {
			return err
		}
		if ok {
			f.done.Add(r.ID)
			f.stats.Skipped++
			f.stats.SkippedBytes += r.Length
			return nil
		}
		n = &fnode{id: r.ID, kind: r.Kind}
		f.nodes[r.ID] = n
		f.queue = append(f.queue, r)
		f.meter.total.Add(1)
	} else if n.kind != r.Kind {
		return fmt.Errorf("object %s: %w: referenced both as a %s and as a %s", r.ID, objects.ErrCorrupt, n.kind, r.Kind)
	}
	if parent != nil {
		n.waiters = append(n.waiters, parent)
		parent.pending++
	}
	return nil
}

// receive handles one object off the wire: verify, then store it or
// wait for its children.
func (f *fetcher) receive(ctx context.Context, id objects.ID, stored []byte) error {
	f.mu.Lock()
	n := f.nodes[id]
	f.mu.Unlock()
	if n == nil || n.received {
		return fmt.Errorf("%w: remote sent object %s, which was not asked for", ErrProtocol, id)
	}
	enc, err := objects.Unseal(id, stored)
	if err != nil {
		return fmt.Errorf("remote served a bad object, refused: %w", err)
	}
	k, refs, err := objects.Refs(enc)
	if err == nil && k != n.kind {
		err = fmt.Errorf("is a %s, but it is referenced as a %s", k, n.kind)
	}
	if err != nil {
		return fmt.Errorf("remote served a bad object, refused: object %s: %w: %v", id, objects.ErrCorrupt, err)
	}
	f.meter.objects.Add(1)
	if len(refs) == 0 {
		// A leaf: store it outside the lock, so disks work in parallel.
		if err := f.local.Put(ctx, id, stored); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats.Objects++
	f.stats.ObjectBytes += int64(len(stored))
	n.received = true
	if len(refs) == 0 {
		return f.stored(ctx, n)
	}
	for _, r := range refs {
		if err := f.discover(ctx, r, n); err != nil {
			return err
		}
	}
	f.signal()
	if n.pending > 0 {
		n.stored = stored
		return nil
	}
	return f.store(ctx, n, stored)
}

// store puts an interior object whose children are all present. f.mu is held.
func (f *fetcher) store(ctx context.Context, n *fnode, stored []byte) error {
	if err := f.local.Put(ctx, n.id, stored); err != nil {
		return err
	}
	return f.stored(ctx, n)
}

// stored records that n is in the local store and stores the parents
// that were waiting only for it. f.mu is held.
func (f *fetcher) stored(ctx context.Context, n *fnode) error {
	todo := []*fnode{n}
	for len(todo) > 0 {
		n := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		delete(f.nodes, n.id)
		f.done.Add(n.id)
		for _, w := range n.waiters {
			w.pending--
			if w.pending == 0 && w.received {
				if err := f.local.Put(ctx, w.id, w.stored); err != nil {
					return err
				}
				w.stored = nil
				todo = append(todo, w)
			}
		}
		n.waiters = nil
	}
	return nil
}
