package transport_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sbuml "github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/transport"
)

// TestServerWriteAccess checks who may push: nobody without a token file,
// only the token's holder with one, nobody on a read-only server. A
// refused push stores nothing.
func TestServerWriteAccess(t *testing.T) {
	src := newSource(t)
	tests := []struct {
		name        string
		server      transport.ServerOptions
		clientToken string
		want        error
		wantMsg     string
	}{
		{"no token file", transport.ServerOptions{}, "anything", transport.ErrReadOnly, "push is disabled"},
		{"no token given", transport.ServerOptions{Token: "s3cret"}, "", transport.ErrPushDenied, "needs the server's bearer token"},
		{"wrong token", transport.ServerOptions{Token: "s3cret"}, "guess", transport.ErrPushDenied, "wrong bearer token"},
		{"read-only", transport.ServerOptions{Token: "s3cret", ReadOnly: true}, "s3cret", transport.ErrReadOnly, "read-only"},
		{"right token", transport.ServerOptions{Token: "s3cret"}, "s3cret", nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dir := newBacking(t, implementation{})
			srv := httptest.NewServer(transport.NewServer(openDir(t, dir), tc.server))
			defer srv.Close()
			r := transport.NewSmart(srv.URL, tc.clientToken, srv.Client())
			_, _, err := transport.Push(ctx, src.book.Objects, r, []transport.RefUpdate{{Name: "refs/heads/main", New: src.second}}, transport.Options{})
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			mustIs(t, err, tc.want)
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q does not say %q", err, tc.wantMsg)
			}
			d := openDir(t, dir)
			if n := checkClosed(t, d.Store()); n != 0 {
				t.Errorf("refused push stored %d objects", n)
			}
			if l, _ := d.ListRefs(ctx); len(l.Refs) != 0 {
				t.Errorf("refused push left refs %v", l.Refs)
			}
			// The ref update alone is refused as well.
			mustIs(t, r.UpdateRef(ctx, "refs/heads/main", objects.Zero, src.first), tc.want)
		})
	}
}

// TestServerHostileRequests sends malformed and oversized requests; each
// gets a 4xx status, an error code and one line saying what is wrong.
func TestServerHostileRequests(t *testing.T) {
	src := newSource(t)
	dir := newBacking(t, implementation{})
	seed(t, dir, src.book.Objects, transport.RefUpdate{Name: "refs/heads/main", New: src.first})
	srv := httptest.NewServer(transport.NewServer(openDir(t, dir), transport.ServerOptions{Token: "tok"}))
	defer srv.Close()

	id := src.first
	hugeRecord := append(append([]byte(nil), id[:]...), 0xff, 0xff, 0xff, 0xff)
	tests := []struct {
		name, method, path string
		body               []byte
		status             int
		code, msg          string
	}{
		{"has: ragged body", "POST", "/objects/has", make([]byte, 33), 400, "bad-request", "not a whole number"},
		{"has: too many", "POST", "/objects/has", make([]byte, (transport.MaxHasIDs+1)*objects.IDSize), 413, "too-large", "exceeds"},
		{"get: too many", "POST", "/objects/get", make([]byte, (transport.MaxGetIDs+1)*objects.IDSize), 413, "too-large", "exceeds"},
		{"get: twice", "POST", "/objects/get", append(id[:], id[:]...), 400, "bad-request", "twice"},
		{"get: missing", "POST", "/objects/get", src.second[:], 404, "not-found", src.second.String()},
		{"put: huge record", "POST", "/objects/put", hugeRecord, 400, "bad-request", "exceeds the limit"},
		{"put: cut record", "POST", "/objects/put", hugeRecord[:20], 400, "bad-request", "cut"},
		{"update: not JSON", "POST", "/refs/update", []byte("refs/heads/x"), 400, "bad-request", "not valid JSON"},
		{"update: unknown field", "POST", "/refs/update", []byte(`{"name":"refs/heads/x","force":true}`), 400, "bad-request", "unknown field"},
		{"update: too large", "POST", "/refs/update", bytes.Repeat([]byte(" "), 20<<10), 413, "too-large", "exceeds"},
		{"update: dot-dot", "POST", "/refs/update", []byte(`{"name":"refs/heads/a..b","old":"` + objects.Zero.String() + `","new":"` + id.String() + `"}`), 400, "invalid-name", `".."`},
		{"object: not hex", "GET", "/objects/zz", nil, 404, "not-found", "not a lowercase object ID"},
		{"object: upper case", "GET", "/objects/" + strings.ToUpper(id.String()), nil, 404, "not-found", "not a lowercase"},
		{"object: bad fan-out", "GET", "/objects/abc/" + id.String()[3:], nil, 404, "not-found", "not a lowercase"},
		{"object: missing", "GET", "/objects/" + src.second.String(), nil, 404, "not-found", "not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer tok")
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || resp.Header.Get("Sbuml-Error") != tc.code {
				t.Errorf("status %d, code %q; want %d, %q (%s)", resp.StatusCode, resp.Header.Get("Sbuml-Error"), tc.status, tc.code, body)
			}
			msg := string(body)
			if strings.Count(msg, "\n") != 1 || !strings.HasSuffix(msg, "\n") || !strings.Contains(msg, tc.msg) {
				t.Errorf("body %q is not one line saying %q", msg, tc.msg)
			}
		})
	}
}

