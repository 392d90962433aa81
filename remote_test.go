package sbuml_test

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
	"github.com/sbuml/sbuml/transport"
)

// remoteBook makes an empty scrapbook.
func remoteBook(t testing.TB) *sbuml.Scrapbook {
	t.Helper()
	s, err := sbuml.Init(filepath.Join(t.TempDir(), "book"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// remoteWork is a directory of pseudo-random files that tests import,
// change a little, and import again.
type remoteWork struct {
	t   testing.TB
	dir string
}

func newRemoteWork(t testing.TB) *remoteWork {
	w := &remoteWork{t: t, dir: t.TempDir()}
	w.write("disk.img", 2<<20, 1)
	w.write("etc/config", 3000, 2)
	w.write("home/user/data.bin", 700<<10, 3)
	return w
}

func (w *remoteWork) write(name string, size int, seed uint64) {
	w.t.Helper()
	p := filepath.Join(w.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		w.t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 42))
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		w.t.Fatal(err)
	}
}

// change overwrites 4 KiB in the middle of the disk image.
func (w *remoteWork) change(seed uint64) {
	w.t.Helper()
	f, err := os.OpenFile(filepath.Join(w.dir, "disk.img"), os.O_WRONLY, 0)
	if err != nil {
		w.t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 4096)
	rng := rand.New(rand.NewPCG(seed, 7))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	if _, err := f.WriteAt(b, 1<<20); err != nil {
		w.t.Fatal(err)
	}
}

func remoteImport(t testing.TB, s *sbuml.Scrapbook, dir, msg string) objects.ID {
	t.Helper()
	r, err := s.Import(context.Background(), dir, sbuml.SnapshotOptions{Message: msg})
	if err != nil {
		t.Fatal(err)
	}
	return r.ID
}

// storeSizes lists the objects of a store with their stored sizes.
func storeSizes(t testing.TB, s objects.Store) map[objects.ID]int64 {
	t.Helper()
	m := map[objects.ID]int64{}
	if err := s.List(context.Background(), func(id objects.ID, size int64) error {
		m[id] = size
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return m
}

func fsckClean(t testing.TB, s *sbuml.Scrapbook) {
	t.Helper()
	r, err := s.Fsck(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() {
		t.Fatalf("fsck of %s: %v", s.Dir, r.Problems)
	}
}

// sameLog checks that rev has the same history in both scrapbooks.
func sameLog(t testing.TB, a *sbuml.Scrapbook, revA string, b *sbuml.Scrapbook, revB string) {
	t.Helper()
	ctx := context.Background()
	la, err := a.Log(ctx, sbuml.LogOptions{Revs: []string{revA}})
	if err != nil {
		t.Fatal(err)
	}
	lb, err := b.Log(ctx, sbuml.LogOptions{Revs: []string{revB}})
	if err != nil {
		t.Fatal(err)
	}
	strip := func(l []sbuml.LogEntry) string {
		for i := range l {
			l[i].Refs = nil
		}
		j, _ := json.Marshal(l)
		return string(j)
	}
	if len(la) == 0 || strip(la) != strip(lb) {
		t.Fatalf("log of %s:\n%s\ndiffers from log of %s:\n%s", revA, strip(la), revB, strip(lb))
	}
}

// smartServer serves a new scrapbook; pushing needs token.
func smartServer(t testing.TB, token string) (*httptest.Server, *sbuml.Scrapbook) {
	t.Helper()
	book := remoteBook(t)
	d, err := transport.OpenDir(book.Dir)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(transport.NewServer(d, transport.ServerOptions{Token: token}))
	t.Cleanup(func() {
		srv.Close()
		d.Close()
	})
	return srv, book
}

func writeToken(t testing.TB, token string) string {
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRemoteConfig(t *testing.T) {
	s := remoteBook(t)
	if err := s.AddRemote(sbuml.RemoteConfig{Name: "origin", URL: "http://example.org/book"}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddRemote(sbuml.RemoteConfig{Name: "backup", URL: "relative/dir"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		rc  sbuml.RemoteConfig
		msg string
	}{
		{sbuml.RemoteConfig{Name: "origin", URL: "/x"}, "already exists"},
		{sbuml.RemoteConfig{Name: "a/b", URL: "/x"}, "may not contain '/'"},
		{sbuml.RemoteConfig{Name: "a..b", URL: "/x"}, `".."`},
		{sbuml.RemoteConfig{Name: "", URL: "/x"}, "remote name"},
		{sbuml.RemoteConfig{Name: "ftp", URL: "ftp://example.org/"}, "unsupported scheme"},
		{sbuml.RemoteConfig{Name: "q", URL: "http://example.org/?a=b"}, "query"},
		{sbuml.RemoteConfig{Name: "empty", URL: ""}, "empty URL"},
		{sbuml.RemoteConfig{Name: "s3", URL: "s3://Bad_Bucket/x"}, "not a bucket name"},
		{sbuml.RemoteConfig{Name: "s3", URL: "/x", S3: &sbuml.S3Settings{Region: "eu-west-1"}}, "are for s3:// URLs"},
		{sbuml.RemoteConfig{Name: "s3", URL: "s3://book/x", S3: &sbuml.S3Settings{Endpoint: "ftp://host"}}, "S3 endpoint"},
	} {
		err := s.AddRemote(tc.rc)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("AddRemote(%+v) = %v; want an error saying %s", tc.rc, err, tc.msg)
		}
	}
	if err := s.AddRemote(sbuml.RemoteConfig{Name: "team", URL: "s3://book/a/b/", S3: &sbuml.S3Settings{Endpoint: "http://127.0.0.1:7070"}}); err != nil {
		t.Fatal(err)
	}
	rs, err := s.Remotes()
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 3 || rs[0].Name != "backup" || rs[1].Name != "origin" || !filepath.IsAbs(rs[0].URL) ||
		rs[2].URL != "s3://book/a/b" || rs[2].S3 == nil || rs[2].S3.Endpoint != "http://127.0.0.1:7070" {
		t.Errorf("remotes = %+v", rs)
	}
	if err := s.RemoveRemote("team"); err != nil {
		t.Fatal(err)
	}
	// Removing a remote removes its remote-tracking refs.
	id := remoteImport(t, s, newRemoteWork(t).dir, "x")
	if err := s.Refs.Update("refs/remotes/origin/main", objects.Zero, id, "test"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveRemote("origin"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Refs.Get("refs/remotes/origin/main"); !errors.Is(err, refs.ErrNotFound) {
		t.Errorf("tracking ref survived its remote: %v", err)
	}
	if _, err := s.LookupRemote("origin"); err == nil {
		t.Error("removed remote still found")
	}
	if err := s.RemoveRemote("origin"); err == nil {
		t.Error("removing a missing remote succeeded")
	}
}

// TestPushPullThroughServer pushes from one scrapbook to a smart server,
// clones from it into another, pushes a child and pulls it.
//
// It is long because it is one scenario: each step starts from what the
// steps before it left.
func TestPushPullThroughServer(t *testing.T) {
	ctx := context.Background()
	srv, served := smartServer(t, "tok")
	a := remoteBook(t)
	work := newRemoteWork(t)
	remoteImport(t, a, work.dir, "first")
	if err := a.AddRemote(sbuml.RemoteConfig{Name: "origin", URL: srv.URL, TokenFile: writeToken(t, "tok")}); err != nil {
		t.Fatal(err)
	}
	res, err := a.Push(ctx, "origin", nil, sbuml.TransferOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Refs) != 1 || res.Refs[0].Name != "refs/heads/main" || res.Refs[0].Status != "created" {
		t.Errorf("push result %+v", res.Refs)
	}
	fsckClean(t, served)
	sameLog(t, a, "main", served, "main")
	if id, _ := a.Refs.Get("refs/remotes/origin/main"); id != res.Refs[0].New {
		t.Errorf("push did not move origin/main")
	}

	b, cres, err := sbuml.Clone(ctx, srv.URL, filepath.Join(t.TempDir(), "clone"), sbuml.TransferOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fsckClean(t, b)
	sameLog(t, a, "main", b, "main")
	sameLog(t, a, "main", b, "origin/main")
	if br, _ := b.CurrentBranch(); br != "main" {
		t.Errorf("clone HEAD names %q", br)
	}
	t.Logf("clone: %s", cres.Stats.Summary("received"))

	// A child with a small change: the push sends little more than the
	// new objects.
	before := storeSizes(t, a.Objects)
	work.change(9)
	remoteImport(t, a, work.dir, "second")
	var newBytes int64
	for id, size := range storeSizes(t, a.Objects) {
		if _, ok := before[id]; !ok {
			newBytes += size
		}
	}
	res, err = a.Push(ctx, "origin", []string{"main"}, sbuml.TransferOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Refs[0].Status != "fast-forward" {
		t.Errorf("status %q", res.Refs[0].Status)
	}
	if limit := int64(1.1*float64(newBytes)) + 64<<10; res.Stats.BytesSent > limit {
		t.Errorf("child push sent %d bytes for %d new bytes; limit %d", res.Stats.BytesSent, newBytes, limit)
	}
	if res.Stats.ObjectBytes != newBytes {
		t.Errorf("child push sent %d object bytes; the child added %d", res.Stats.ObjectBytes, newBytes)
	}
	t.Logf("child push: %d new bytes; %s", newBytes, res.Stats.Summary("sent"))

	pres, err := b.Pull(ctx, "origin", nil, sbuml.TransferOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pres.Refs) != 1 || pres.Refs[0].Name != "refs/remotes/origin/main" || pres.Refs[0].Status != "updated" {
		t.Errorf("pull result %+v", pres.Refs)
	}
	if pres.Stats.ObjectBytes != newBytes {
		t.Errorf("pull received %d object bytes; want the %d new", pres.Stats.ObjectBytes, newBytes)
	}
	fsckClean(t, b)
	sameLog(t, a, "main", b, "origin/main")

	// Tags are created by a pull, never moved.
	secondID := pres.Refs[0].New
	firstID := pres.Refs[0].Old
	if err := a.Refs.Update("refs/tags/v1", objects.Zero, secondID, "tag"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Push(ctx, "origin", []string{"v1"}, sbuml.TransferOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Refs.Update("refs/tags/v1", objects.Zero, firstID, "my own tag"); err != nil {
		t.Fatal(err)
	}
	pres, err = b.Pull(ctx, "origin", []string{"v1"}, sbuml.TransferOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pres.Refs) != 1 || !strings.HasPrefix(pres.Refs[0].Status, "left alone") {
		t.Errorf("pull of a tag that differs: %+v", pres.Refs)
	}
	if id, _ := b.Refs.Get("refs/tags/v1"); id != firstID {
		t.Error("pull moved a local tag")
	}

	// b's main is now behind, and b pushes a sibling of a's second
	// snapshot: not a fast-forward.
	if err := b.AddRemote(sbuml.RemoteConfig{Name: "up", URL: srv.URL}); err != nil {
		t.Fatal(err)
	}
	work.change(10)
	remoteImport(t, b, work.dir, "sibling")
	_, err = b.Push(ctx, "up", nil, sbuml.TransferOptions{TokenFile: writeToken(t, "tok")})
	if !errors.Is(err, transport.ErrNotFastForward) {
		t.Fatalf("push of a sibling: %v", err)
	}
	// Without the token: refused, whatever --force says.
	_, err = b.Push(ctx, "up", nil, sbuml.TransferOptions{Force: true})
	if !errors.Is(err, transport.ErrPushDenied) {
		t.Fatalf("push without token: %v", err)
	}
	sameLog(t, a, "main", served, "main")
}

// TestPullResumes kills the server half-way through a pull; the next
// pull fetches only what the first did not store.
func TestPullResumes(t *testing.T) {
	ctx := context.Background()
	a := remoteBook(t)
	id := remoteImport(t, a, newRemoteWork(t).dir, "big")
	d, err := transport.OpenDir(a.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var total int64
	for _, size := range storeSizes(t, a.Objects) {
		total += size
	}
	dying := &dyingServer{h: transport.NewServer(d, transport.ServerOptions{}), budget: total / 2}
	srv := httptest.NewServer(dying)
	defer srv.Close()

	b := remoteBook(t)
	if err := b.AddRemote(sbuml.RemoteConfig{Name: "origin", URL: srv.URL}); err != nil {
		t.Fatal(err)
	}
	res1, err := b.Pull(ctx, "origin", nil, sbuml.TransferOptions{})
	if err == nil || !strings.Contains(err.Error(), "pull again") {
		t.Fatalf("pull from a dying server: %v", err)
	}
	t.Logf("first pull: %v", err)
	if _, err := b.Refs.Get("refs/remotes/origin/main"); !errors.Is(err, refs.ErrNotFound) {
		t.Errorf("a cut-off pull moved a ref: %v", err)
	}
	fsckClean(t, b)
	var kept int64
	for _, size := range storeSizes(t, b.Objects) {
		kept += size
	}
	if kept < total/4 {
		t.Fatalf("first pull kept %d of %d bytes", kept, total)
	}

	dying.revive()
	res2, err := b.Pull(ctx, "origin", nil, sbuml.TransferOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res2.Stats.ObjectBytes != total-kept {
		t.Errorf("second pull received %d object bytes; want only the missing %d", res2.Stats.ObjectBytes, total-kept)
	}
	if got, _ := b.Refs.Get("refs/remotes/origin/main"); got != id {
		t.Errorf("origin/main = %s, want %s", got, id)
	}
	fsckClean(t, b)
	sameLog(t, a, "main", b, "origin/main")
	t.Logf("%d bytes in all: the first pull received %d and kept %d, the second received %d (%d on the wire)",
		total, res1.Stats.ObjectBytes, kept, res2.Stats.ObjectBytes, res2.Stats.BytesReceived)
}

// dyingServer serves until budget bytes went out, then cuts the response
// it is writing and refuses everything until revived.
type dyingServer struct {
	h      http.Handler
	mu     sync.Mutex
	budget int64
	dead   bool
}

func (d *dyingServer) revive() {
	d.mu.Lock()
	d.dead, d.budget = false, 1<<62
	d.mu.Unlock()
}

func (d *dyingServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	dead := d.dead
	d.mu.Unlock()
	if dead {
		panic(http.ErrAbortHandler)
	}
	d.h.ServeHTTP(&dyingWriter{w, d}, r)
}

type dyingWriter struct {
	http.ResponseWriter
	d *dyingServer
}

func (w *dyingWriter) Write(p []byte) (int, error) {
	w.d.mu.Lock()
	w.d.budget -= int64(len(p))
	if w.d.budget < 0 {
		w.d.dead = true
	}
	dead := w.d.dead
	w.d.mu.Unlock()
	if dead {
		panic(http.ErrAbortHandler)
	}
	return w.ResponseWriter.Write(p)
}

// TestPublishAndClone publishes a scrapbook, serves the directory with a
// plain file server, clones it and fetches single snapshots by link.
//
// It is long because it is one scenario: each step starts from what the
// steps before it left.
func TestPublishAndClone(t *testing.T) {
	ctx := context.Background()
	a := remoteBook(t)
	work := newRemoteWork(t)
	first := remoteImport(t, a, work.dir, "first <b>bold</b>")
	if err := a.Refs.Update("refs/tags/v1", objects.Zero, first, "tag"); err != nil {
		t.Fatal(err)
	}
	work.change(3)
	second := remoteImport(t, a, work.dir, "second")
	fr, err := a.Import(ctx, work.dir, sbuml.SnapshotOptions{Branch: "feature/x", Message: "on a branch"})
	if err != nil {
		t.Fatal(err)
	}
	feature := fr.ID

	pubDir := filepath.Join(t.TempDir(), "pub")
	mux := http.NewServeMux()
	mux.Handle("/book/", http.StripPrefix("/book/", http.FileServer(http.Dir(pubDir))))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	url := srv.URL + "/book/"

	res, err := a.Publish(ctx, pubDir, url, sbuml.TransferOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A link file per branch and tag, and one per snapshot.
	if res.Snapshots != 3 || len(res.Links) != 6 {
		t.Errorf("published %d snapshots, links %v", res.Snapshots, res.Links)
	}
	index, err := os.ReadFile(filepath.Join(pubDir, "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"first &lt;b&gt;bold&lt;/b&gt;", "second", "on a branch", second.Short(), "branches/main.sbuml", "tags/v1.sbuml", "branches/feature/x.sbuml", "sbuml clone " + url,
		"snapshots/" + first.Short() + ".sbuml", "snapshots/" + feature.Short() + ".sbuml"} {
		if !strings.Contains(string(index), want) {
			t.Errorf("index.html lacks %q", want)
		}
	}
	linkData, err := os.ReadFile(filepath.Join(pubDir, "branches", "main.sbuml"))
	if err != nil {
		t.Fatal(err)
	}
	link, err := sbuml.ParseLink(linkData)
	if err != nil {
		t.Fatal(err)
	}
	if link.URL != url || link.Snapshot != second || link.Ref != "refs/heads/main" || link.Message != "second" {
		t.Errorf("link = %+v", link)
	}

	b, _, err := sbuml.Clone(ctx, url, filepath.Join(t.TempDir(), "clone"), sbuml.TransferOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fsckClean(t, b)
	sameLog(t, a, "main", b, "main")
	sameLog(t, a, "feature/x", b, "feature/x")
	if id, _ := b.Refs.Get("refs/tags/v1"); id != first {
		t.Errorf("tag v1 = %s in the clone", id)
	}

	// Fetch single snapshots by link, into an empty scrapbook.
	c := remoteBook(t)
	for _, tc := range []struct {
		link string
		want objects.ID
	}{
		{url + "#" + first.String(), first},
		{filepath.Join(pubDir, "branches", "main.sbuml"), second},
		{url + "tags/v1.sbuml", first},
		{url + "#feature/x", feature},
		{url, second},
		{url + "#" + first.Short(), first}, // the short ID index.html shows
		{url + "snapshots/" + feature.Short() + ".sbuml", feature},
	} {
		id, err := c.FetchURL(ctx, tc.link)
		if err != nil {
			t.Errorf("FetchURL(%s): %v", tc.link, err)
			continue
		}
		if id != tc.want {
			t.Errorf("FetchURL(%s) = %s, want %s", tc.link, id.Short(), tc.want.Short())
		}
	}
	fsckClean(t, c)

	// Checking out a directory snapshot from the web is refused before
	// anything is downloaded.
	d := remoteBook(t)
	_, err = d.Checkout(ctx, url+"#main", "m", sbuml.CheckoutOptions{})
	if err == nil || !strings.Contains(err.Error(), "not a machine snapshot") {
		t.Errorf("checkout of a directory snapshot by URL: %v", err)
	}
	if n := len(storeSizes(t, d.Objects)); n != 0 {
		t.Errorf("a refused checkout by URL stored %d objects", n)
	}
	for _, bad := range []string{url + "#", url + "#nosuch", url + "#" + strings.Repeat("0", 64), url + "#" + strings.Repeat("0", 12), filepath.Join(pubDir, "refs.json")} {
		if _, err := c.FetchURL(ctx, bad); err == nil {
			t.Errorf("FetchURL(%s) succeeded", bad)
		}
	}

	// Publishing again sends only what is new, and drops deleted refs.
	before := storeSizes(t, a.Objects)
	work.change(4)
	third := remoteImport(t, a, work.dir, "third")
	added := len(storeSizes(t, a.Objects)) - len(before)
	if err := a.Refs.Update("refs/heads/feature/x", feature, objects.Zero, "delete"); err != nil {
		t.Fatal(err)
	}
	res, err = a.Publish(ctx, pubDir, url, sbuml.TransferOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stats.Objects != int64(added) {
		t.Errorf("second publish sent %d objects; %d are new", res.Stats.Objects, added)
	}
	if _, err := os.Stat(filepath.Join(pubDir, "branches", "feature", "x.sbuml")); err == nil {
		t.Error("link file of a deleted branch survived")
	}
	if id, err := c.FetchURL(ctx, url+"#main"); err != nil || id != third {
		t.Errorf("FetchURL(#main) after republishing = %s, %v", id.Short(), err)
	}
	if _, err := c.FetchURL(ctx, url+"#feature/x"); err == nil {
		t.Error("deleted branch still fetchable by name")
	}
	if _, err := a.Publish(ctx, t.TempDir()+"/x", "example.org", sbuml.TransferOptions{}); err == nil {
		t.Error("publish without a URL scheme succeeded")
	}
	notEmpty := t.TempDir()
	os.WriteFile(filepath.Join(notEmpty, "file"), nil, 0o644)
	if _, err := a.Publish(ctx, notEmpty, url, sbuml.TransferOptions{}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("publish into a non-empty directory: %v", err)
	}
}

// TestPullRefusesHostileRemote pulls from servers that lie: one names a
// ref with "..", one serves an object whose bytes do not match its ID.
// Nothing is stored that should not be, and no ref moves.
func TestPullRefusesHostileRemote(t *testing.T) {
	ctx := context.Background()
	a := remoteBook(t)
	id := remoteImport(t, a, newRemoteWork(t).dir, "x")
	d, err := transport.OpenDir(a.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	honest := transport.NewServer(d, transport.ServerOptions{})

	badName := http.NewServeMux()
	badName.HandleFunc("GET /refs", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"format":1,"refs":[{"name":"refs/heads/../../../../escaped","id":"%s"}]}`, id)
	})
	badName.Handle("/", honest)

	victim := mustTree(t, a, id)
	badBytes := transport.NewServer(corruptingRemote{d, victim}, transport.ServerOptions{})
	delta := transport.NewServer(deltaRemote{d, victim}, transport.ServerOptions{})

	for _, tc := range []struct {
		name    string
		handler http.Handler
		msg     string
	}{
		{"dot-dot ref", badName, `".."`},
		{"bad object", badBytes, "content hash mismatch"},
		{"delta", delta, "a delta, which only the store that holds its base can resolve"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			b := remoteBook(t)
			if err := b.AddRemote(sbuml.RemoteConfig{Name: "evil", URL: srv.URL}); err != nil {
				t.Fatal(err)
			}
			_, err := b.Pull(ctx, "evil", nil, sbuml.TransferOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("pull = %v; want an error saying %s", err, tc.msg)
			}
			t.Logf("refused: %v", err)
			if l, _ := b.Refs.List("refs/"); len(l) != 0 {
				t.Errorf("refs after a refused pull: %v", l)
			}
			if ok, _ := b.Objects.Has(ctx, id); ok {
				t.Error("the snapshot was stored")
			}
			if ok, _ := b.Objects.Has(ctx, victim); ok {
				t.Error("the bad object was stored")
			}
			fsckClean(t, b)
			if _, err := os.Stat(filepath.Join(filepath.Dir(b.Dir), "escaped")); err == nil {
				t.Error("a file appeared outside the scrapbook")
			}
		})
	}
}

func mustTree(t testing.TB, s *sbuml.Scrapbook, id objects.ID) objects.ID {
	t.Helper()
	sn, err := objects.LoadSnapshot(context.Background(), s.Objects, id)
	if err != nil {
		t.Fatal(err)
	}
	return sn.Tree
}

// corruptingRemote serves one object with a flipped byte.
type corruptingRemote struct {
	transport.Remote
	bad objects.ID
}

func (c corruptingRemote) Get(ctx context.Context, ids []objects.ID, fn func(objects.ID, []byte) error) error {
	return c.Remote.Get(ctx, ids, func(id objects.ID, stored []byte) error {
		if id == c.bad {
			stored = append([]byte(nil), stored...)
			stored[len(stored)-1] ^= 1
		}
		return fn(id, stored)
	})
}

// deltaRemote serves one object as a delta (see objects.EncodeDelta) on
// an object the receiver cannot have, as only a scrapbook's own store
// keeps them.
type deltaRemote struct {
	transport.Remote
	bad objects.ID
}

func (c deltaRemote) Get(ctx context.Context, ids []objects.ID, fn func(objects.ID, []byte) error) error {
	return c.Remote.Get(ctx, ids, func(id objects.ID, stored []byte) error {
		if id == c.bad {
			enc, err := objects.Unseal(id, stored)
			if err != nil {
				return err
			}
			base := make([]byte, len(enc))
			stored = objects.EncodeDelta(objects.Sum(base), base, enc, nil)
		}
		return fn(id, stored)
	})
}

// TestLinkFileRegistration checks docs/sbuml-mime.xml and
// docs/sbuml.desktop against the link files Publish writes.
//
// It is long because it reads the two registration files and checks each
// against the link files in turn.
func TestLinkFileRegistration(t *testing.T) {
	a := remoteBook(t)
	remoteImport(t, a, newRemoteWork(t).dir, "x")
	pub := filepath.Join(t.TempDir(), "pub")
	if _, err := a.Publish(context.Background(), pub, "https://example.org/book", sbuml.TransferOptions{}); err != nil {
		t.Fatal(err)
	}
	link, err := os.ReadFile(filepath.Join(pub, "branches", "main"+sbuml.LinkExtension))
	if err != nil {
		t.Fatal(err)
	}

	data, err := os.ReadFile("docs/sbuml-mime.xml")
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Types []struct {
			Type  string `xml:"type,attr"`
			Globs []struct {
				Pattern string `xml:"pattern,attr"`
			} `xml:"glob"`
			Matches []struct {
				Type   string `xml:"type,attr"`
				Offset string `xml:"offset,attr"`
				Value  string `xml:"value,attr"`
			} `xml:"magic>match"`
		} `xml:"mime-type"`
	}
	if err := xml.Unmarshal(data, &info); err != nil {
		t.Fatal(err)
	}
	if len(info.Types) != 1 || info.Types[0].Type != sbuml.LinkMIMEType {
		t.Fatalf("mime types %+v, want one %s", info.Types, sbuml.LinkMIMEType)
	}
	mt := info.Types[0]
	if len(mt.Globs) != 1 || mt.Globs[0].Pattern != "*"+sbuml.LinkExtension {
		t.Errorf("globs %+v", mt.Globs)
	}
	if len(mt.Matches) != 1 {
		t.Fatalf("magic %+v", mt.Matches)
	}
	m := mt.Matches[0]
	var lo, hi int
	if _, err := fmt.Sscanf(m.Offset, "%d:%d", &lo, &hi); err != nil || m.Type != "string" {
		t.Fatalf("magic match %+v", m)
	}
	if i := strings.Index(string(link), m.Value); i < lo || i > hi {
		t.Errorf("magic %q at offsets %s does not match a link file:\n%s", m.Value, m.Offset, link)
	}
	if bin, err := exec.LookPath("update-mime-database"); err == nil {
		db := t.TempDir()
		os.MkdirAll(filepath.Join(db, "packages"), 0o755)
		os.WriteFile(filepath.Join(db, "packages", "sbuml.xml"), data, 0o644)
		if out, err := exec.Command(bin, db).CombinedOutput(); err != nil {
			t.Errorf("update-mime-database: %v\n%s", err, out)
		}
		if globs, _ := os.ReadFile(filepath.Join(db, "globs2")); !strings.Contains(string(globs), sbuml.LinkMIMEType+":*"+sbuml.LinkExtension) {
			t.Errorf("update-mime-database made globs2:\n%s", globs)
		}
	}

	desktop, err := os.ReadFile("docs/sbuml.desktop")
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	for i, line := range strings.Split(strings.TrimSpace(string(desktop)), "\n") {
		if i == 0 {
			if line != "[Desktop Entry]" {
				t.Fatalf("desktop file starts with %q", line)
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("desktop file line %q", line)
		}
		keys[k] = v
	}
	if keys["Type"] != "Application" || keys["Exec"] != "sbuml open %f" || keys["MimeType"] != sbuml.LinkMIMEType+";" || keys["Name"] == "" {
		t.Errorf("desktop entry %v", keys)
	}
}
