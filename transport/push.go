package transport

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
)

// Batch sizes of a push.
const (
	hasBatch        = 4096 // IDs per existence query
	sendBatchBytes  = 8 << 20
	sendBatchObject = 4096
)

// RefUpdate asks Push to set a remote ref to a local snapshot.
type RefUpdate struct {
	// Name is the full name of the remote ref, such as refs/heads/main.
	Name string
	// New is the snapshot to point it at.
	New objects.ID
	// Force allows an update that is not a fast-forward. It never
	// overrides the compare-and-swap: a ref that moves on the remote
	// while the push runs is left alone.
	Force bool
}

// RefResult says what Push did to one ref.
type RefResult struct {
	Name string     `json:"name"`
	Old  objects.ID `json:"old"`
	New  objects.ID `json:"new"`
	// Status is "up to date", "created", "fast-forward" or "forced".
	Status string `json:"status"`
}

// Push sends the snapshots of updates, and whatever they reach that the
// remote lacks, from local to remote, then moves the remote refs. Every
// update must be a fast-forward (the remote ref's current snapshot is
// an ancestor of the new one) unless forced; otherwise nothing is sent
// and the error wraps ErrNotFastForward. Refs move only after every
// object is on the remote, each by a compare-and-swap from the value
// read when the push began, so a concurrent push is never overwritten:
// the loser's error wraps refs.ErrConflict and, unless the update was
// forced, ErrNotFastForward.
func Push(ctx context.Context, local objects.Store, remote Remote, updates []RefUpdate, opts Options) ([]RefResult, *Stats, error) {
	fail := func(err error) ([]RefResult, *Stats, error) {
		return nil, nil, fmt.Errorf("push to %s: %w", remote.URL(), err)
	}
	for _, u := range updates {
		if err := validatePushName(u.Name); err != nil {
			return fail(err)
		}
		if err := checkSnapshot(ctx, local, u.New); err != nil {
			return fail(fmt.Errorf("%s: %w", u.Name, err))
		}
	}
	// An empty Put checks that the remote takes writes from us at all,
	// before any work is done.
	if err := remote.Put(ctx, nil); err != nil {
		return fail(err)
	}
	list, err := remote.ListRefs(ctx)
	if err != nil {
		return fail(err)
	}
	results := make([]RefResult, len(updates))
	var roots []objects.ID
	var rejected []string
	for i, u := range updates {
		old := list.Get(u.Name)
		r := RefResult{Name: u.Name, Old: old, New: u.New}
		switch {
		case old == u.New:
			r.Status = "up to date"
		case old.IsZero():
			r.Status = "created"
		default:
			ff, why, err := isAncestor(ctx, local, old, u.New)
			if err != nil {
				return fail(err)
			}
			switch {
			case ff:
				r.Status = "fast-forward"
			case u.Force:
				r.Status = "forced"
			default:
				rejected = append(rejected, fmt.Sprintf("%s: the remote has %s, %s", u.Name, old.Short(), why))
			}
		}
		if r.Status != "up to date" {
			roots = append(roots, u.New)
		}
		results[i] = r
	}
	if len(rejected) > 0 {
		return fail(fmt.Errorf("%w, nothing was sent: %s; pull and build on the remote's snapshot, or push with --force to replace it",
			ErrNotFastForward, strings.Join(rejected, "; ")))
	}
	stats, err := Send(ctx, local, remote, roots, opts)
	if err != nil {
		return nil, stats, err
	}
	for _, r := range results {
		if r.Status == "up to date" {
			continue
		}
		if err := remote.UpdateRef(ctx, r.Name, r.Old, r.New); err != nil {
			switch {
			case errors.Is(err, refs.ErrConflict) && r.Status == "forced":
				err = fmt.Errorf("%s moved on the remote while pushing (someone else pushed); its objects are there, but the ref was left alone; pull and try again: %w", r.Name, err)
			case errors.Is(err, refs.ErrConflict):
				err = fmt.Errorf("%s moved on the remote while pushing (someone else pushed), so this push is %w from it; its objects are there, but the ref was left alone; pull and try again: %w", r.Name, ErrNotFastForward, err)
			}
			return results, stats, fmt.Errorf("push to %s: %w", remote.URL(), err)
		}
	}
	return results, stats, nil
}

