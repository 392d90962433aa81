package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ServerLimits bound what clients can make a Server hold: connections,
// requests at once, memory, and time. A zero field means its default
// (the DefaultServer constants).
type ServerLimits struct {
	// MaxConns bounds the open connections. A connection past it is
	// answered 503, with Retry-After, as soon as it has sent its
	// request's head, and closed; within two seconds in any case.
	MaxConns int
	// MaxRequests bounds the requests handled at once. A request past it
	// is answered 503, with Retry-After.
	MaxRequests int
	// MaxMemory bounds the bytes of request bodies held in memory at
	// once: ID lists and pushed objects. A request that would go past it
	// waits up to MemoryWait, then is answered 503, with Retry-After.
	MaxMemory int64
	// HeaderTimeout bounds reading a request's headers.
	HeaderTimeout time.Duration
	// IdleTimeout bounds how long a connection waits for its next request.
	IdleTimeout time.Duration
	// LowSpeedLimit and LowSpeedTime bound bodies, both ways: a request
	// body must arrive, and a response be taken, at LowSpeedLimit bytes a
	// second on average after the first LowSpeedTime, and never stall
	// for LowSpeedTime; else the connection is closed.
	LowSpeedLimit int64
	LowSpeedTime  time.Duration
}

// Defaults of ServerLimits.
const (
	DefaultServerMaxConns      = 128
	DefaultServerMaxRequests   = 16
	DefaultServerMaxMemory     = 512 << 20
	DefaultServerHeaderTimeout = 10 * time.Second
	DefaultServerIdleTimeout   = 60 * time.Second
	// MemoryWait is how long a request waits for memory other requests
	// hold (see ServerLimits.MaxMemory).
	MemoryWait = 5 * time.Second
	// retryAfterSeconds is what a busy server asks clients to wait.
	retryAfterSeconds = 2
)

func (l ServerLimits) withDefaults() ServerLimits {
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultServerMaxConns
	}
	if l.MaxRequests <= 0 {
		l.MaxRequests = DefaultServerMaxRequests
	}
	if l.MaxMemory <= 0 {
		l.MaxMemory = DefaultServerMaxMemory
	}
	if l.HeaderTimeout <= 0 {
		l.HeaderTimeout = DefaultServerHeaderTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = DefaultServerIdleTimeout
	}
	if l.LowSpeedLimit <= 0 {
		l.LowSpeedLimit = DefaultLowSpeedLimit
	}
	if l.LowSpeedTime <= 0 {
		l.LowSpeedTime = DefaultLowSpeedTime
	}
	return l
}

// HTTPServer returns an http.Server for s with its header and idle
// timeouts. Serve it on LimitListener.
func (s *Server) HTTPServer() *http.Server {
	return &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.limits.HeaderTimeout,
		IdleTimeout:       s.limits.IdleTimeout,
	}
}

// LimitListener returns ln limited to MaxConns open connections: one
// past it is answered "503 Service Unavailable", with Retry-After, and
// closed, within two seconds.
func (s *Server) LimitListener(ln net.Listener) net.Listener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, s.limits.MaxConns)}
}

type limitListener struct {
	net.Listener
	sem chan struct{}
}

// busyResponse is what a connection past the limit gets.
var busyResponse = fmt.Sprintf("HTTP/1.1 503 Service Unavailable\r\nRetry-After: %d\r\n%s: busy\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: 42\r\n\r\nthe server is busy: too many connections\r\n", retryAfterSeconds, errorHeader)

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.sem <- struct{}{}:
			return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
		default:
			go refuse(c)
		}
	}
}

// refuse answers a connection past the limit and closes it. It reads
// the request's head first (an answer before the request is one that
// clients drop as unsolicited), and what the client sends after the
// answer: closing a connection with unread data resets it, and the
// client would not see the answer. Two seconds bound it all.
func refuse(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	br := bufio.NewReaderSize(io.LimitReader(c, 64<<10), 4096)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
		if len(line) <= 2 && strings.TrimSpace(string(line)) == "" {
			break
		}
	}
	if _, err := io.WriteString(c, busyResponse); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	io.Copy(io.Discard, io.LimitReader(c, 64<<20))
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// memory is a budget of bytes that requests reserve before they hold
// them.
type memory struct {
	mu    sync.Mutex
	free  int64
	total int64
	freed chan struct{} // closed and replaced whenever bytes come back
}