// TestServerServesStaticLayout reads objects and refs from a smart
// server by the paths of a published directory.
func TestServerServesStaticLayout(t *testing.T) {
	ctx := context.Background()
	src := newSource(t)
	dir := newBacking(t, implementation{})
	seed(t, dir, src.book.Objects, transport.RefUpdate{Name: "refs/heads/main", New: src.second})
	srv := httptest.NewServer(transport.NewServer(openDir(t, dir), transport.ServerOptions{}))
	defer srv.Close()
	local := newLocal(t)
	st, err := transport.Fetch(ctx, local.Objects, transport.NewStatic(srv.URL, srv.Client()), []objects.ID{src.second}, transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := sum(reachable(t, src.book.Objects, src.second), nil); st.Objects != int64(n) {
		t.Errorf("fetched %d objects, want %d", st.Objects, n)
	}
	resp, err := srv.Client().Get(srv.URL + "/objects/" + src.first.String())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if _, err := objects.Unseal(src.first, b); err != nil {
		t.Errorf("GET /objects/<hex>: %v", err)
	}
}

// TestOpenDetects checks that Open tells the kinds of remote apart.
func TestOpenDetects(t *testing.T) {
	ctx := context.Background()
	src := newSource(t)
	book := newBacking(t, implementation{})
	pub := newBacking(t, implementation{published: true})
	seed(t, pub, src.book.Objects, transport.RefUpdate{Name: "refs/heads/main", New: src.first})
	smart := httptest.NewServer(transport.NewServer(openDir(t, book), transport.ServerOptions{}))
	defer smart.Close()
	static := httptest.NewServer(http.FileServer(http.Dir(pub)))
	defer static.Close()
	other := httptest.NewServer(http.NotFoundHandler())
	defer other.Close()

	for _, tc := range []struct {
		url, want string
	}{
		{book, "*transport.Dir"},
		{"file://" + pub, "*transport.Dir"},
		{smart.URL, "*transport.Smart"},
		{smart.URL + "/", "*transport.Smart"},
		{static.URL, "*transport.Static"},
	} {
		r, err := transport.Open(ctx, tc.url, transport.OpenOptions{})
		if err != nil {
			t.Errorf("Open(%s): %v", tc.url, err)
			continue
		}
		if got := typeName(r); got != tc.want {
			t.Errorf("Open(%s) = %s, want %s", tc.url, got, tc.want)
		}
		r.Close()
	}
	for _, tc := range []struct{ url, msg string }{
		{other.URL, "neither an sbuml server"},
		{t.TempDir(), "neither a scrapbook"},
		{"ftp://example.org/x", "unsupported URL scheme"},
		{smart.URL + "/?x=1", "query"},
	} {
		if _, err := transport.Open(ctx, tc.url, transport.OpenOptions{}); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("Open(%s) = %v; want an error saying %q", tc.url, err, tc.msg)
		}
	}
}

func typeName(r transport.Remote) string {
	switch r.(type) {
	case *transport.Dir:
		return "*transport.Dir"
	case *transport.Smart:
		return "*transport.Smart"
	case *transport.Static:
		return "*transport.Static"
	}
	return "?"
}

// dyingHandler passes requests to h until budget bytes of object data
// have been served, then dies: the response being written is cut off and
// every later request fails.
type dyingHandler struct {
	h      http.Handler
	mu     sync.Mutex
	budget int
	dead   bool
}

func (d *dyingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	dead := d.dead
	d.mu.Unlock()
	if dead {
		panic(http.ErrAbortHandler)
	}
	d.h.ServeHTTP(&dyingWriter{ResponseWriter: w, d: d}, r)
}

