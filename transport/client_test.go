package transport_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/transport"
)

// shortLimits end a stalled request in a fraction of a second.
var shortLimits = transport.Limits{
	ResponseTimeout: 500 * time.Millisecond,
	LowSpeedTime:    500 * time.Millisecond,
	Attempts:        3,
}

// A server that answers 503 or 429 with a short Retry-After, or drops
// connections, is asked again; one that asks for a long wait, or never
// answers, is not.
func TestClientRetries(t *testing.T) {
	ctx := context.Background()
	src := newSource(t)
	dir := newBacking(t, implementation{})
	seed(t, dir, src.book.Objects, transport.RefUpdate{Name: "refs/heads/main", New: src.second})
	honest := transport.NewServer(openDir(t, dir), transport.ServerOptions{})
	tests := []struct {
		name    string
		fail    func(w http.ResponseWriter)
		fails   int // requests that fail first
		wantErr string
	}{
		{"503 then fine", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
		}, 2, ""},
		{"429 then fine", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusTooManyRequests)
		}, 1, ""},
		{"dropped then fine", func(http.ResponseWriter) { panic(http.ErrAbortHandler) }, 2, ""},
		{"busy for an hour", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusServiceUnavailable)
		}, 1, "503"},
		{"always dropped", func(http.ResponseWriter) { panic(http.ErrAbortHandler) }, 1000, "EOF"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/refs" && n.Add(1) <= int64(tc.fails) {
					tc.fail(w)
					return
				}
				honest.ServeHTTP(w, r)
			}))
			defer srv.Close()
			r, err := transport.Open(ctx, srv.URL, transport.OpenOptions{Client: srv.Client(), Limits: transport.Limits{Attempts: 3}})
			if err != nil {
				t.Fatal(err)
			}
			_, err = r.ListRefs(ctx)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("ListRefs: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("ListRefs: %v; want an error saying %q", err, tc.wantErr)
			}
			// Go's transport itself sends a GET again once if a reused
			// connection drops it: count only the answers.
			if want := int64(min(tc.fails+1, 3)); tc.name != "busy for an hour" && tc.wantErr == "" && !strings.HasPrefix(tc.name, "dropped") && n.Load() != want {
				t.Errorf("the server was asked %d times, want %d", n.Load(), want)
			}
			if tc.name == "busy for an hour" && n.Load() != 1 {
				t.Errorf("a server asking for an hour's wait was asked %d times", n.Load())
			}
		})
	}
}

// cutOnce cuts off the first response to a request of path whose body
// passes at bytes; other requests pass to h.
type cutOnce struct {
	h    http.Handler
	path string
	at   int
	mu   sync.Mutex
	done bool
	// bodies records the size of each request body of path, and cutBody
	// that of the request cut off.
	bodies  []int64
	cutBody int64
}

func (c *cutOnce) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != c.path {
		c.h.ServeHTTP(w, r)
		return
	}
	c.mu.Lock()
	c.bodies = append(c.bodies, r.ContentLength)
	done := c.done
	c.mu.Unlock()
	if done {
		c.h.ServeHTTP(w, r)
		return
	}
	c.h.ServeHTTP(&cutWriter{ResponseWriter: w, left: c.at, cut: func() {
		c.mu.Lock()
		c.done, c.cutBody = true, r.ContentLength
		c.mu.Unlock()
	}}, r)
}

// cutWriter cuts the connection once left bytes are written, telling cut.
type cutWriter struct {
	http.ResponseWriter
	left int
	cut  func()
}

func (w *cutWriter) Write(p []byte) (int, error) {
	if len(p) > w.left {
		w.ResponseWriter.Write(p[:w.left])
		w.ResponseWriter.(http.Flusher).Flush()
		if w.cut != nil {
			w.cut()
		}
		panic(http.ErrAbortHandler)
	}
	w.left -= len(p)
	return w.ResponseWriter.Write(p)
}

// A response to objects/get cut off in passing is asked again for the
// objects it did not bring; the fetch completes.
func TestGetResumesCutOffResponse(t *testing.T) {
	ctx := context.Background()
	src := newSource(t)
	dir := newBacking(t, implementation{})
	seed(t, dir, src.book.Objects, transport.RefUpdate{Name: "refs/heads/main", New: src.first})
	cut := &cutOnce{h: transport.NewServer(openDir(t, dir), transport.ServerOptions{}), path: "/objects/get", at: 200 << 10}
	srv := httptest.NewServer(cut)
	defer srv.Close()
	local := newLocal(t)
	if _, err := transport.Fetch(ctx, local.Objects, transport.NewSmart(srv.URL, "", srv.Client()), []objects.ID{src.first}, transport.Options{Concurrency: 1}); err != nil {
		t.Fatal(err)
	}
	checkClosed(t, local.Objects)
	t.Logf("objects/get bodies: %v, the one of %d bytes cut off", cut.bodies, cut.cutBody)
	if !cut.done {
		t.Fatal("no response was cut off")
	}
	// With one request at a time, the request after the cut asks for
	// what the cut one did not bring.
	for i, n := range cut.bodies {
		if n == cut.cutBody && i+1 < len(cut.bodies) && cut.bodies[i+1] >= n {
			t.Errorf("after a cut-off request of %d bytes came one of %d", n, cut.bodies[i+1])
		}
	}
}