func newMemory(total int64) *memory {
	return &memory{free: total, total: total, freed: make(chan struct{})}
}

// errBusy is returned when a request cannot have the memory it needs.
var errBusy = errors.New("the server is busy")

// reserve takes n bytes, waiting up to MemoryWait for other requests to
// give them back, and returns the function that gives them back.
func (m *memory) reserve(ctx context.Context, n int64) (func(), error) {
	if n > m.total {
		return nil, fmt.Errorf("%w: a request needing %d bytes, more than the server's %d", errBusy, n, m.total)
	}
	deadline := time.NewTimer(MemoryWait)
	defer deadline.Stop()
	for {
		m.mu.Lock()
		if m.free >= n {
			m.free -= n
			m.mu.Unlock()
			var once sync.Once
			return func() { once.Do(func() { m.give(n) }) }, nil
		}
		freed := m.freed
		m.mu.Unlock()
		select {
		case <-freed:
		case <-deadline.C:
			return nil, fmt.Errorf("%w: other requests hold its memory", errBusy)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (m *memory) give(n int64) {
	m.mu.Lock()
	m.free += n
	close(m.freed)
	m.freed = make(chan struct{})
	m.mu.Unlock()
}

// admit takes one of MaxRequests places for a request, or answers 503.
func (s *Server) admit(w http.ResponseWriter, r *http.Request) (release func(), ok bool) {
	select {
	case s.requests <- struct{}{}:
		return func() { <-s.requests }, true
	default:
		s.busy(w, r, "too many requests at once")
		return nil, false
	}
}

// busy answers 503 with a hint to retry.
func (s *Server) busy(w http.ResponseWriter, r *http.Request, why string) {
	w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	s.fail(w, r, http.StatusServiceUnavailable, codeBusy, "the server is busy ("+why+"); try again in a moment")
}

// paced makes r's body and w's writes keep to LowSpeedLimit after the
// first LowSpeedTime, and never stall for LowSpeedTime, by moving the
// connection's deadlines along as bytes go.
func (s *Server) paced(w http.ResponseWriter, r *http.Request) *pacedWriter {
	p := &pace{rc: http.NewResponseController(w), start: time.Now(), limit: s.limits.LowSpeedLimit, grace: s.limits.LowSpeedTime}
	r.Body = &pacedBody{ReadCloser: r.Body, p: p}
	return &pacedWriter{ResponseWriter: w, p: p}
}

// pace computes the deadlines of one request.
type pace struct {
	rc          *http.ResponseController
	start       time.Time
	limit       int64
	grace       time.Duration
	read, wrote atomic.Int64
	lagged      atomic.Bool // a body read failed: the client lags
}

// deadline is when the next byte must have moved, n bytes having moved.
func (p *pace) deadline(n int64) time.Time {
	byRate := p.start.Add(p.grace + time.Duration(float64(n)/float64(p.limit)*float64(time.Second)))
	stall := time.Now().Add(p.grace)
	if stall.Before(byRate) {
		return stall
	}
	return byRate
}

type pacedBody struct {
	io.ReadCloser
	p *pace
}

func (b *pacedBody) Read(buf []byte) (int, error) {
	b.p.rc.SetReadDeadline(b.p.deadline(b.p.read.Load()))
	n, err := b.ReadCloser.Read(buf)
	b.p.read.Add(int64(n))
	if err != nil && err != io.EOF {
		b.p.lagged.Store(true)
	}
	return n, err
}

type pacedWriter struct {
	http.ResponseWriter
	p *pace
}

// reset clears the deadlines pacing set, for the connection's next
// request; after a body that lagged, it ends the connection instead, so
// that the server does not wait for the rest of that body to read the
// next request.
func (w *pacedWriter) reset() {
	if w.p.lagged.Load() {
		w.p.rc.SetReadDeadline(time.Now())
		return
	}
	w.p.rc.SetReadDeadline(time.Time{})
	w.p.rc.SetWriteDeadline(time.Time{})
}

func (w *pacedWriter) Write(buf []byte) (int, error) {
	w.p.rc.SetWriteDeadline(w.p.deadline(w.p.wrote.Load()))
	n, err := w.ResponseWriter.Write(buf)
	w.p.wrote.Add(int64(n))
	return n, err
}

// Unwrap lets http.ResponseController reach the connection.
func (w *pacedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
