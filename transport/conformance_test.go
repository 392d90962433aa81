package transport_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	sbuml "github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
	"github.com/sbuml/sbuml/transport"
)

const testToken = "conformance-secret"

// An implementation is one way to reach a remote. Every remote is
// backed by a directory: a scrapbook, or a published directory for the
// read-only static kind.
type implementation struct {
	name      string
	published bool // the backing directory is a published one
	readOnly  bool
	s3        bool // the backing is a bucket of the shared S3 server: its URL
	// client returns a Remote reaching the backing directory dir.
	client func(t *testing.T, dir string) transport.Remote
}

var implementations = []implementation{
	{
		name: "dir",
		client: func(t *testing.T, dir string) transport.Remote {
			return openDir(t, dir)
		},
	},
	{
		name:      "published-dir",
		published: true,
		client: func(t *testing.T, dir string) transport.Remote {
			return openDir(t, dir)
		},
	},
	{
		name: "smart-http",
		client: func(t *testing.T, dir string) transport.Remote {
			srv := httptest.NewServer(transport.NewServer(openDir(t, dir), transport.ServerOptions{Token: testToken, Log: t.Logf}))
			t.Cleanup(srv.Close)
			r := transport.NewSmart(srv.URL, testToken, srv.Client())
			t.Cleanup(func() { r.Close() })
			return r
		},
	},
	{
		name: "s3",
		s3:   true,
		client: func(t *testing.T, url string) transport.Remote {
			return openS3(t, url)
		},
	},
	{
		name:      "static-http",
		published: true,
		readOnly:  true,
		client: func(t *testing.T, dir string) transport.Remote {
			srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
			t.Cleanup(srv.Close)
			r := transport.NewStatic(srv.URL, srv.Client())
			t.Cleanup(func() { r.Close() })
			return r
		},
	},
}

