// Package storetest is the conformance suite of objects.Store: what
// every store promises, checked the same way on each of them (the loose
// store over every file system it runs on, the pack store), as restic
// runs one suite on every backend. A new store passes Run before anything
// else uses it; objects/store_test.go runs it on the stores sbuml has.
//
// Run also checks the optional abilities a store has (objects.Deleter,
// objects.LeafPutter, objects.PrefixFinder, objects.DeltaPutter,
// objects.Loader): a store that claims one must do what its interface
// says.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/sbuml/sbuml/objects"
)

// Opener makes the stores of one kind for the suite: open returns a new,
// empty store, and reopen opens the same store again, as another process
// would. Both are closed by the suite.
type Opener func(t *testing.T) (s objects.Store, reopen func() objects.Store)

// Run runs the suite on the stores open makes, each test on a new store.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		test func(t *testing.T, s objects.Store, reopen func() objects.Store)
	}{
		{"Empty", testEmpty},
		{"PutGet", testPutGet},
		{"PutTwice", testPutTwice},
		{"ConcurrentPutOneID", testConcurrentPutOneID},
		{"ConcurrentPutsAndGets", testConcurrentPutsAndGets},
		{"ListStops", testListStops},
		{"SyncReopen", testSyncReopen},
		{"Deleter", testDeleter},
		{"LeafPutter", testLeafPutter},
		{"PrefixFinder", testPrefixFinder},
		{"DeltaPutter", testDeltaPutter},
		{"Loader", testLoader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, reopen := open(t)
			t.Cleanup(func() { s.Close() })
			tt.test(t, s, reopen)
		})
	}
}

// An object is a sealed object, ready to Put.
type object struct {
	id     objects.ID
	stored []byte
}

func sealed(enc []byte) object { return object{objects.Sum(enc), objects.Seal(enc, nil)} }

// chunk returns a sealed chunk of n bytes: random if seed is odd (stored
// as it is), text otherwise (stored compressed).
func chunk(seed uint64, n int) object {
	rng := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		if seed%2 == 1 {
			b[i] = byte(rng.Uint32())
		} else {
			b[i] = "abcdefgh \n"[rng.IntN(10)]
		}
	}
	return sealed(objects.EncodeChunk(b))
}

// someObjects are objects of every size class a store sees.
func someObjects() []object {
	return []object{
		sealed(objects.EncodeChunk(nil)),
		sealed(objects.EncodeChunk([]byte("hello"))),
		chunk(2, 64<<10),
		chunk(3, 100<<10),
		sealed((&objects.Tree{}).Encode()),
	}
}

func put(t *testing.T, s objects.Store, objs ...object) {
	t.Helper()
	for _, o := range objs {
		if err := s.Put(context.Background(), o.id, o.stored); err != nil {
			t.Fatalf("Put %s: %v", o.id.Short(), err)
		}
	}
}

// requireObject fails unless s holds o whole.
func requireObject(t *testing.T, s objects.Reader, o object) {
	t.Helper()
	ctx := context.Background()
	if ok, err := s.Has(ctx, o.id); err != nil || !ok {
		t.Fatalf("Has %s = %v, %v; want true", o.id.Short(), ok, err)
	}
	got, err := s.Get(ctx, o.id)
	if err != nil {
		t.Fatalf("Get %s: %v", o.id.Short(), err)
	}
	if !bytes.Equal(got, o.stored) {
		t.Fatalf("Get %s gave %d bytes, want the %d stored", o.id.Short(), len(got), len(o.stored))
	}
}

// requireMissing fails unless s lacks id and says so as the interface
// says: Has false, Get an error wrapping ErrNotFound that names id.
func requireMissing(t *testing.T, s objects.Reader, id objects.ID) {
	t.Helper()
	ctx := context.Background()
	if ok, err := s.Has(ctx, id); err != nil || ok {
		t.Fatalf("Has of a missing %s = %v, %v", id.Short(), ok, err)
	}
	_, err := s.Get(ctx, id)
	if !errors.Is(err, objects.ErrNotFound) || !strings.Contains(err.Error(), id.String()) {
		t.Fatalf("Get of a missing %s: %v; want ErrNotFound naming it", id.Short(), err)
	}
}