// isAncestor reports whether snapshot anc is desc or one of its
// ancestors in local, and if not, why, in words.
func isAncestor(ctx context.Context, local objects.Store, anc, desc objects.ID) (bool, string, error) {
	ok, err := local.Has(ctx, anc)
	if err != nil {
		return false, "", err
	}
	if !ok {
		return false, "which this scrapbook does not have", nil
	}
	seen := objects.Seen{}
	todo := []objects.ID{desc}
	for len(todo) > 0 {
		id := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if id == anc {
			return true, "", nil
		}
		if !seen.Add(id) {
			continue
		}
		sn, err := objects.LoadSnapshot(ctx, local, id)
		if err != nil {
			return false, "", err
		}
		todo = append(todo, sn.Parents...)
	}
	return false, "which is not an ancestor of " + desc.Short(), nil
}

// snode is an object the remote lacks.
type snode struct {
	ref      objects.Ref
	stored   []byte       // loaded while finding, for all but chunks
	children []objects.ID // references, present on the remote or not
	height   int          // 0 for objects without missing children
}

// Send copies the snapshots roots, and whatever they reach that remote
// lacks, from local to remote, without touching refs. It walks from the
// roots one level at a time, asking the remote about a whole level in
// batches and descending only into what it lacks. Then it sends the
// missing objects sorted by height (chunks first, snapshots last), in
// batches of several megabytes, several at once; a batch waits until the
// batches holding the objects it references are stored, so the remote
// always holds whole subtrees.
func Send(ctx context.Context, local objects.Store, remote Remote, roots []objects.ID, opts Options) (*Stats, error) {
	start := time.Now()
	before := remote.Traffic()
	var stats Stats
	m := startMeter("finding", func() int64 { return remote.Traffic().Sent - before.Sent }, opts.Progress)
	missing, err := find(ctx, local, remote, roots, opts.concurrency(), &stats, m)
	if err == nil {
		m.setPhase("sending")
		m.objects.Store(0)
		m.total.Store(int64(len(missing)))
		err = send(ctx, local, remote, missing, opts.concurrency(), &stats, m)
	}
	m.finish()
	after := remote.Traffic()
	stats.BytesSent = after.Sent - before.Sent
	stats.BytesReceived = after.Received - before.Received
	stats.Duration = time.Since(start)
	if err != nil {
		return &stats, fmt.Errorf("push to %s: %w", remote.URL(), err)
	}
	return &stats, nil
}

// find returns the objects below roots that remote lacks, sorted by
// height.
func find(ctx context.Context, local objects.Store, remote Remote, roots []objects.ID, concurrency int, stats *Stats, m *meter) ([]*snode, error) {
	seen := objects.Seen{}
	var level []objects.Ref
	for _, id := range roots {
		if seen.Add(id) {
			level = append(level, objects.Ref{ID: id, Kind: objects.KindSnapshot})
		}
	}
	nodes := map[objects.ID]*snode{}
	var missing []*snode
	for len(level) > 0 {
		has, err := hasMany(ctx, remote, level, concurrency)
		if err != nil {
			return nil, err
		}
		var next []objects.Ref
		for i, r := range level {
			m.objects.Add(1)
			if has[i] {
				stats.Skipped++
				stats.SkippedBytes += r.Length
				continue
			}
			n := &snode{ref: r}
			nodes[r.ID] = n
			missing = append(missing, n)
			if r.Kind == objects.KindChunk {
				continue
			}
			stored, err := local.Get(ctx, r.ID)
			if err != nil {
				return nil, err
			}
			enc, err := objects.Unseal(r.ID, stored)
			if err != nil {
				return nil, fmt.Errorf("%w (%s)", err, objects.Where(local, r.ID))
			}
			k, refs, err := objects.Refs(enc)
			if err == nil && k != r.Kind {
				err = fmt.Errorf("is a %s, not a %s", k, r.Kind)
			}
			if err != nil {
				return nil, fmt.Errorf("object %s: %w: %v (%s)", r.ID, objects.ErrCorrupt, err, objects.Where(local, r.ID))
			}
			n.stored = stored
			for _, c := range refs {
				n.children = append(n.children, c.ID)
				if seen.Add(c.ID) {
					next = append(next, c)
				}
			}
		}
		level = next
	}
	// Height: the longest chain of missing objects below. Visiting in
	// reverse discovery order handles most children before parents; the
	// recursion covers the rest.
	var height func(n *snode) int
	done := make(map[*snode]bool, len(missing))
	height = func(n *snode) int {
		if done[n] {
			return n.height
		}
		h := 0
		for _, c := range n.children {
			if cn := nodes[c]; cn != nil {
				h = max(h, height(cn)+1)
			}
		}
		n.height = h
		done[n] = true
		return h
	}
	for i := len(missing) - 1; i >= 0; i-- {
		height(missing[i])
	}
	sort.SliceStable(missing, func(i, j int) bool { return missing[i].height < missing[j].height })
	return missing, nil
}