func openDir(t *testing.T, dir string) *transport.Dir {
	t.Helper()
	d, err := transport.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// newBacking makes an empty backing directory for impl, or an empty
// scrapbook in a new bucket of the shared S3 server, whose URL it returns.
func newBacking(t *testing.T, impl implementation) string {
	t.Helper()
	if impl.s3 {
		return newS3Backing(t)
	}
	dir := t.TempDir()
	if impl.published {
		if _, err := transport.CreatePublished(dir); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	if _, err := sbuml.Init(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// seed pushes updates from src into the backing directory, by a Dir,
// or into the backing bucket.
func seed(t *testing.T, dir string, src objects.Store, updates ...transport.RefUpdate) {
	t.Helper()
	var d transport.Remote
	if transport.IsS3URL(dir) {
		d = openS3(t, dir)
	} else {
		d = openDir(t, dir)
	}
	if _, _, err := transport.Push(context.Background(), src, d, updates, transport.Options{}); err != nil {
		t.Fatalf("seed: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// backingStore returns the objects of a backing directory or bucket, as
// they are now.
func backingStore(t *testing.T, dir string) objects.Reader {
	t.Helper()
	if transport.IsS3URL(dir) {
		return openS3(t, dir).Store()
	}
	return openDir(t, dir).Store()
}

func newLocal(t *testing.T) *sbuml.Scrapbook {
	t.Helper()
	s, err := sbuml.Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestConformance runs the same checks against every kind of remote.
func TestConformance(t *testing.T) {
	src := newSource(t)
	for _, impl := range implementations {
		t.Run(impl.name, func(t *testing.T) {
			t.Run("ListRefs", func(t *testing.T) { testListRefs(t, impl, src) })
			t.Run("HasAndGet", func(t *testing.T) { testHasAndGet(t, impl, src) })
			t.Run("Fetch", func(t *testing.T) { testFetch(t, impl, src) })
			t.Run("FetchRefusesBadObject", func(t *testing.T) { testFetchBadObject(t, impl, src) })
			if impl.readOnly {
				t.Run("ReadOnly", func(t *testing.T) { testReadOnly(t, impl, src) })
				return
			}
			t.Run("Push", func(t *testing.T) { testPush(t, impl, src) })
			t.Run("PushRefusesDamagedLocal", func(t *testing.T) { testPushDamagedLocal(t, impl) })
			t.Run("PushChildSendsOnlyNew", func(t *testing.T) { testPushChild(t, impl, src) })
			t.Run("NotFastForward", func(t *testing.T) { testNotFastForward(t, impl, src) })
			t.Run("CompareAndSwap", func(t *testing.T) { testCompareAndSwap(t, impl, src) })
			t.Run("PushLosesRace", func(t *testing.T) { testPushLosesRace(t, impl, src) })
			t.Run("PutRefusals", func(t *testing.T) { testPutRefusals(t, impl, src) })
			t.Run("RefNameRefusals", func(t *testing.T) { testRefNames(t, impl, src) })
		})
	}
}

func testListRefs(t *testing.T, impl implementation, src *source) {
	ctx := context.Background()
	dir := newBacking(t, impl)
	r := impl.client(t, dir)
	l, err := r.ListRefs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Refs) != 0 {
		t.Fatalf("empty remote lists refs %v", l.Refs)
	}
	seed(t, dir, src.book.Objects,
		transport.RefUpdate{Name: "refs/heads/main", New: src.second},
		transport.RefUpdate{Name: "refs/tags/v1", New: src.first})
	l, err = r.ListRefs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []transport.Ref{{Name: "refs/heads/main", ID: src.second}, {Name: "refs/tags/v1", ID: src.first}}
	if len(l.Refs) != len(want) || l.Refs[0] != want[0] || l.Refs[1] != want[1] {
		t.Errorf("refs = %v, want %v", l.Refs, want)
	}
	if !impl.published && l.Head != "refs/heads/main" {
		t.Errorf("HEAD = %q, want refs/heads/main", l.Head)
	}
}

func testHasAndGet(t *testing.T, impl implementation, src *source) {
	ctx := context.Background()
	dir := newBacking(t, impl)
	seed(t, dir, src.book.Objects, transport.RefUpdate{Name: "refs/heads/main", New: src.first})
	r := impl.client(t, dir)
	objs := reachable(t, src.book.Objects, src.first)
	absent := src.second
	var ids []objects.ID
	for id := range objs {
		ids = append(ids, id)
	}
	ids = append(ids, absent)
	hasIDs, err := r.Has(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if want := id != absent; hasIDs[i] != want {
			t.Errorf("Has(%s) = %v, want %v", id.Short(), hasIDs[i], want)
		}
	}
	if h, err := r.Has(ctx, nil); err != nil || len(h) != 0 {
		t.Errorf("Has(nil) = %v, %v", h, err)
	}

	got := map[objects.ID]bool{}
	err = r.Get(ctx, ids[:len(ids)-1], func(id objects.ID, stored []byte) error {
		if got[id] {
			t.Errorf("object %s handed over twice", id.Short())
		}
		got[id] = true
		if _, err := objects.Unseal(id, stored); err != nil {
			t.Error(err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(objs) {
		t.Errorf("Get returned %d objects, want %d", len(got), len(objs))
	}
	err = r.Get(ctx, []objects.ID{absent}, func(objects.ID, []byte) error { return nil })
	mustIs(t, err, objects.ErrNotFound)
}

func testFetch(t *testing.T, impl implementation, src *source) {
	ctx := context.Background()
	dir := newBacking(t, impl)
	seed(t, dir, src.book.Objects, transport.RefUpdate{Name: "refs/heads/main", New: src.second})
	r := impl.client(t, dir)
	local := newLocal(t)

	// First the parent alone, then the child: the second fetch gets only
	// what the child added.
	st1, err := transport.Fetch(ctx, local.Objects, r, []objects.ID{src.first}, transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	first := reachable(t, src.book.Objects, src.first)
	n, size := sum(first, nil)
	if st1.Objects != int64(n) || st1.ObjectBytes != size {
		t.Errorf("first fetch received %d objects, %d bytes; want %d, %d", st1.Objects, st1.ObjectBytes, n, size)
	}
	if st1.BytesReceived < size {
		t.Errorf("wire bytes received %d < object bytes %d", st1.BytesReceived, size)
	}
	st2, err := transport.Fetch(ctx, local.Objects, r, []objects.ID{src.second}, transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	second := reachable(t, src.book.Objects, src.second)
	n, size = sum(second, first)
	if st2.Objects != int64(n) || st2.ObjectBytes != size {
		t.Errorf("second fetch received %d objects, %d bytes; want only the %d new ones, %d bytes", st2.Objects, st2.ObjectBytes, n, size)
	}
	if st2.SkippedBytes == 0 || st2.Skipped == 0 {
		t.Errorf("second fetch skipped nothing: %+v", st2)
	}
	st3, err := transport.Fetch(ctx, local.Objects, r, []objects.ID{src.second}, transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if st3.Objects != 0 || st3.BytesReceived != 0 {
		t.Errorf("fetching a present snapshot received %d objects, %d bytes", st3.Objects, st3.BytesReceived)
	}
	if got := reachable(t, local.Objects, src.second); len(got) != len(second) {
		t.Errorf("local has %d objects of the snapshot, want %d", len(got), len(second))
	}
	checkClosed(t, local.Objects)
}

// badRemote serves one object with wrong bytes.
type badRemote struct {
	transport.Remote
	bad objects.ID
}

func (b badRemote) Get(ctx context.Context, ids []objects.ID, fn func(objects.ID, []byte) error) error {
	return b.Remote.Get(ctx, ids, func(id objects.ID, stored []byte) error {
		if id == b.bad {
			stored = append([]byte(nil), stored...)
			stored[len(stored)/2] ^= 0x40
		}
		return fn(id, stored)
	})
}

// testFetchBadObject serves a chunk whose bytes do not match its ID.
func testFetchBadObject(t *testing.T, impl implementation, src *source) {
	ctx := context.Background()
	dir := newBacking(t, impl)
	seed(t, dir, src.book.Objects, transport.RefUpdate{Name: "refs/heads/main", New: src.first})
	var victim objects.ID
	for id, size := range reachable(t, src.book.Objects, src.first) {
		if size > 10000 {
			victim = id
			break
		}
	}
	var r transport.Remote
	switch impl.name {
	case "smart-http":
		// The server itself serves the bad bytes.
		srv := httptest.NewServer(transport.NewServer(badRemote{openDir(t, dir), victim}, transport.ServerOptions{}))
		defer srv.Close()
		r = transport.NewSmart(srv.URL, "", srv.Client())
	case "static-http", "published-dir":
		// The object damaged in its pack, its one copy.
		corruptPacked(t, dir, victim)
		r = impl.client(t, dir)
	default:
		r = badRemote{impl.client(t, dir), victim}
	}
	local := newLocal(t)
	_, err := transport.Fetch(ctx, local.Objects, r, []objects.ID{src.first}, transport.Options{})
	mustIs(t, err, objects.ErrCorrupt)
	if !strings.Contains(err.Error(), victim.String()) {
		t.Errorf("error does not name the bad object %s: %v", victim.Short(), err)
	}
	t.Logf("refused: %v", err)
	if has(t, local.Objects, victim) || has(t, local.Objects, src.first) {
		t.Error("the bad object or the snapshot above it was stored")
	}
	checkClosed(t, local.Objects)
}

func testReadOnly(t *testing.T, impl implementation, src *source) {
	ctx := context.Background()
	dir := newBacking(t, impl)
	r := impl.client(t, dir)
	_, _, err := transport.Push(ctx, src.book.Objects, r, []transport.RefUpdate{{Name: "refs/heads/main", New: src.first}}, transport.Options{})
	mustIs(t, err, transport.ErrReadOnly)
	err = r.UpdateRef(ctx, "refs/heads/main", objects.Zero, src.first)
	mustIs(t, err, transport.ErrReadOnly)
}

func testPush(t *testing.T, impl implementation, src *source) {
	ctx := context.Background()
	dir := newBacking(t, impl)
	r := impl.client(t, dir)
	res, st, err := transport.Push(ctx, src.book.Objects, r, []transport.RefUpdate{{Name: "refs/heads/main", New: src.second}}, transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Status != "created" {
		t.Errorf("status %q, want created", res[0].Status)
	}
	all := reachable(t, src.book.Objects, src.second)
	n, size := sum(all, nil)
	if st.Objects != int64(n) || st.ObjectBytes != size {
		t.Errorf("sent %d objects, %d bytes; want %d, %d", st.Objects, st.ObjectBytes, n, size)
	}
	d := backingStore(t, dir)
	if got := reachable(t, d, src.second); len(got) != n {
		t.Errorf("remote holds %d objects of the snapshot, want %d", len(got), n)
	}
	checkClosed(t, d)
	l, err := r.ListRefs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if l.Get("refs/heads/main") != src.second {
		t.Errorf("remote main = %s, want %s", l.Get("refs/heads/main"), src.second)
	}
	// Again: nothing to do.
	res, st, err = transport.Push(ctx, src.book.Objects, r, []transport.RefUpdate{{Name: "refs/heads/main", New: src.second}}, transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Status != "up to date" || st.Objects != 0 {
		t.Errorf("second push: %q, %d objects sent", res[0].Status, st.Objects)
	}
}

// testPushDamagedLocal pushes from a scrapbook one of whose chunks, stored
// uncompressed in a pack, is damaged: the push fails naming the object
// and the local pack that holds it, not as a refusal by the remote, and
// the remote's branch is not created.
func testPushDamagedLocal(t *testing.T, impl implementation) {
	ctx := context.Background()
	src := newSource(t)
	var victim objects.ID
	for id, size := range reachable(t, src.book.Objects, src.second) {
		stored, err := src.book.Objects.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if size > 10000 && !objects.IsCompressed(stored) {
			victim = id
			break
		}
	}
	packDir := filepath.Join(src.book.Dir, "objects", "pack")
	if corruptInPacks(t, packDir, victim) == 0 {
		t.Fatalf("object %s is in no pack", victim.Short())
	}
	fresh, err := sbuml.Open(src.book.Dir) // no cached reads of the intact bytes
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	dir := newBacking(t, impl)
	r := impl.client(t, dir)
	_, _, err = transport.Push(ctx, fresh.Objects, r, []transport.RefUpdate{{Name: "refs/heads/main", New: src.second}}, transport.Options{})
	mustIs(t, err, objects.ErrCorrupt)
	if !strings.Contains(err.Error(), victim.String()) || !strings.Contains(err.Error(), packDir) {
		t.Errorf("error does not name the object %s and its local pack: %v", victim.Short(), err)
	}
	t.Logf("refused: %v", err)
	l, err := r.ListRefs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Get("refs/heads/main").IsZero() {
		t.Error("the remote branch was created")
	}
	checkClosed(t, backingStore(t, dir))
}

// testPushChild checks the wire cost of pushing a child whose parent the
// remote has: at most 1.1 times the new objects plus 64 KiB.
// askCounter is a Remote that counts the IDs it is asked about.
type askCounter struct {
	transport.Remote
	mu    sync.Mutex
	asked map[objects.ID]int
}

func (a *askCounter) Has(ctx context.Context, ids []objects.ID) ([]bool, error) {
	a.mu.Lock()
	for _, id := range ids {
		a.asked[id]++
	}
	a.mu.Unlock()
	return a.Remote.Has(ctx, ids)
}

func testPushChild(t *testing.T, impl implementation, src *source) {
	ctx := context.Background()
	dir := newBacking(t, impl)
	r := impl.client(t, dir)
	if _, _, err := transport.Push(ctx, src.book.Objects, r, []transport.RefUpdate{{Name: "refs/heads/main", New: src.first}}, transport.Options{}); err != nil {
		t.Fatal(err)
	}
	counter := &askCounter{Remote: r, asked: map[objects.ID]int{}}
	res, st, err := transport.Push(ctx, src.book.Objects, counter, []transport.RefUpdate{{Name: "refs/heads/main", New: src.second}}, transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Status != "fast-forward" {
		t.Errorf("status %q, want fast-forward", res[0].Status)
	}
	n, newBytes := sum(reachable(t, src.book.Objects, src.second), reachable(t, src.book.Objects, src.first))
	if st.Objects != int64(n) || st.ObjectBytes != newBytes {
		t.Errorf("sent %d objects, %d bytes; want exactly the %d new ones, %d bytes", st.Objects, st.ObjectBytes, n, newBytes)
	}
	limit := int64(1.1*float64(newBytes)) + 64<<10
	if st.BytesSent > limit {
		t.Errorf("sent %d bytes on the wire for %d bytes of new objects; limit %d", st.BytesSent, newBytes, limit)
	}
	// The walk stops at objects the remote has: it asks about the new
	// objects and what they reference directly, never about what lies
	// below an object the remote has (the sub directory, unchanged
	// files' chunks), and about nothing twice.
	old := reachable(t, src.book.Objects, src.first)
	frontier := map[objects.ID]bool{src.second: true}
	for id := range reachable(t, src.book.Objects, src.second) {
		if _, present := old[id]; present {
			continue
		}
		frontier[id] = true
		enc, err := objects.Load(ctx, src.book.Objects, id)
		if err != nil {
			t.Fatal(err)
		}
		_, refs, err := objects.References(enc)
		if err != nil {
			t.Fatal(err)
		}
		for _, ref := range refs {
			frontier[ref] = true
		}
	}
	for id, times := range counter.asked {
		if !frontier[id] {
			t.Errorf("push asked the remote about %s, which lies below an object the remote has", id.Short())
		}
		if times > 1 {
			t.Errorf("push asked the remote about %s %d times", id.Short(), times)
		}
	}
	if len(counter.asked) >= len(reachable(t, src.book.Objects, src.second)) {
		t.Errorf("push asked about %d objects of the %d the snapshot reaches: the walk did not stop at objects the remote has", len(counter.asked), len(reachable(t, src.book.Objects, src.second)))
	}
	t.Logf("child push: %d new objects, %d bytes; %d bytes sent, %d received on the wire; %d logical bytes skipped",
		n, newBytes, st.BytesSent, st.BytesReceived, st.SkippedBytes)
}

func testNotFastForward(t *testing.T, impl implementation, src *source) {
	ctx := context.Background()
	dir := newBacking(t, impl)
	r := impl.client(t, dir)
	main := []transport.RefUpdate{{Name: "refs/heads/main", New: src.second}}
	if _, _, err := transport.Push(ctx, src.book.Objects, r, main, transport.Options{}); err != nil {
		t.Fatal(err)
	}
	// Moving main back to its parent is not a fast-forward.
	back := []transport.RefUpdate{{Name: "refs/heads/main", New: src.first}}
	_, _, err := transport.Push(ctx, src.book.Objects, r, back, transport.Options{})
	mustIs(t, err, transport.ErrNotFastForward)
	t.Logf("refused: %v", err)
	// A snapshot the pusher does not have is not an ancestor either.
	other := newSource(t)
	_, _, err = transport.Push(ctx, other.book.Objects, r, []transport.RefUpdate{{Name: "refs/heads/main", New: other.second}}, transport.Options{})
	mustIs(t, err, transport.ErrNotFastForward)
	if l, _ := r.ListRefs(ctx); l.Get("refs/heads/main") != src.second {
		t.Fatalf("a refused push moved the ref")
	}
	back[0].Force = true
	res, _, err := transport.Push(ctx, src.book.Objects, r, back, transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Status != "forced" {
		t.Errorf("status %q, want forced", res[0].Status)
	}
	if l, _ := r.ListRefs(ctx); l.Get("refs/heads/main") != src.first {
		t.Errorf("forced push did not move the ref")
	}
}

func testCompareAndSwap(t *testing.T, impl implementation, src *source) {
	ctx := context.Background()
	dir := newBacking(t, impl)
	r := impl.client(t, dir)
	seed(t, dir, src.book.Objects, transport.RefUpdate{Name: "refs/heads/main", New: src.second})
	// Someone else's update came first: the ref is not at old any more.
	err := r.UpdateRef(ctx, "refs/heads/main", src.first, src.first)
	mustIs(t, err, refs.ErrConflict)
	err = r.UpdateRef(ctx, "refs/heads/main", objects.Zero, src.first)
	mustIs(t, err, refs.ErrConflict)
	err = r.UpdateRef(ctx, "refs/heads/other", src.first, src.second)
	mustIs(t, err, refs.ErrConflict)
	if err := r.UpdateRef(ctx, "refs/heads/main", src.second, src.first); err != nil {
		t.Fatal(err)
	}
	if err := r.UpdateRef(ctx, "refs/heads/main", src.first, objects.Zero); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if l, _ := r.ListRefs(ctx); len(l.Refs) != 0 {
		t.Errorf("refs after delete: %v", l.Refs)
	}
	// A ref may only point at a snapshot the remote holds.
	tree := mustLoadSnapshot(t, src.book.Objects, src.first).Tree
	err = r.UpdateRef(ctx, "refs/heads/main", objects.Zero, tree)
	mustIs(t, err, transport.ErrNotSnapshot)
	other := newSource(t)
	err = r.UpdateRef(ctx, "refs/heads/main", objects.Zero, other.first)
	mustIs(t, err, objects.ErrNotFound)
}

// racer is a Remote on which another pusher moves each ref just before
// this one's update arrives.
type racer struct {
	transport.Remote
	ctx   context.Context
	other objects.ID // where the other pusher moves the ref
}

func (r *racer) UpdateRef(ctx context.Context, name string, old, new objects.ID) error {
	if err := r.Remote.UpdateRef(r.ctx, name, old, r.other); err != nil {
		return err
	}
	return r.Remote.UpdateRef(ctx, name, old, new)
}

// testPushLosesRace pushes while someone else moves the same ref: the
// push is refused with a message that says so, and the other pusher's
// snapshot stays.
func testPushLosesRace(t *testing.T, impl implementation, src *source) {
	ctx := context.Background()
	dir := newBacking(t, impl)
	seed(t, dir, src.book.Objects, transport.RefUpdate{Name: "refs/heads/main", New: src.first})
	// Main is at first; the other pusher moves it on between our reading
	// it and our compare-and-swap from first.
	r := &racer{Remote: impl.client(t, dir), ctx: ctx, other: src.second}
	_, _, err := transport.Push(ctx, src.book.Objects, r, []transport.RefUpdate{{Name: "refs/heads/main", New: src.second}}, transport.Options{})
	if err == nil {
		t.Fatal("a push that lost a race succeeded")
	}
	mustIs(t, err, refs.ErrConflict)
	if !strings.Contains(err.Error(), "moved on the remote while pushing") {
		t.Errorf("lost race: %v", err)
	}
	t.Logf("lost race: %v", err)
	if l, _ := r.ListRefs(ctx); l.Get("refs/heads/main") != src.second {
		t.Errorf("the other pusher's update was overwritten")
	}
}

func mustLoadSnapshot(t *testing.T, s objects.Store, id objects.ID) *objects.Snapshot {
	t.Helper()
	sn, err := objects.LoadSnapshot(context.Background(), s, id)
	if err != nil {
		t.Fatal(err)
	}
	return sn
}

// testPutRefusals sends objects a receiver must not store.
func testPutRefusals(t *testing.T, impl implementation, src *source) {
	ctx := context.Background()
	dir := newBacking(t, impl)
	r := impl.client(t, dir)
	sn := mustLoadSnapshot(t, src.book.Objects, src.first)
	stored, err := src.book.Objects.Get(ctx, src.first)
	if err != nil {
		t.Fatal(err)
	}
	// A snapshot before its tree breaks the closure invariant.
	err = r.Put(ctx, []transport.Object{{ID: src.first, Stored: stored}})
	mustIs(t, err, transport.ErrMissingReference)
	if !strings.Contains(err.Error(), sn.Tree.String()) {
		t.Errorf("error does not name the missing tree: %v", err)
	}
	// Bytes that do not match the ID.
	var chunk objects.ID
	for id, size := range reachable(t, src.book.Objects, src.first) {
		if size > 1000 {
			chunk = id
			break
		}
	}
	b, err := src.book.Objects.Get(ctx, chunk)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 1
	err = r.Put(ctx, []transport.Object{{ID: chunk, Stored: b}})
	mustIs(t, err, objects.ErrCorrupt)
	d := backingStore(t, dir)
	if has(t, d, src.first) || has(t, d, chunk) {
		t.Error("a refused object was stored")
	}
	checkClosed(t, d)
}

func testRefNames(t *testing.T, impl implementation, src *source) {
	ctx := context.Background()
	dir := newBacking(t, impl)
	r := impl.client(t, dir)
	seed(t, dir, src.book.Objects, transport.RefUpdate{Name: "refs/heads/main", New: src.first})
	for _, name := range []string{"refs/heads/a..b", "refs/heads/../../config", "HEAD", "main", "refs/heads/x.lock"} {
		err := r.UpdateRef(ctx, name, objects.Zero, src.first)
		if !errors.Is(err, refs.ErrInvalidName) {
			t.Errorf("UpdateRef(%q) = %v; want an invalid-name error", name, err)
		}
	}
	_, _, err := transport.Push(ctx, src.book.Objects, r, []transport.RefUpdate{{Name: "refs/heads/a..b", New: src.first}}, transport.Options{})
	mustIs(t, err, refs.ErrInvalidName)
	l, err := r.ListRefs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Refs) != 1 {
		t.Errorf("refs after refused updates: %v", l.Refs)
	}
}