// listAll returns what List reports, failing on an object listed twice.
func listAll(t *testing.T, s objects.Reader) map[objects.ID]int64 {
	t.Helper()
	got := map[objects.ID]int64{}
	err := s.List(context.Background(), func(id objects.ID, size int64) error {
		if _, dup := got[id]; dup {
			t.Errorf("List reported %s twice", id.Short())
		}
		got[id] = size
		return nil
	})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return got
}

// requireListed fails unless List reports exactly objs with their sizes.
func requireListed(t *testing.T, s objects.Reader, objs []object) {
	t.Helper()
	got := listAll(t, s)
	if len(got) != len(objs) {
		t.Errorf("List gave %d objects, want %d", len(got), len(objs))
	}
	for _, o := range objs {
		if size, ok := got[o.id]; !ok || size != int64(len(o.stored)) {
			t.Errorf("List: %s has size %d (listed %v), want %d", o.id.Short(), size, ok, len(o.stored))
		}
	}
}

func testEmpty(t *testing.T, s objects.Store, _ func() objects.Store) {
	requireListed(t, s, nil)
	requireMissing(t, s, chunk(1, 10).id)
	if err := s.Sync(context.Background()); err != nil {
		t.Fatalf("Sync of an empty store: %v", err)
	}
}

func testPutGet(t *testing.T, s objects.Store, _ func() objects.Store) {
	objs := someObjects()
	for _, o := range objs {
		requireMissing(t, s, o.id)
		put(t, s, o)
		requireObject(t, s, o)
	}
	requireListed(t, s, objs)
	for _, o := range objs {
		enc, err := objects.Load(context.Background(), s, o.id)
		if err != nil {
			t.Fatalf("Load %s: %v", o.id.Short(), err)
		}
		if objects.Sum(enc) != o.id {
			t.Fatalf("Load %s gave another object", o.id.Short())
		}
	}
}

func testPutTwice(t *testing.T, s objects.Store, _ func() objects.Store) {
	o := chunk(4, 5000)
	put(t, s, o, o)
	requireObject(t, s, o)
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	put(t, s, o)
	requireObject(t, s, o)
	requireListed(t, s, []object{o})
}

// testConcurrentPutOneID has many goroutines store the same object at
// once: all succeed, and the object is whole and listed once.
func testConcurrentPutOneID(t *testing.T, s objects.Store, _ func() objects.Store) {
	o := chunk(5, 256<<10)
	const writers = 16
	errs := make([]error, writers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = s.Put(context.Background(), o.id, o.stored)
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("writer %d: %v", i, err)
		}
	}
	requireObject(t, s, o)
	requireListed(t, s, []object{o})
}

// testConcurrentPutsAndGets stores distinct objects from many goroutines
// while others read them back: a reader sees a whole object or none.
func testConcurrentPutsAndGets(t *testing.T, s objects.Store, _ func() objects.Store) {
	ctx := context.Background()
	var objs []object
	for i := range 64 {
		objs = append(objs, chunk(uint64(100+i), 1000+i*37))
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := w; i < len(objs); i += 8 {
				if err := s.Put(ctx, objs[i].id, objs[i].stored); err != nil {
					t.Error(err)
				}
			}
		}()
		go func() {
			defer wg.Done()
			for i := w; i < len(objs); i += 8 {
				got, err := s.Get(ctx, objs[i].id)
				if err != nil && !errors.Is(err, objects.ErrNotFound) {
					t.Error(err)
				}
				if err == nil && !bytes.Equal(got, objs[i].stored) {
					t.Errorf("read a partial object %s: %d of %d bytes", objs[i].id.Short(), len(got), len(objs[i].stored))
				}
			}
		}()
	}
	wg.Wait()
	requireListed(t, s, objs)
}