// hasMany asks the remote about refs in batches, several at once.
func hasMany(ctx context.Context, remote Remote, level []objects.Ref, concurrency int) ([]bool, error) {
	has := make([]bool, len(level))
	g := newGroup(ctx, concurrency)
	for lo := 0; lo < len(level); lo += hasBatch {
		hi := min(lo+hasBatch, len(level))
		g.run(func(ctx context.Context) error {
			ids := make([]objects.ID, hi-lo)
			for i := range ids {
				ids[i] = level[lo+i].ID
			}
			part, err := remote.Has(ctx, ids)
			if err != nil {
				return err
			}
			if len(part) != len(ids) {
				return fmt.Errorf("%w: asked about %d objects, got %d answers", ErrProtocol, len(ids), len(part))
			}
			copy(has[lo:hi], part)
			return nil
		})
	}
	if err := g.wait(); err != nil {
		return nil, err
	}
	return has, ctx.Err()
}

// sendBatch is a run of objects sent in one Put, and the earlier batches
// that must be stored first.
type sendBatch struct {
	objs []Object
	deps []chan struct{}
	done chan struct{}
}

// batchSizer is a Remote that wants batches of its own size: a bucket
// stores each batch as a pack, and fewer, larger packs cost fewer
// requests to read.
type batchSizer interface {
	sendBatchBytes() int
}

// send puts missing (sorted by height) on the remote: one goroutine
// assembles batches in order, the others put them, each batch after the
// batches holding its objects' children.
func send(ctx context.Context, local objects.Store, remote Remote, missing []*snode, concurrency int, stats *Stats, m *meter) error {
	batchBytes := sendBatchBytes
	if bs, ok := remote.(batchSizer); ok {
		batchBytes = bs.sendBatchBytes()
	}
	batches := make(chan *sendBatch, concurrency)
	g := newGroup(ctx, concurrency+1)
	g.run(func(ctx context.Context) error {
		defer close(batches)
		return assembleBatches(ctx, local, missing, batchBytes, batches)
	})
	var mu sync.Mutex
	for i := 0; i < concurrency; i++ {
		g.run(func(ctx context.Context) error { return putBatches(ctx, remote, batches, &mu, stats, m) })
	}
	if err := g.wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// assembleBatches cuts missing into batches of about batchBytes, in
// order, reading the stored forms as they are needed, and sends them to
// batches.
func assembleBatches(ctx context.Context, local objects.Store, missing []*snode, batchBytes int, batches chan<- *sendBatch) error {
	batchOf := make(map[objects.ID]*sendBatch, len(missing))
	var b *sendBatch
	size := 0
	flush := func() error {
		if b == nil {
			return nil
		}
		select {
		case batches <- b:
		case <-ctx.Done():
			return ctx.Err()
		}
		b, size = nil, 0
		return nil
	}
	for _, n := range missing {
		stored := n.stored
		if stored == nil {
			var err error
			if stored, err = readStored(ctx, local, n.ref.ID); err != nil {
				return err
			}
		}
		if b != nil && (size+len(stored) > batchBytes || len(b.objs) == sendBatchObject) {
			if err := flush(); err != nil {
				return err
			}
		}
		if b == nil {
			b = &sendBatch{done: make(chan struct{})}
		}
		for _, c := range n.children {
			if cb := batchOf[c]; cb != nil && cb != b && !containsChan(b.deps, cb.done) {
				b.deps = append(b.deps, cb.done)
			}
		}
		b.objs = append(b.objs, Object{ID: n.ref.ID, Stored: stored})
		batchOf[n.ref.ID] = b
		size += len(stored)
		n.stored = nil
	}
	return flush()
}

// putBatches puts the batches on the remote, each once the batches it
// depends on are there, and counts them in stats (under mu) and m.
func putBatches(ctx context.Context, remote Remote, batches <-chan *sendBatch, mu *sync.Mutex, stats *Stats, m *meter) error {
	for b := range batches {
		for _, d := range b.deps {
			select {
			case <-d:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := remote.Put(ctx, b.objs); err != nil {
			return err
		}
		close(b.done)
		mu.Lock()
		for _, o := range b.objs {
			stats.Objects++
			stats.ObjectBytes += int64(len(o.Stored))
		}
		mu.Unlock()
		m.objects.Add(int64(len(b.objs)))
	}
	return nil
}

func containsChan(cs []chan struct{}, c chan struct{}) bool {
	for _, x := range cs {
		if x == c {
			return true
		}
	}
	return false
}