type dyingWriter struct {
	http.ResponseWriter
	d *dyingHandler
}

func (w *dyingWriter) Write(p []byte) (int, error) {
	w.d.mu.Lock()
	if w.d.budget < len(p) {
		w.d.dead = true
	}
	w.d.budget -= len(p)
	dead := w.d.dead
	w.d.mu.Unlock()
	if dead {
		panic(http.ErrAbortHandler)
	}
	return w.ResponseWriter.Write(p)
}

// TestFetchResumes cuts a fetch off half-way through by killing the
// server, then fetches again: the second fetch receives only what the
// first did not store.
func TestFetchResumes(t *testing.T) {
	ctx := context.Background()
	src := newSource(t)
	dir := newBacking(t, implementation{})
	seed(t, dir, src.book.Objects, transport.RefUpdate{Name: "refs/heads/main", New: src.second})
	all := reachable(t, src.book.Objects, src.second)
	total, totalBytes := sum(all, nil)

	dying := &dyingHandler{h: transport.NewServer(openDir(t, dir), transport.ServerOptions{}), budget: int(totalBytes / 2)}
	srv := httptest.NewServer(dying)
	defer srv.Close()
	local := newLocal(t)
	st1, err := transport.Fetch(ctx, local.Objects, transport.NewSmart(srv.URL, "", srv.Client()), []objects.ID{src.second}, transport.Options{})
	if err == nil {
		t.Fatal("fetch from a dying server succeeded")
	}
	t.Logf("first fetch: %v", err)
	checkClosed(t, local.Objects)
	var have int64
	local.Objects.List(ctx, func(_ objects.ID, size int64) error {
		have += size
		return nil
	})
	if have < totalBytes/4 {
		t.Fatalf("the first fetch kept only %d of %d bytes", have, totalBytes)
	}

	live := httptest.NewServer(transport.NewServer(openDir(t, dir), transport.ServerOptions{}))
	defer live.Close()
	st2, err := transport.Fetch(ctx, local.Objects, transport.NewSmart(live.URL, "", live.Client()), []objects.ID{src.second}, transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if st2.ObjectBytes != totalBytes-have {
		t.Errorf("second fetch received %d object bytes; want only the %d missing", st2.ObjectBytes, totalBytes-have)
	}
	if framing := st2.Objects * (objects.IDSize + 4); st2.BytesReceived > st2.ObjectBytes+framing {
		t.Errorf("second fetch received %d bytes on the wire for %d object bytes", st2.BytesReceived, st2.ObjectBytes)
	}
	if got := reachable(t, local.Objects, src.second); len(got) != total {
		t.Errorf("after resuming, local has %d of %d objects", len(got), total)
	}
	checkClosed(t, local.Objects)
	t.Logf("%d objects, %d bytes in all; the first fetch received %d bytes and kept %d; the second received %d (%d on the wire)",
		total, totalBytes, st1.ObjectBytes, have, st2.ObjectBytes, st2.BytesReceived)
}

// TestPushManyBatches pushes more objects than fit in one batch, so
// that batches of streams must wait for the batches of their chunks; the
// receiver refuses any object that comes before what it references.
func TestPushManyBatches(t *testing.T) {
	if testing.Short() {
		t.Skip("imports thousands of files")
	}
	ctx := context.Background()
	work := t.TempDir()
	files := map[string]int{}
	for i := 0; i < 1500; i++ {
		files[fmt.Sprintf("d%02d/f%04d", i%20, i)] = 100 + i%300
	}
	writeFiles(t, work, 9, files)
	book := newLocal(t)
	res, err := book.Import(ctx, work, sbuml.SnapshotOptions{Branch: "main", Message: "many"})
	if err != nil {
		t.Fatal(err)
	}
	dir := newBacking(t, implementation{})
	srv := httptest.NewServer(transport.NewServer(openDir(t, dir), transport.ServerOptions{Token: "t"}))
	defer srv.Close()
	r := transport.NewSmart(srv.URL, "t", srv.Client())
	_, st, err := transport.Push(ctx, book.Objects, r, []transport.RefUpdate{{Name: "refs/heads/main", New: res.ID}}, transport.Options{Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d objects: %s", st.Objects, st.Summary("sent"))
	n, _ := sum(reachable(t, book.Objects, res.ID), nil)
	if st.Objects != int64(n) || n <= 4096 {
		t.Errorf("sent %d objects of %d (want more than one batch of 4096)", st.Objects, n)
	}
	d := openDir(t, dir)
	if got := reachable(t, d.Store(), res.ID); len(got) != n {
		t.Errorf("remote has %d objects of %d", len(got), n)
	}
}

// TestServerSeesNewPacks serves a scrapbook that another process (here:
// another store on the same directory) writes to after the server looked:
// the server must find the new objects.
func TestServerSeesNewPacks(t *testing.T) {
	ctx := context.Background()
	src := newSource(t)
	dir := newBacking(t, implementation{})
	srv := httptest.NewServer(transport.NewServer(openDir(t, dir), transport.ServerOptions{}))
	defer srv.Close()
	r := transport.NewSmart(srv.URL, "", srv.Client())
	if h, err := r.Has(ctx, []objects.ID{src.first}); err != nil || h[0] {
		t.Fatalf("Has before = %v, %v", h, err)
	}
	seed(t, dir, src.book.Objects, transport.RefUpdate{Name: "refs/heads/main", New: src.second})
	if h, err := r.Has(ctx, []objects.ID{src.first}); err != nil || !h[0] {
		t.Fatalf("Has after another writer stored it = %v, %v", h, err)
	}
	local := newLocal(t)
	if _, err := transport.Fetch(ctx, local.Objects, r, []objects.ID{src.second}, transport.Options{}); err != nil {
		t.Fatal(err)
	}
}

// stallingHandler passes requests to h until budget bytes of
// /objects/get responses have gone out, then stops sending (as a stuck
// network would) until the client hangs up. It records the objects
// whose records went out whole before the stall.
type stallingHandler struct {
	h       http.Handler
	mu      sync.Mutex
	budget  int
	sent    map[objects.ID][]byte // records sent whole
	stalled chan struct{}
	once    sync.Once
}

func (s *stallingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/objects/get" {
		s.h.ServeHTTP(w, r)
		return
	}
	s.h.ServeHTTP(&stallingWriter{ResponseWriter: w, s: s, r: r}, r)
}

type stallingWriter struct {
	http.ResponseWriter
	s   *stallingHandler
	r   *http.Request
	out []byte // sent and not yet parsed into whole records
}

func (w *stallingWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	stall := w.s.budget < len(p)
	if !stall {
		w.s.budget -= len(p)
		// Note the records this write completes (36-byte header: ID,
		// big-endian length; then the stored form).
		w.out = append(w.out, p...)
		for len(w.out) >= objects.IDSize+4 {
			n := int(w.out[32])<<24 | int(w.out[33])<<16 | int(w.out[34])<<8 | int(w.out[35])
			if len(w.out) < objects.IDSize+4+n {
				break
			}
			var id objects.ID
			copy(id[:], w.out)
			w.s.sent[id] = bytes.Clone(w.out[objects.IDSize+4 : objects.IDSize+4+n])
			w.out = w.out[objects.IDSize+4+n:]
		}
	}
	w.s.mu.Unlock()
	if stall {
		w.s.once.Do(func() { close(w.s.stalled) })
		<-w.r.Context().Done()
		panic(http.ErrAbortHandler)
	}
	n, err := w.ResponseWriter.Write(p)
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush() // on its way to the client, as far as the server knows
	}
	return n, err
}

// slowStore is a local store that takes a while for every Put, so that
// a fetch lags behind what the server already sent.
type slowStore struct {
	objects.Store
}

func (s slowStore) Put(ctx context.Context, id objects.ID, stored []byte) error {
	time.Sleep(3 * time.Millisecond)
	return s.Store.Put(ctx, id, stored)
}

// TestFetchInterruptedKeepsWhatArrived cancels a fetch the moment its
// server stalls half-way, while the client still lags behind what the
// server sent: every object sent whole before the cancellation must be
// stored, unless an object it references is missing.
func TestFetchInterruptedKeepsWhatArrived(t *testing.T) {
	ctx := context.Background()
	src := newSource(t)
	dir := newBacking(t, implementation{})
	seed(t, dir, src.book.Objects, transport.RefUpdate{Name: "refs/heads/main", New: src.second})
	_, totalBytes := sum(reachable(t, src.book.Objects, src.second), nil)

	stalling := &stallingHandler{h: transport.NewServer(openDir(t, dir), transport.ServerOptions{}),
		budget: int(totalBytes / 2), sent: map[objects.ID][]byte{}, stalled: make(chan struct{})}
	srv := httptest.NewServer(stalling)
	defer srv.Close()
	local := newLocal(t)
	fetchCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-stalling.stalled
		cancel()
	}()
	start := time.Now()
	_, err := transport.Fetch(fetchCtx, slowStore{local.Objects}, transport.NewSmart(srv.URL, "", srv.Client()), []objects.ID{src.second}, transport.Options{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("fetch cancelled half-way: err = %v, want context.Canceled", err)
	}
	t.Logf("the cancelled fetch took %v: %v", time.Since(start), err)
	checkClosed(t, local.Objects)

	stalling.mu.Lock()
	defer stalling.mu.Unlock()
	var kept, lost int
	for id, stored := range stalling.sent {
		if has(t, local.Objects, id) {
			kept++
			continue
		}
		enc, err := objects.Unseal(id, stored)
		if err != nil {
			t.Fatal(err)
		}
		_, refs, err := objects.Refs(enc)
		if err != nil {
			t.Fatal(err)
		}
		missing := false
		for _, r := range refs {
			missing = missing || !has(t, local.Objects, r.ID)
		}
		if !missing {
			t.Errorf("object %s was sent whole before the fetch was cancelled, and everything it references is here, but it was not kept", id)
		}
		lost++
	}
	if kept == 0 {
		t.Error("the cancelled fetch kept nothing")
	}
	t.Logf("%d objects were sent whole before the stall; %d kept, %d wait for objects that did not arrive", len(stalling.sent), kept, lost)
}

// TestServerDamagedObject serves a scrapbook one of whose packed objects
// is damaged, compressed (caught by the pack's CRC) or not (caught by the
// server's check against its ID): the server cannot send it, and the
// client says so, naming the object and the server's reason, not as a
// cut connection that pulling again would mend.
func TestServerDamagedObject(t *testing.T) {
	for _, compressed := range []bool{true, false} {
		t.Run(fmt.Sprintf("compressed=%v", compressed), func(t *testing.T) {
			ctx := context.Background()
			src := newSource(t)
			// A snapshot on top with text in it, which is stored compressed.
			work := t.TempDir()
			if err := os.WriteFile(filepath.Join(work, "notes.txt"), bytes.Repeat([]byte("a page of notes\n"), 4096), 0o644); err != nil {
				t.Fatal(err)
			}
			r, err := src.book.Import(ctx, work, sbuml.SnapshotOptions{Branch: "main", Message: "notes"})
			if err != nil {
				t.Fatal(err)
			}
			tip := r.ID
			dir := newBacking(t, implementation{})
			seed(t, dir, src.book.Objects, transport.RefUpdate{Name: "refs/heads/main", New: tip})
			var victim objects.ID
			for id := range reachable(t, src.book.Objects, tip) {
				stored, err := src.book.Objects.Get(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if objects.IsCompressed(stored) == compressed {
					victim = id
					break
				}
			}
			if victim.IsZero() {
				t.Fatal("no object to damage")
			}
			damaged := corruptInPacks(t, filepath.Join(dir, "objects", "pack"), victim)
			if damaged == 0 {
				t.Fatalf("object %s is in no pack of %s", victim.Short(), dir)
			}
			var logged []string
			var mu sync.Mutex
			srv := httptest.NewServer(transport.NewServer(openDir(t, dir), transport.ServerOptions{Log: func(format string, args ...any) {
				mu.Lock()
				logged = append(logged, fmt.Sprintf(format, args...))
				mu.Unlock()
			}}))
			defer srv.Close()
			local := newLocal(t)
			_, err = transport.Fetch(ctx, local.Objects, transport.NewSmart(srv.URL, "", srv.Client()), []objects.ID{tip}, transport.Options{})
			if !errors.Is(err, objects.ErrCorrupt) || !strings.Contains(err.Error(), "cannot send objects it has (one is damaged in its scrapbook)") {
				t.Fatalf("fetch of a damaged object: %v", err)
			}
			t.Logf("fetch of a damaged object: %v", err)
			mu.Lock()
			if log := strings.Join(logged, "\n"); !strings.Contains(log, victim.String()) || !strings.Contains(log, "mismatch") {
				t.Errorf("the server log does not say what is wrong: %q", logged)
			}
			mu.Unlock()
			if has(t, local.Objects, victim) {
				t.Errorf("the damaged object was stored")
			}
			checkClosed(t, local.Objects)
		})
	}
}