// testListStops checks that List stops at the first error of its
// callback and returns it, and stops on a cancelled context, before and
// after the objects are synced.
func testListStops(t *testing.T, s objects.Store, _ func() objects.Store) {
	ctx := context.Background()
	for i := range 5 {
		put(t, s, chunk(uint64(200+i), 100))
	}
	for _, when := range []string{"before Sync", "after Sync"} {
		stop := errors.New("stop")
		calls := 0
		err := s.List(ctx, func(objects.ID, int64) error { calls++; return stop })
		if !errors.Is(err, stop) || calls != 1 {
			t.Errorf("%s: List with a failing callback: %v after %d calls, want the callback's error after 1", when, err, calls)
		}
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		err = s.List(cancelled, func(objects.ID, int64) error { return nil })
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s: List with a cancelled context: %v", when, err)
		}
		if err := s.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// testSyncReopen checks that what was put and synced is there for
// another opener of the store, and after Close.
func testSyncReopen(t *testing.T, s objects.Store, reopen func() objects.Store) {
	ctx := context.Background()
	objs := someObjects()
	put(t, s, objs...)
	if err := s.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	other := reopen()
	defer other.Close()
	for _, o := range objs {
		requireObject(t, other, o)
	}
	requireListed(t, other, objs)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	again := reopen()
	defer again.Close()
	requireListed(t, again, objs)
	more := chunk(7, 3000)
	put(t, again, more)
	if err := again.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	requireListed(t, other, append(objs, more))
}

func testDeleter(t *testing.T, s objects.Store, _ func() objects.Store) {
	d, ok := s.(objects.Deleter)
	if !ok {
		t.Skip("the store does not delete single objects")
	}
	ctx := context.Background()
	objs := someObjects()
	put(t, s, objs...)
	for _, o := range objs[:2] {
		if err := d.Delete(ctx, o.id); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		requireMissing(t, s, o.id)
		if err := d.Delete(ctx, o.id); err != nil {
			t.Errorf("Delete of a missing object: %v", err)
		}
	}
	requireListed(t, s, objs[2:])
}

func testLeafPutter(t *testing.T, s objects.Store, _ func() objects.Store) {
	lp, ok := s.(objects.LeafPutter)
	if !ok {
		t.Skip("the store has no separate way to store leaves")
	}
	ctx := context.Background()
	leaves := []object{chunk(8, 4096), chunk(9, 300), chunk(8, 4096)}
	for _, o := range leaves {
		if err := lp.PutLeaf(ctx, o.id, o.stored); err != nil {
			t.Fatalf("PutLeaf: %v", err)
		}
	}
	tree := sealed((&objects.Tree{Entries: []objects.TreeEntry{{Name: "f", Kind: objects.EntrySymlink, Mode: 0o777, Size: 1, ID: leaves[0].id}}}).Encode())
	put(t, s, tree)
	for _, o := range leaves {
		requireObject(t, s, o)
	}
	requireListed(t, s, []object{leaves[0], leaves[1], tree})
}

func testPrefixFinder(t *testing.T, s objects.Store, _ func() objects.Store) {
	pf, ok := s.(objects.PrefixFinder)
	if !ok {
		t.Skip("the store does not find objects by prefix")
	}
	ctx := context.Background()
	var ids []objects.ID
	for i := range 120 { // enough to share two-digit prefixes
		o := sealed(objects.EncodeChunk([]byte(fmt.Sprint(i))))
		put(t, s, o)
		ids = append(ids, o.id)
		if i == 60 {
			if err := s.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, id := range ids[:20] {
		for _, n := range []int{2, 3, 5, 64} {
			prefix := id.String()[:n]
			got, err := pf.FindPrefix(ctx, prefix)
			if err != nil {
				t.Fatal(err)
			}
			var want []objects.ID
			for _, o := range ids {
				if strings.HasPrefix(o.String(), prefix) {
					want = append(want, o)
				}
			}
			slices.SortFunc(got, compareIDs)
			slices.SortFunc(want, compareIDs)
			if !slices.Equal(got, want) {
				t.Errorf("FindPrefix(%s) = %v, want %v", prefix, got, want)
			}
		}
	}
	for _, p := range []string{"", "a"} {
		if _, err := pf.FindPrefix(ctx, p); err == nil {
			t.Errorf("FindPrefix(%q) accepted a prefix too short", p)
		}
	}
}

func compareIDs(a, b objects.ID) int { return bytes.Compare(a[:], b[:]) }

func testDeltaPutter(t *testing.T, s objects.Store, reopen func() objects.Store) {
	dp, ok := s.(objects.DeltaPutter)
	if !ok {
		t.Skip("the store keeps no deltas")
	}
	ctx := context.Background()
	old := chunk(11, 4096)
	put(t, s, old)
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	oldEnc, err := objects.Unseal(old.id, old.stored)
	if err != nil {
		t.Fatal(err)
	}
	curEnc := bytes.Clone(oldEnc)
	copy(curEnc[1000:], "changed")
	cur := sealed(curEnc)
	delta := objects.EncodeDelta(old.id, oldEnc, curEnc, nil)
	if err := s.Put(ctx, cur.id, delta); err == nil {
		t.Fatal("Put of a delta succeeded; only PutDelta may store one")
	}
	base, baseEnc, ok, err := dp.BaseFor(ctx, old.id)
	if err == nil && !ok {
		// A store that keeps no deltas (a published directory's).
		if isDelta, err := dp.PutDelta(ctx, cur.id, delta, cur.stored); err != nil || isDelta {
			t.Fatalf("PutDelta into a store that offers no base = %v, %v; want the whole form stored", isDelta, err)
		}
		requireListed(t, s, []object{old, cur})
		return
	}
	if err != nil || base != old.id || !bytes.Equal(baseEnc, oldEnc) {
		t.Fatalf("BaseFor a whole object = %s, %v, %v; want itself and its encoding", base.Short(), ok, err)
	}
	if isDelta, err := dp.PutDelta(ctx, cur.id, delta, cur.stored); err != nil || !isDelta {
		t.Fatalf("PutDelta = %v, %v; want the delta stored", isDelta, err)
	}
	// Get hands out the whole stored form, as Seal makes it.
	requireObject(t, s, cur)
	if got, err := objects.Load(ctx, s, cur.id); err != nil || !bytes.Equal(got, curEnc) {
		t.Fatalf("Load of a delta: %v", err)
	}
	if size := listAll(t, s)[cur.id]; size != int64(len(delta)) {
		t.Errorf("List: the delta has size %d, want %d", size, len(delta))
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	other := reopen()
	defer other.Close()
	requireObject(t, other, cur)
	if base, _, ok, err := other.(objects.DeltaPutter).BaseFor(ctx, cur.id); err != nil || !ok || base != old.id {
		t.Errorf("BaseFor a delta = %s, %v, %v; want its base %s", base.Short(), ok, err, old.id.Short())
	}
}

func testLoader(t *testing.T, s objects.Store, _ func() objects.Store) {
	l, ok := s.(objects.Loader)
	if !ok {
		t.Skip("the store has no faster way to encodings than Get")
	}
	ctx := context.Background()
	objs := someObjects()
	put(t, s, objs...)
	for _, o := range objs {
		want, err := objects.Unseal(o.id, o.stored)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := l.Load(ctx, o.id); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Load %s: %v", o.id.Short(), err)
		}
	}
	missing := objects.Sum([]byte("missing"))
	if _, err := l.Load(ctx, missing); !errors.Is(err, objects.ErrNotFound) {
		t.Errorf("Load of a missing object: %v; want ErrNotFound", err)
	}
}