// A pack download cut off in passing goes on from where it stopped.
func TestStaticPackDownloadResumes(t *testing.T) {
	ctx := context.Background()
	src := newSource(t)
	dir := newBacking(t, implementation{published: true})
	seed(t, dir, src.book.Objects, transport.RefUpdate{Name: "refs/heads/main", New: src.first})
	packs, _ := filepath.Glob(filepath.Join(dir, transport.PackDir, "*.pack"))
	if len(packs) != 1 {
		t.Fatalf("%d packs published", len(packs))
	}
	files := http.FileServer(http.Dir(dir))
	var packBytes, served, loose atomic.Int64
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, ".pack") {
			if strings.HasPrefix(r.URL.Path, "/objects/") {
				loose.Add(1)
			}
			files.ServeHTTP(w, r)
			return
		}
		if rg := r.Header.Get("Range"); !strings.HasSuffix(rg, "-") {
			r.Header.Del("Range") // whole packs, but the rest of one when asked
		}
		cw := &countWriter{ResponseWriter: w, n: &served}
		cutNow := false
		once.Do(func() { cutNow = true })
		if cutNow {
			files.ServeHTTP(&cutWriter{ResponseWriter: cw, left: 400 << 10}, r)
			return
		}
		files.ServeHTTP(cw, r)
	}))
	defer srv.Close()
	fi, err := os.Stat(packs[0])
	if err != nil {
		t.Fatal(err)
	}
	packBytes.Store(fi.Size())
	local := newLocal(t)
	if _, err := transport.Fetch(ctx, local.Objects, transport.NewStatic(srv.URL, srv.Client()), []objects.ID{src.first}, transport.Options{}); err != nil {
		t.Fatal(err)
	}
	checkClosed(t, local.Objects)
	t.Logf("the server sent %d bytes of a %d-byte pack, cut off once, and %d loose objects", served.Load(), packBytes.Load(), loose.Load())
	if loose.Load() > 0 {
		t.Errorf("%d objects were downloaded on their own: the pack download was given up", loose.Load())
	}
	if served.Load() > packBytes.Load()*11/10 {
		t.Errorf("the server sent %d bytes of a %d-byte pack: the download started over", served.Load(), packBytes.Load())
	}
}

type countWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w *countWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n.Add(int64(n))
	return n, err
}

func (w *countWriter) Flush() { w.ResponseWriter.(http.Flusher).Flush() }

// A server that accepts and never answers ends the request within
// Limits.ResponseTimeout, with a line that says so.
func TestClientGivesUpOnSilence(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	start := time.Now()
	_, err = transport.Open(context.Background(), "http://"+ln.Addr().String()+"/", transport.OpenOptions{Limits: shortLimits})
	if err == nil || !strings.Contains(err.Error(), "gave up: no answer within 500ms") {
		t.Fatalf("Open of a silent server: %v", err)
	}
	var timeout interface{ Timeout() bool }
	if !errors.As(err, &timeout) || !timeout.Timeout() {
		t.Errorf("the error is not a timeout: %#v", err)
	}
	t.Logf("gave up after %v: %v", time.Since(start).Round(10*time.Millisecond), err)
}

// Downloads follow redirects, but not from https to http; writes follow
// none (see TestHostileRedirect in cmd/sbuml).
func TestClientRedirects(t *testing.T) {
	ctx := context.Background()
	src := newSource(t)
	dir := newBacking(t, implementation{published: true})
	seed(t, dir, src.book.Objects, transport.RefUpdate{Name: "refs/heads/main", New: src.first})
	plain := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer plain.Close()
	moved := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+r.URL.Path, http.StatusMovedPermanently)
	}))
	defer moved.Close()
	if _, err := transport.Open(ctx, moved.URL, transport.OpenOptions{}); err != nil {
		t.Errorf("Open of a published directory that moved: %v", err)
	}
	downgrade := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+r.URL.Path, http.StatusFound)
	}))
	defer downgrade.Close()
	_, err := transport.Open(ctx, downgrade.URL, transport.OpenOptions{Client: downgrade.Client()})
	if err == nil || !strings.Contains(err.Error(), "from https to plain http") {
		t.Errorf("Open of an https remote that redirects to http: %v", err)
	}
}
