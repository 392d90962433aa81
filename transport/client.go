package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// NewHTTPClient returns an HTTP client whose connections obey the
// connection timeout of l. (The other limits are kept by every request
// a remote sends, whatever its client.)
func NewHTTPClient(l Limits) *http.Client {
	l = l.withDefaults()
	dialer := &net.Dialer{Timeout: l.ConnectTimeout, KeepAlive: 30 * time.Second}
	return &http.Client{Transport: &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         dialer.DialContext,
		TLSHandshakeTimeout: l.ConnectTimeout,
		IdleConnTimeout:     90 * time.Second,
		MaxIdleConnsPerHost: 16,
		ForceAttemptHTTP2:   true,
	}}
}

// client sends the HTTP requests of one remote. Whatever http.Client it
// is given, every request is bounded by Limits (see watchdog), failures
// in passing are retried, and a redirect is followed only by a GET or
// HEAD, to http or https and never from https to http: requests that
// write carry the bearer token and are POSTs, so the token never goes
// anywhere but the remote's own URL.
type client struct {
	hc     *http.Client
	limits Limits
}

// newClient returns a client sending through hc (nil: a client from
// NewHTTPClient) within l.
func newClient(hc *http.Client, l Limits) *client {
	l = l.withDefaults()
	if hc == nil {
		hc = NewHTTPClient(l)
	}
	own := *hc
	own.CheckRedirect = checkRedirect
	return &client{hc: &own, limits: l}
}

// errRedirect is the error of a redirect a client does not follow.
var errRedirect = errors.New("redirect not followed")

// checkRedirect lets GET and HEAD follow up to 10 redirects to http or
// https, never from https to http; anything else is not followed, and
// the caller sees the redirect as the answer.
func checkRedirect(req *http.Request, via []*http.Request) error {
	first := via[0]
	switch {
	case first.Method != http.MethodGet && first.Method != http.MethodHead:
		return http.ErrUseLastResponse
	case len(via) >= 10:
		return fmt.Errorf("%w: more than 10 redirects", errRedirect)
	case req.URL.Scheme != "http" && req.URL.Scheme != "https":
		return fmt.Errorf("%w: to %s, which is not http or https", errRedirect, req.URL.Redacted())
	case first.URL.Scheme == "https" && req.URL.Scheme == "http":
		return fmt.Errorf("%w: from https to plain http (%s)", errRedirect, req.URL.Redacted())
	}
	return nil
}

// request is one HTTP request of a remote.
type request struct {
	method string
	url    string
	body   []byte
	header http.Header
	// idempotent requests may be sent again after any failure in
	// passing; others only when the server surely did not act on them
	// (the connection was refused, or the server answered 429 or 503).
	idempotent bool
}

// do sends r, again after failures in passing (see Limits.Attempts),
// and returns the response, whatever its status, other than a redirect.
// sent is called with the size of the body each time it is sent. The
// response body is bounded by the watchdog until it is closed.
func (c *client) do(ctx context.Context, r request, sent func(int64)) (*http.Response, error) {
	for attempt := 1; ; attempt++ {
		resp, err := c.once(ctx, r)
		if sent != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			sent(int64(len(r.body)))
		}
		if err == nil && resp.StatusCode >= 300 && resp.StatusCode < 400 {
			resp.Body.Close()
			return nil, fmt.Errorf("%s %s: the server redirects to %s, which sbuml follows only for downloads; use that URL if you trust it",
				r.method, r.url, resp.Header.Get("Location"))
		}
		wait, again := c.retry(r, resp, err, attempt)
		if !again {
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", r.method, r.url, err)
			}
			return resp, nil
		}
		if resp != nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("%s", resp.Status)
			}
			return nil, fmt.Errorf("%s %s: %w (interrupted while waiting to try again)", r.method, r.url, err)
		}
	}
}

// retry decides whether a request that got resp or err is sent again,
// and after how long.
func (c *client) retry(r request, resp *http.Response, err error, attempt int) (time.Duration, bool) {
	if attempt >= c.limits.Attempts {
		return 0, false
	}
	wait := time.Duration(float64(250*time.Millisecond<<attempt) * (0.75 + rand.Float64()/2))
	if err != nil {
		return wait, errors.Is(err, syscall.ECONNREFUSED) || r.idempotent && transient(err)
	}
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
	case http.StatusBadGateway, http.StatusGatewayTimeout:
		if !r.idempotent {
			return 0, false
		}
	default:
		return 0, false
	}
	if after, ok := retryAfter(resp.Header.Get("Retry-After")); ok {
		if after > MaxRetryAfter {
			return 0, false
		}
		wait = after
	}
	return wait, true
}

// retryAfter parses a Retry-After header: seconds, or an HTTP date.
func retryAfter(v string) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0), true
	}
	return 0, false
}

