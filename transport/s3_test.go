package transport_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	sbuml "github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/internal/s3test"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
	"github.com/sbuml/sbuml/transport"
)

// TestMain reaches S3 through the environment, as users do, and stops
// the shared S3 server when the tests end.
func TestMain(m *testing.M) {
	for _, kv := range (&s3test.Server{}).Env() {
		k, v, _ := strings.Cut(kv, "=")
		if k != "AWS_ENDPOINT_URL" {
			os.Setenv(k, v)
		}
	}
	code := m.Run()
	s3test.StopShared()
	os.Exit(code)
}

// s3Options returns the options that reach the shared S3 server.
func s3Options(t testing.TB) transport.S3Options {
	return transport.S3Options{Endpoint: s3test.Shared(t).Endpoint, CacheDir: t.TempDir()}
}

// openS3 opens the remote at url on the shared S3 server.
func openS3(t testing.TB, url string) *transport.S3 {
	t.Helper()
	r, err := transport.OpenS3(context.Background(), url, s3Options(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// newS3Backing makes an empty scrapbook in a new bucket of the shared S3
// server (a push's first step makes it) and returns its URL.
func newS3Backing(t testing.TB) string {
	t.Helper()
	url := "s3://" + s3test.Shared(t).Bucket(t) + "/book"
	r := openS3(t, url)
	if err := r.Put(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return url
}

// envInt returns the whole number in environment variable name, or def.
func envInt(t testing.TB, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("$%s=%q: want a whole number of at least 1", name, v)
	}
	return n
}

// TestS3PushRace has two scrapbooks push different snapshots to one
// branch of a bucket at the same moment, round after round, each on top
// of the last winner: each round exactly one wins and the other is told
// that its push is not a fast-forward; a clone of the bucket then passes
// fsck and holds every winner. $SBUML_S3_RACE_ROUNDS sets the rounds (5
// by default; the issue asks for 20).
func TestS3PushRace(t *testing.T) {
	ctx := context.Background()
	rounds := envInt(t, "SBUML_S3_RACE_ROUNDS", 5)
	srv := s3test.Shared(t)
	url := "s3://" + srv.Bucket(t) + "/race"
	settings := &sbuml.S3Settings{Endpoint: srv.Endpoint}
	var books [2]*sbuml.Scrapbook
	var work [2]string
	for i := range books {
		books[i], work[i] = newLocal(t), t.TempDir()
		if err := books[i].AddRemote(sbuml.RemoteConfig{Name: "origin", URL: url, S3: settings}); err != nil {
			t.Fatal(err)
		}
		writeFiles(t, work[i], uint64(10+i), map[string]int{"base.bin": 200 << 10})
	}
	var winners []objects.ID
	tip, cas := objects.Zero, 0
	for round := range rounds {
		var ids [2]objects.ID
		for i, b := range books {
			ids[i] = buildOn(t, b, tip, work[i], uint64(100+2*round+i))
		}
		var errs [2]error
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, b := range books {
			wg.Go(func() {
				<-start
				_, errs[i] = b.Push(ctx, "origin", []string{"main"}, sbuml.TransferOptions{})
			})
		}
		close(start)
		wg.Wait()
		won := -1
		for i, err := range errs {
			switch {
			case err == nil && won < 0:
				won = i
			case err == nil:
				t.Fatalf("round %d: both pushes won", round)
			case !errors.Is(err, transport.ErrNotFastForward):
				t.Fatalf("round %d: the losing push failed otherwise: %v", round, err)
			case errors.Is(err, refs.ErrConflict):
				cas++
				if round == 0 {
					t.Logf("lost the compare-and-swap: %v", err)
				}
			}
		}
		if won < 0 {
			t.Fatalf("round %d: no push won: %v; %v", round, errs[0], errs[1])
		}
		tip = ids[won]
		winners = append(winners, tip)
	}
	t.Logf("%d rounds; %d decided by the compare-and-swap of the ref, the others when the loser read the ref", rounds, cas)
	clone, _, err := sbuml.Clone(ctx, url, t.TempDir(), sbuml.TransferOptions{S3: settings})
	if err != nil {
		t.Fatal(err)
	}
	defer clone.Close()
	fsck(t, clone)
	head, err := clone.Refs.Get("refs/heads/main")
	if err != nil || head != tip {
		t.Fatalf("the clone's main is %s (%v), want the last winner %s", head.Short(), err, tip.Short())
	}
	for i, w := range winners {
		if !has(t, clone.Objects, w) {
			t.Errorf("the winner of round %d, %s, is missing from the clone", i, w.Short())
		}
	}
}

// buildOn makes b's main the snapshot tip (fetched from origin, unless
// zero) and imports work with a new file on top of it.
func buildOn(t *testing.T, b *sbuml.Scrapbook, tip objects.ID, work string, seed uint64) objects.ID {
	t.Helper()
	ctx := context.Background()
	if !tip.IsZero() {
		if _, err := b.Pull(ctx, "origin", []string{"main"}, sbuml.TransferOptions{}); err != nil {
			t.Fatal(err)
		}
		cur, err := b.Refs.Get("refs/heads/main")
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Refs.Update("refs/heads/main", cur, tip, "test: build on the winner"); err != nil {
			t.Fatal(err)
		}
	}
	writeFiles(t, work, seed, map[string]int{"round.bin": 64 << 10})
	r, err := b.Import(ctx, work, sbuml.SnapshotOptions{Branch: "main", Message: fmt.Sprintf("seed %d", seed)})
	if err != nil {
		t.Fatal(err)
	}
	return r.ID
}

// fsck fails the test if s has problems.
func fsck(t *testing.T, s *sbuml.Scrapbook) {
	t.Helper()
	r, err := s.Fsck(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range r.Problems {
		t.Errorf("fsck: %v", p)
	}
}

// pausing is a Remote whose first Put of objects waits, after telling
// paused, until resume is closed: the push has found what the remote
// lacks and sends nothing yet.
type pausing struct {
	transport.Remote
	once           sync.Once
	paused, resume chan struct{}
}

func (p *pausing) Put(ctx context.Context, objs []transport.Object) error {
	if len(objs) > 0 {
		p.once.Do(func() {
			close(p.paused)
			<-p.resume
		})
	}
	return p.Remote.Put(ctx, objs)
}

// TestS3GCWhilePushing runs a gc of a bucket while a push to it is
// under way. The push found present the chunks of a snapshot whose
// branch was deleted, so it does not send them; the gc, running before
// the push names them, finds them garbage and condemns their pack. The
// next gc waits while the push's lease lives, then copies the chunks the
// push named out of the condemned pack before deleting it: the bucket
// loses nothing the push names, and frees the rest. A push that begins
// after the gc sends the condemned chunks it needs again.
//
// It is long because it is one scenario: each step starts from what the
// steps before it left.
func TestS3GCWhilePushing(t *testing.T) {
	ctx := context.Background()
	url := newS3Backing(t)
	opts := s3Options(t)
	opts.Lease = transport.LeaseTimes{Refresh: 200 * time.Millisecond, Stale: 5 * time.Second}
	open := func() *transport.S3 {
		r, err := transport.OpenS3(ctx, url, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	book, work := newLocal(t), t.TempDir()
	writeFiles(t, work, 7, map[string]int{"shared.bin": 1 << 20, "x.txt": 100})
	x, err := book.Import(ctx, work, sbuml.SnapshotOptions{Branch: "tmp", Message: "x"})
	if err != nil {
		t.Fatal(err)
	}
	writeFiles(t, work, 8, map[string]int{"y.bin": 300 << 10})
	y, err := book.Import(ctx, work, sbuml.SnapshotOptions{Branch: "main", Message: "y"})
	if err != nil {
		t.Fatal(err)
	}
	seed(t, url, book.Objects, transport.RefUpdate{Name: "refs/heads/tmp", New: x.ID})
	deleter := open()
	if err := deleter.UpdateRef(ctx, "refs/heads/tmp", x.ID, objects.Zero); err != nil {
		t.Fatal(err)
	}
	deleter.Close() // its lease ends

	pusher := &pausing{Remote: open(), paused: make(chan struct{}), resume: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, _, err := transport.Push(ctx, book.Objects, pusher, []transport.RefUpdate{{Name: "refs/heads/main", New: y.ID}}, transport.Options{})
		done <- err
	}()
	<-pusher.paused
	g1, err := transport.GCS3(ctx, open(), transport.GCOptions{MinAge: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gc during the push: %+v", *g1)
	if g1.Condemned == 0 || g1.GarbageBytes < 1<<20 {
		t.Fatalf("the gc did not condemn the deleted branch's packs: %+v", *g1)
	}
	// A push that begins after the gc treats the condemned chunks as
	// absent, and sends them again.
	writeFiles(t, work, 9, map[string]int{"z.bin": 100 << 10})
	z, err := book.Import(ctx, work, sbuml.SnapshotOptions{Branch: "z", Message: "z"})
	if err != nil {
		t.Fatal(err)
	}
	later := open()
	_, st, err := transport.Push(ctx, book.Objects, later, []transport.RefUpdate{{Name: "refs/heads/z", New: z.ID}}, transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	later.Close()
	if st.ObjectBytes < 1<<20 {
		t.Errorf("a push after the gc sent %d bytes; want the condemned chunks sent again", st.ObjectBytes)
	}
	close(pusher.resume)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	g2, err := transport.GCS3(ctx, open(), transport.GCOptions{MinAge: -1})
	if err != nil {
		t.Fatal(err)
	}
	if g2.Waiting != 1 || g2.Deleted != 0 {
		t.Fatalf("a gc while the push's lease lives: %+v; want it to wait for one push and delete nothing", *g2)
	}
	if err := pusher.Close(); err != nil {
		t.Fatal(err)
	}
	g3, err := transport.GCS3(ctx, open(), transport.GCOptions{MinAge: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gc after the push: %+v", *g3)
	if g3.Deleted == 0 || g3.Copied == 0 {
		t.Errorf("the gc after the push deleted %d packs and copied %d objects; want the condemned packs deleted and the chunks the push named copied", g3.Deleted, g3.Copied)
	}
	bucket := open().Store()
	checkClosed(t, bucket)
	for _, id := range []objects.ID{y.ID, z.ID} {
		if got, want := len(reachable(t, bucket, id)), len(reachable(t, book.Objects, id)); got != want {
			t.Errorf("the bucket holds %d objects of the pushed snapshot %s, want %d", got, id.Short(), want)
		}
	}
	if has(t, bucket, x.ID) {
		t.Errorf("the deleted branch's snapshot is still in the bucket")
	}
	local := newLocal(t)
	if _, err := transport.Fetch(ctx, local.Objects, open(), []objects.ID{y.ID}, transport.Options{}); err != nil {
		t.Fatal(err)
	}
	checkClosed(t, local.Objects)
}

// cutAfter is a Remote whose Puts of objects fail after n have
// succeeded, as a push cut off does.
type cutAfter struct {
	transport.Remote
	mu sync.Mutex
	n  int
}

var errCut = errors.New("cut off by the test")

func (c *cutAfter) Put(ctx context.Context, objs []transport.Object) error {
	if len(objs) > 0 {
		c.mu.Lock()
		c.n--
		left := c.n
		c.mu.Unlock()
		if left < 0 {
			return errCut
		}
	}
	return c.Remote.Put(ctx, objs)
}

// TestS3PushResumes cuts a push off after two of its batches, then
// pushes again: the second push sends only what did not arrive.
func TestS3PushResumes(t *testing.T) {
	ctx := context.Background()
	book, work := newLocal(t), t.TempDir()
	writeFiles(t, work, 20, map[string]int{"a.bin": 12 << 20, "b.bin": 12 << 20, "c.bin": 12 << 20})
	r, err := book.Import(ctx, work, sbuml.SnapshotOptions{Branch: "main", Message: "big"})
	if err != nil {
		t.Fatal(err)
	}
	url := newS3Backing(t)
	up := []transport.RefUpdate{{Name: "refs/heads/main", New: r.ID}}
	_, st1, err := transport.Push(ctx, book.Objects, &cutAfter{Remote: openS3(t, url), n: 2}, up, transport.Options{Concurrency: 1})
	mustIs(t, err, errCut)
	_, st2, err := transport.Push(ctx, book.Objects, openS3(t, url), up, transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, total := sum(reachable(t, book.Objects, r.ID), nil)
	t.Logf("cut off after %d bytes of objects; the second push sent %d of %d", st1.ObjectBytes, st2.ObjectBytes, total)
	if st1.ObjectBytes == 0 || st1.ObjectBytes+st2.ObjectBytes != total {
		t.Errorf("first push stored %d bytes, second sent %d; want them to add up to the %d bytes of the snapshot", st1.ObjectBytes, st2.ObjectBytes, total)
	}
	checkClosed(t, openS3(t, url).Store())
}

// TestS3IndexCache checks the pack index cache: each bucket's indexes in
// a directory of their own, read from there instead of the bucket, and a
// listing that drops the indexes of packs the bucket no longer lists and
// the indexes earlier versions kept straight in the cache directory.
func TestS3IndexCache(t *testing.T) {
	ctx := context.Background()
	book, work := newLocal(t), t.TempDir()
	writeFiles(t, work, 21, map[string]int{"a.bin": 1 << 20})
	r, err := book.Import(ctx, work, sbuml.SnapshotOptions{Branch: "main", Message: "one"})
	if err != nil {
		t.Fatal(err)
	}
	url := newS3Backing(t)
	cache := t.TempDir()
	open := func() *transport.S3 {
		o := s3Options(t)
		o.CacheDir = cache
		rm, err := transport.OpenS3(ctx, url, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rm.Close() })
		return rm
	}
	up := []transport.RefUpdate{{Name: "refs/heads/main", New: r.ID}}
	if _, _, err := transport.Push(ctx, book.Objects, open(), up, transport.Options{}); err != nil {
		t.Fatal(err)
	}
	// What a reader of the bucket caches.
	has := func() {
		t.Helper()
		ok, err := open().Store().Has(ctx, r.ID)
		if err != nil || !ok {
			t.Fatalf("the pushed snapshot in the bucket: %v, %v", ok, err)
		}
	}
	has()
	dirs, err := os.ReadDir(cache)
	if err != nil || len(dirs) != 1 || !dirs[0].IsDir() {
		t.Fatalf("cache holds %v, %v; want one directory for the bucket", dirs, err)
	}
	bucketDir := filepath.Join(cache, dirs[0].Name())
	cached, _ := filepath.Glob(filepath.Join(bucketDir, "pack-*.idx"))
	if len(cached) == 0 {
		t.Fatal("no pack index was cached")
	}
	gone := filepath.Join(bucketDir, "pack-"+strings.Repeat("0", 64)+".idx")
	legacy := filepath.Join(cache, "pack-"+strings.Repeat("1", 64)+".idx")
	for _, f := range []string{gone, legacy} {
		if err := os.WriteFile(f, []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	has()
	for _, f := range []string{gone, legacy} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s survived a listing that does not hold its pack: %v", f, err)
		}
	}
	for _, f := range cached {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("the index of a listed pack left the cache: %v", err)
		}
	}
}
