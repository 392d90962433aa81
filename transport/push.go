package transport

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
	// Every snapshot the remote names is on it, whole.
	opts.Haves = slices.Clip(opts.Haves)
	for _, r := range list.Refs {
		opts.Haves = append(opts.Haves, r.ID)
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
// roots one level at a time, descending only into what the remote
// lacks, side by side with the nearest ancestors of each root that the
// remote holds (a snapshot in opts.Haves, or one the remote says it
// has): what such a base holds where the new snapshot holds the same is
// there without asking, and what stands where the base holds something
// else is new, so the questions follow the change, not the size of the
// snapshot (docs/transport.md, "Negotiation"). The remote is asked about
// the rest, a level at a time in batches. Then Send sends the missing
// objects sorted by height (chunks first, snapshots last), in batches of
// several megabytes, several at once; a batch waits until the batches
// holding the objects it references are stored, so the remote always
// holds whole subtrees. If the remote refuses a batch because it lacks
// an object a have vouched for (it lost the snapshot since), Send
// negotiates again without haves and sends the rest.
func Send(ctx context.Context, local objects.Store, remote Remote, roots []objects.ID, opts Options) (*Stats, error) {
	start := time.Now()
	before := remote.Traffic()
	var stats Stats
	m := startMeter("finding", func() int64 { return remote.Traffic().Sent - before.Sent }, opts.Progress)
	err := sendOnce(ctx, local, remote, roots, opts.Haves, opts.concurrency(), &stats, m)
	if errors.Is(err, ErrMissingReference) && len(opts.Haves) > 0 && ctx.Err() == nil {
		m.setPhase("finding")
		stats.Skipped, stats.SkippedBytes = 0, 0
		err = sendOnce(ctx, local, remote, roots, nil, opts.concurrency(), &stats, m)
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

// sendOnce finds what the remote lacks, trusting haves, and sends it.
func sendOnce(ctx context.Context, local objects.Store, remote Remote, roots, haves []objects.ID, concurrency int, stats *Stats, m *meter) error {
	f := &finder{
		local: local, remote: remote, concurrency: concurrency, stats: stats, m: m,
		seen: objects.Seen{}, known: objects.Seen{}, onRemote: map[objects.ID]bool{},
		nodes: map[objects.ID]*snode{},
	}
	missing, err := f.find(ctx, roots, haves)
	if err != nil {
		return err
	}
	m.setPhase("sending")
	m.objects.Store(0)
	m.total.Store(int64(len(missing)))
	return send(ctx, local, remote, missing, concurrency, stats, m)
}

// A finder finds the objects below the roots of a push that the remote
// lacks.
type finder struct {
	local       objects.Store
	remote      Remote
	concurrency int
	stats       *Stats
	m           *meter

	seen     objects.Seen          // reached by the walk
	known    objects.Seen          // on the remote, as the haves say
	onRemote map[objects.ID]bool   // snapshots looked at by bases
	nodes    map[objects.ID]*snode // missing, by ID
	missing  []*snode
}

// walkItem is an object the walk reached, with its counterpart in the
// bases, if any.
type walkItem struct {
	ref objects.Ref
	cp  *counterpart
	// placed is set for an object of a RAM image that stands where the
	// base's holds something else: the remote lacks it, as far as the
	// bases tell (see counterpart.aligned).
	placed bool
}

// find returns the objects below roots that the remote lacks, sorted by
// height.
func (f *finder) find(ctx context.Context, roots, haves []objects.ID) ([]*snode, error) {
	haveSet := objects.Seen{}
	for _, h := range haves {
		haveSet.Add(h)
		f.known.Add(h)
	}
	var level []walkItem
	for _, id := range roots {
		if !f.seen.Add(id) {
			continue
		}
		cp, err := f.bases(ctx, id, haveSet)
		if err != nil {
			return nil, err
		}
		level = append(level, walkItem{ref: objects.Ref{ID: id, Kind: objects.KindSnapshot}, cp: cp})
	}
	for len(level) > 0 {
		var err error
		if level, err = f.step(ctx, level); err != nil {
			return nil, err
		}
	}
	f.sortByHeight()
	return f.missing, nil
}

// step asks the remote about one level of the walk and returns the next:
// the references of what it lacks, less those seen before and those the
// bases hold.
func (f *finder) step(ctx context.Context, level []walkItem) ([]walkItem, error) {
	has, err := f.ask(ctx, level)
	if err != nil {
		return nil, err
	}
	var next []walkItem
	for i, it := range level {
		if has[i] {
			f.skip(it.ref)
			continue
		}
		f.m.objects.Add(1)
		enc, refs, err := f.lacks(ctx, it.ref)
		if err != nil {
			return nil, err
		}
		cps, err := it.cp.match(ctx, f.local, it.ref.Kind, enc, refs, f.known)
		if err != nil {
			return nil, fmt.Errorf("compare %s with what the remote has: %w", it.ref.ID, err)
		}
		for j, c := range refs {
			if !f.seen.Add(c.ID) {
				continue
			}
			if _, ok := f.known[c.ID]; ok {
				f.skip(c)
				continue
			}
			next = append(next, walkItem{ref: c, cp: cps[j], placed: it.cp.aligned() || cps[j].aligned()})
		}
	}
	return next, nil
}

// freeHas is a Remote that answers Has without a word on the wire: a
// directory, or a bucket, from the pack indexes it has read.
type freeHas interface {
	hasIsFree()
}

// ask asks the remote whether it has the objects of level, except the
// snapshots bases already looked at. Those placed where a base's RAM
// image holds another page are new (git asks about nothing either), so
// a remote that answers over the wire is not asked about them: a
// question costs 32 bytes, a twentieth of a compressed page, and only a
// page that moved from elsewhere on the remote is sent again that way
// (1 in 317 new pages of an idle commit).
func (f *finder) ask(ctx context.Context, level []walkItem) ([]bool, error) {
	_, free := f.remote.(freeHas)
	has := make([]bool, len(level))
	var ids []objects.ID
	var at []int
	for i, it := range level {
		if on, ok := f.onRemote[it.ref.ID]; ok {
			has[i] = on
		} else if free || !it.placed {
			ids = append(ids, it.ref.ID)
			at = append(at, i)
		}
	}
	answers, err := hasMany(ctx, f.remote, ids, f.concurrency)
	if err != nil {
		return nil, err
	}
	for j, i := range at {
		has[i] = answers[j]
	}
	return has, nil
}

// skip counts an object found on the remote.
func (f *finder) skip(r objects.Ref) {
	f.m.objects.Add(1)
	f.stats.Skipped++
	f.stats.SkippedBytes += r.Length
}

// lacks records that the remote lacks r and returns r's canonical
// encoding and references, loaded from local (chunks reference nothing
// and are read when sent).
func (f *finder) lacks(ctx context.Context, r objects.Ref) ([]byte, []objects.Ref, error) {
	n := &snode{ref: r}
	f.nodes[r.ID] = n
	f.missing = append(f.missing, n)
	if r.Kind == objects.KindChunk {
		return nil, nil, nil
	}
	stored, err := f.local.Get(ctx, r.ID)
	if err != nil {
		return nil, nil, err
	}
	enc, err := objects.Unseal(r.ID, stored)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (%s)", err, objects.Where(f.local, r.ID))
	}
	k, refs, err := objects.Refs(enc)
	if err == nil && k != r.Kind {
		err = fmt.Errorf("is a %s, not a %s", k, r.Kind)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("object %s: %w: %v (%s)", r.ID, objects.ErrCorrupt, err, objects.Where(f.local, r.ID))
	}
	n.stored = stored
	for _, c := range refs {
		n.children = append(n.children, c.ID)
	}
	return enc, refs, nil
}

// sortByHeight sorts the missing objects by height: the longest chain of
// missing objects below. Visiting in reverse discovery order handles
// most children before parents; the recursion covers the rest.
func (f *finder) sortByHeight() {
	var height func(n *snode) int
	done := make(map[*snode]bool, len(f.missing))
	height = func(n *snode) int {
		if done[n] {
			return n.height
		}
		h := 0
		for _, c := range n.children {
			if cn := f.nodes[c]; cn != nil {
				h = max(h, height(cn)+1)
			}
		}
		n.height = h
		done[n] = true
		return h
	}
	for i := len(f.missing) - 1; i >= 0; i-- {
		height(f.missing[i])
	}
	sort.SliceStable(f.missing, func(i, j int) bool { return f.missing[i].height < f.missing[j].height })
}

// hasMany asks the remote about ids in batches, several at once.
func hasMany(ctx context.Context, remote Remote, ids []objects.ID, concurrency int) ([]bool, error) {
	has := make([]bool, len(ids))
	g := newGroup(ctx, concurrency)
	for lo := 0; lo < len(ids); lo += hasBatch {
		hi := min(lo+hasBatch, len(ids))
		g.run(func(ctx context.Context) error {
			part, err := remote.Has(ctx, ids[lo:hi])
			if err != nil {
				return err
			}
			if len(part) != hi-lo {
				return fmt.Errorf("%w: asked about %d objects, got %d answers", ErrProtocol, hi-lo, len(part))
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
		err := remote.Put(ctx, b.objs)
		if err != nil && !errors.Is(err, ErrMissingReference) {
			return err
		}
		// A batch refused for a missing reference traveled all the
		// same, and Send sends what it lacks again.
		mu.Lock()
		for _, o := range b.objs {
			stats.Objects++
			stats.ObjectBytes += int64(len(o.Stored))
		}
		mu.Unlock()
		m.objects.Add(int64(len(b.objs)))
		if err != nil {
			return err
		}
		close(b.done)
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
