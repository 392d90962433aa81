package transport_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sbuml/sbuml/internal/s3test"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/transport"
)

// faultProxy stands between a client and the real S3 server and
// misbehaves as hook says: versitygw cannot be made to throttle, drop
// connections or ignore conditional writes, so this fake does it in
// front of the real thing. The Host header is passed on, so signatures
// stay valid.
type faultProxy struct {
	srv   *httptest.Server
	fwd   *httputil.ReverseProxy
	hook  func(p *faultProxy, w http.ResponseWriter, r *http.Request) bool
	count atomic.Int64 // faults made
}

func newFaultProxy(t *testing.T, hook func(p *faultProxy, w http.ResponseWriter, r *http.Request) bool) *faultProxy {
	target, err := url.Parse(s3test.Shared(t).Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{hook: hook}
	p.fwd = &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(target)
		pr.Out.Host = pr.In.Host
	}}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !p.hook(p, w, r) {
			p.fwd.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// open opens the remote at url through the proxy.
func (p *faultProxy) open(t *testing.T, url string, limits transport.Limits, unsafe bool) *transport.S3 {
	t.Helper()
	r, err := transport.OpenS3(context.Background(), url, transport.S3Options{Endpoint: p.srv.URL, Limits: limits, UnsafeNoConditionalWrites: unsafe})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// s3Error answers as S3 does when it refuses a request.
func s3Error(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>`+code+`</Code><Message>`+msg+`</Message></Error>`)
}

// oneLine fails the test unless err is an error of one line holding all
// of want.
func oneLine(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want one saying %q", want)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error of several lines: %q", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	t.Logf("refused: %v", err)
}

// pushAndFetch pushes src's main to r, then fetches it back through
// fetchFrom into a new scrapbook, and checks what arrived.
func pushAndFetch(t *testing.T, src *source, r, fetchFrom transport.Remote) {
	t.Helper()
	ctx := context.Background()
	if _, _, err := transport.Push(ctx, src.book.Objects, r, []transport.RefUpdate{{Name: "refs/heads/main", New: src.second}}, transport.Options{}); err != nil {
		t.Fatal(err)
	}
	local := newLocal(t)
	if _, err := transport.Fetch(ctx, local.Objects, fetchFrom, []objects.ID{src.second}, transport.Options{}); err != nil {
		t.Fatal(err)
	}
	if got, want := len(reachable(t, local.Objects, src.second)), len(reachable(t, src.book.Objects, src.second)); got != want {
		t.Errorf("fetched %d objects of the snapshot, want %d", got, want)
	}
}

// TestS3Faults: throttling and dropped connections are retried with
// backoff; what cannot be overcome is one line that says what to do.
func TestS3Faults(t *testing.T) {
	src := newSource(t)
	t.Run("Throttled", func(t *testing.T) { testThrottled(t, src) })
	t.Run("ThrottledForGood", testThrottledForGood)
	t.Run("DroppedConnections", func(t *testing.T) { testDropped(t, src) })
	t.Run("NoConditionalWrites", func(t *testing.T) { testNoConditionalWrites(t, src) })
	t.Run("Refusals", testRefusals)
}

// testThrottled answers every fifth request 503 SlowDown.
func testThrottled(t *testing.T, src *source) {
	var n atomic.Int64
	p := newFaultProxy(t, func(p *faultProxy, w http.ResponseWriter, r *http.Request) bool {
		if n.Add(1)%5 != 1 {
			return false
		}
		p.count.Add(1)
		s3Error(w, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.")
		return true
	})
	url := newS3Backing(t)
	pushAndFetch(t, src, p.open(t, url, transport.Limits{}, false), p.open(t, url, transport.Limits{}, false))
	t.Logf("%d requests answered 503 SlowDown, each retried", p.count.Load())
}

// testThrottledForGood answers every request 503 SlowDown.
func testThrottledForGood(t *testing.T) {
	p := newFaultProxy(t, func(p *faultProxy, w http.ResponseWriter, r *http.Request) bool {
		s3Error(w, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.")
		return true
	})
	_, err := p.open(t, newS3Backing(t), transport.Limits{Attempts: 2}, false).ListRefs(context.Background())
	oneLine(t, err, "throttling", "try again later")
}

// testDropped cuts the first request for each key: a ranged read half
// way through its body, a pack upload before it reaches the server, a
// ref update after the server did it.
func testDropped(t *testing.T, src *source) {
	cut := map[string]bool{}
	var mu sync.Mutex
	p := newFaultProxy(t, func(p *faultProxy, w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		first := !cut[r.Method+r.URL.Path] && (r.Header.Get("Range") != "" || strings.Contains(r.URL.Path, "/packs/") && r.Method == "PUT" || strings.Contains(r.URL.Path, "/refs/") && r.Method == "PUT")
		cut[r.Method+r.URL.Path] = true
		mu.Unlock()
		if !first {
			return false
		}
		p.count.Add(1)
		switch {
		case r.Method == "GET":
			rec := httptest.NewRecorder()
			p.fwd.ServeHTTP(rec, r)
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes()[:rec.Body.Len()/2])
		case strings.Contains(r.URL.Path, "/refs/"):
			p.fwd.ServeHTTP(httptest.NewRecorder(), r)
		}
		panic(http.ErrAbortHandler)
	})
	url := newS3Backing(t)
	pushAndFetch(t, src, p.open(t, url, transport.Limits{}, false), p.open(t, url, transport.Limits{}, false))
	t.Logf("%d requests cut off, each retried", p.count.Load())
	if l, err := openS3(t, url).ListRefs(context.Background()); err != nil || l.Get("refs/heads/main") != src.second {
		t.Fatalf("refs after the push: %v, %v", l, err)
	}
}

// testNoConditionalWrites puts a store that does not honour conditional
// writes, or ignores them, in front of the real one.
func testNoConditionalWrites(t *testing.T, src *source) {
	for _, tc := range []struct {
		name, want string
		answer     func(w http.ResponseWriter)
	}{
		{"NotImplemented", "If-None-Match: * on PutObject", func(w http.ResponseWriter) {
			s3Error(w, http.StatusNotImplemented, "NotImplemented", "A header you provided implies functionality that is not implemented.")
		}},
		{"Ignored", "it replaced an existing object", func(w http.ResponseWriter) {
			w.Header().Set("ETag", `"0123"`)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newFaultProxy(t, func(p *faultProxy, w http.ResponseWriter, r *http.Request) bool {
				if r.Method != "PUT" || r.Header.Get("If-None-Match") == "" && r.Header.Get("If-Match") == "" {
					return false
				}
				tc.answer(w)
				return true
			})
			url := newS3Backing(t)
			err := p.open(t, url, transport.Limits{}, false).Put(context.Background(), nil)
			oneLine(t, err, "does not honour", tc.want, "--unsafe-no-conditional-writes")
			r := p.open(t, url, transport.Limits{}, true)
			pushAndFetch(t, src, r, r)
		})
	}
}

// testRefusals: what no retry overcomes is one line saying what to do.
func testRefusals(t *testing.T) {
	ctx := context.Background()
	url := newS3Backing(t)
	oneLine(t, listRefs(openS3(t, "s3://"+s3test.Shared(t).Bucket(t)+"/empty")), "holds no sbuml scrapbook")
	oneLine(t, openS3(t, "s3://sbuml-no-such-bucket/x").Put(ctx, nil), "bucket sbuml-no-such-bucket does not exist")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
	oneLine(t, listRefs(openS3(t, url)), "access denied", "check the credentials")
	refused, err := transport.OpenS3(ctx, url, transport.S3Options{Endpoint: "http://127.0.0.1:1", Limits: transport.Limits{Attempts: 2}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = refused.ListRefs(ctx)
	oneLine(t, err, "cannot reach the store")
	if errors.Is(err, context.DeadlineExceeded) {
		t.Error("timed out instead of being refused")
	}
}

// listRefs returns the error of r.ListRefs.
func listRefs(r transport.Remote) error {
	_, err := r.ListRefs(context.Background())
	return err
}