// transient reports whether err is a failure in passing that the same
// request may well not meet again: a connection reset or cut short.
func transient(err error) bool {
	var timeout *timeoutError
	if errors.As(err, &timeout) {
		return false // a server that stalled once stalls again
	}
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// once sends r once, under a watchdog.
func (c *client) once(ctx context.Context, r request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	w := startWatchdog(c.limits, cancel, len(r.body) > 0)
	var body io.Reader
	if r.body != nil {
		body = &watchedReader{r: bytes.NewReader(r.body), w: w, left: int64(len(r.body))}
	}
	req, err := http.NewRequestWithContext(ctx, r.method, r.url, body)
	if err != nil {
		w.stop()
		cancel(nil)
		return nil, err
	}
	req.ContentLength = int64(len(r.body))
	for k, v := range r.header {
		req.Header[k] = v
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		w.stop()
		cancel(nil)
		return nil, w.explain(unwrapURL(err))
	}
	w.receiving()
	resp.Body = &watchedBody{ReadCloser: resp.Body, w: w, cancel: cancel}
	return resp, nil
}

// unwrapURL drops the *url.Error around err, whose message repeats the
// method and URL that callers name themselves.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// A timeoutError is the end the watchdog put to a request.
type timeoutError struct{ msg string }

func (e *timeoutError) Error() string { return e.msg }
func (e *timeoutError) Timeout() bool { return true }

// Phases of a request, as the watchdog sees them.
const (
	phaseSending   = iota // the request body is being sent
	phaseWaiting          // for the response's status and headers
	phaseReceiving        // the response body is being read
)

// watchdog ends a request that does not answer within ResponseTimeout,
// or whose body, either way, moves fewer than LowSpeedLimit bytes a
// second over LowSpeedTime.
type watchdog struct {
	limits Limits
	cancel context.CancelCauseFunc
	moved  atomic.Int64 // body bytes sent and received

	mu      sync.Mutex
	phase   int
	since   time.Time // when the phase began
	samples []sample  // of moved, over the last LowSpeedTime of the phase
	err     *timeoutError
	done    chan struct{}
	once    sync.Once
}

type sample struct {
	at    time.Time
	moved int64
}

func startWatchdog(l Limits, cancel context.CancelCauseFunc, sending bool) *watchdog {
	w := &watchdog{limits: l, cancel: cancel, phase: phaseWaiting, since: time.Now(), done: make(chan struct{})}
	if sending {
		w.phase = phaseSending
	}
	tick := min(time.Second, l.LowSpeedTime/8, l.ResponseTimeout/8)
	go func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-w.done:
				return
			case now := <-t.C:
				if w.check(now) {
					return
				}
			}
		}
	}()
	return w
}

// setPhase moves the request on to phase p.
func (w *watchdog) setPhase(p int) {
	w.mu.Lock()
	if w.phase < p {
		w.phase, w.since, w.samples = p, time.Now(), nil
	}
	w.mu.Unlock()
}

func (w *watchdog) receiving() { w.setPhase(phaseReceiving) }

// check looks at the request at now, ends it if it must, and reports
// whether it did.
func (w *watchdog) check(now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	moved := w.moved.Load()
	w.samples = append(w.samples, sample{now, moved})
	if w.phase == phaseWaiting {
		if now.Sub(w.since) > w.limits.ResponseTimeout {
			w.fail(fmt.Sprintf("no answer within %v (SBUML_HTTP_RESPONSE_TIMEOUT)", w.limits.ResponseTimeout))
			return true
		}
		return false
	}
	window := w.limits.LowSpeedTime
	if now.Sub(w.since) < window {
		return false
	}
	// The oldest sample at most LowSpeedTime old starts the window.
	i := 0
	for i+1 < len(w.samples) && now.Sub(w.samples[i+1].at) >= window {
		i++
	}
	w.samples = w.samples[i:]
	if moved-w.samples[0].moved < int64(window.Seconds()*float64(w.limits.LowSpeedLimit)) {
		what := "sent"
		if w.phase == phaseReceiving {
			what = "received"
		}
		w.fail(fmt.Sprintf("%d bytes %s in the last %v, under %d bytes/s (SBUML_HTTP_LOW_SPEED_LIMIT, SBUML_HTTP_LOW_SPEED_TIME)",
			moved-w.samples[0].moved, what, window, w.limits.LowSpeedLimit))
		return true
	}
	return false
}

// fail ends the request with msg. w.mu is held.
func (w *watchdog) fail(msg string) {
	w.err = &timeoutError{msg: "gave up: " + msg}
	w.cancel(w.err)
}

// explain returns the watchdog's reason if it ended the request, else err.
func (w *watchdog) explain(err error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	return err
}

// stop ends the watchdog.
func (w *watchdog) stop() { w.once.Do(func() { close(w.done) }) }

// watchedReader counts the request body as the transport reads it; once
// all of it is read, the request waits for its answer.
type watchedReader struct {
	r    io.Reader
	w    *watchdog
	left int64
}

func (r *watchedReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.w.moved.Add(int64(n))
	if r.left -= int64(n); r.left <= 0 || err != nil {
		r.w.setPhase(phaseWaiting)
	}
	return n, err
}

// watchedBody counts the response body as it is read, and ends the
// watchdog and the request's context when it is closed.
type watchedBody struct {
	io.ReadCloser
	w      *watchdog
	cancel context.CancelCauseFunc
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.w.moved.Add(int64(n))
	if err != nil && err != io.EOF {
		err = b.w.explain(err)
	}
	return n, err
}

func (b *watchedBody) Close() error {
	err := b.ReadCloser.Close()
	b.w.stop()
	b.cancel(nil)
	return err
}
