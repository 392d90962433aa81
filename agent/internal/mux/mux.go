// Package mux runs the sbuml agent protocol over a byte stream: the Hello
// handshake, request/reply calls, and sessions whose streams have
// credit-based flow control. Both ends use it: the host and the guest
// over virtio-serial, the keeper and its clients over a unix socket.
//
// An Endpoint is one side. Serve runs it over one byte stream (a link)
// until the stream fails; calling Serve again with a new stream
// reconnects. On a link, each side sends a Hello carrying a random nonce
// of its own and the last nonce it saw from the peer; a logical
// connection (Conn) exists once each side has seen the other's nonce
// acknowledged. A Hello with a nonce not seen before means the peer
// started afresh (a restored snapshot, a restarted agent): the Conn ends,
// with all its sessions and calls, and a new one begins. A malformed
// frame makes the reader scan for the next Hello and this side start
// afresh, so a garbled or hostile peer costs one log line and a
// handshake, never a crash or a wedge.
package mux

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/sbuml/sbuml/agent/internal/wire"
)

// Proto is the protocol version sent in every Hello.
const Proto = 1

// Limits that keep a misbehaving peer from using unbounded memory.
const (
	// Window is the flow-control window of every stream: a sender never
	// has more than this many bytes unread by the receiving program.
	Window = 256 << 10
	// MaxSessions bounds the open sessions of a Conn.
	MaxSessions = 64
	// MaxRequests bounds the requests from the peer handled at once.
	MaxRequests = 64
	// maxQueuedControl bounds the bytes of frames other than data
	// waiting to be written; a peer that stops reading fails the link
	// when they exceed it. (Data is bounded by the windows.)
	maxQueuedControl = 2 << 20
	// writeBatch is how many queued bytes are written at once.
	writeBatch = 64 << 10
)

// Config configures an Endpoint.
type Config struct {
	// Role names this side in its Hello and in log lines: "host",
	// "guest", "keeper", "client".
	Role string
	// Version is the agent version sent in Hello.
	Version string
	// Opener is true on the side that opens sessions; the other side
	// accepts them.
	Opener bool
	// Preamble sends wire.PreambleSize zero bytes before every Hello, for
	// streams a peer may have left holding half a frame (virtio-serial
	// across snapshots).
	Preamble bool
	// Logf logs one line; nil discards.
	Logf func(format string, args ...any)

	// The callbacks run on the goroutine reading the link and must not
	// block; nil callbacks ignore the event.

	// OnConn is called when a Conn is established.
	OnConn func(c *Conn)
	// OnRequest answers a request from the peer. It runs on a goroutine
	// of its own; ctx ends with the Conn.
	OnRequest func(ctx context.Context, c *Conn, op string, args json.RawMessage) (any, error)
	// OnOpen is called, on acceptors, for a session the peer opened.
	OnOpen func(s *Session)
	// OnCtl is called, on acceptors, for a control message of an open
	// session other than abort (resize, signal).
	OnCtl func(s *Session, op string, args json.RawMessage)
}

// ErrConnLost is wrapped by the errors of calls and sessions whose Conn
// ended: the link failed or the peer started afresh.
var ErrConnLost = errors.New("agent connection lost")

// Endpoint is one side of the protocol. It outlives links: its Conn
// changes with each handshake.
type Endpoint struct {
	cfg Config

	mu          sync.Mutex
	conn        *Conn         // established Conn, or nil
	ready       chan struct{} // closed when conn is set
	serving     bool
	nextSession uint32
}

// New returns an Endpoint; Serve runs it.
func New(cfg Config) *Endpoint {
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	return &Endpoint{cfg: cfg, ready: make(chan struct{})}
}

func (e *Endpoint) logf(format string, args ...any) {
	e.cfg.Logf(e.cfg.Role+": "+format, args...)
}

// Conn returns the established Conn, waiting for a handshake if there is
// none.
func (e *Endpoint) Conn(ctx context.Context) (*Conn, error) {
	for {
		e.mu.Lock()
		c, ready := e.conn, e.ready
		e.mu.Unlock()
		if c != nil {
			select {
			case <-c.done:
				continue // about to be replaced
			default:
				return c, nil
			}
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for the agent to connect: %w", context.Cause(ctx))
		}
	}
}

// Current returns the established Conn, or nil if there is none.
func (e *Endpoint) Current() *Conn {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.conn == nil || e.conn.ended() {
		return nil
	}
	return e.conn
}

// Serve runs the protocol over rw until reading or writing it fails or
// ctx ends, and returns why (io.EOF when the peer closed the stream).
// It then closes rw if rw is an io.Closer, which must make blocked reads
// and writes return, and waits for them. Serve calls must not overlap.
func (e *Endpoint) Serve(ctx context.Context, rw io.ReadWriter) error {
	e.mu.Lock()
	if e.serving {
		e.mu.Unlock()
		return errors.New("mux: Serve called while another Serve runs")
	}
	e.serving = true
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.serving = false
		e.mu.Unlock()
	}()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	l := &link{ep: e, rw: rw, r: wire.NewReader(rw), wake: make(chan struct{}, 1), cancel: cancel}
	l.restart() // choose a nonce before any Hello can arrive
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		if err := l.writeLoop(ctx); err != nil {
			cancel(err)
		}
	}()
	readErr := make(chan error, 1)
	go func() { readErr <- l.readLoop() }()

	var err error
	select {
	case err = <-readErr:
		readErr <- err
	case <-ctx.Done():
		err = context.Cause(ctx)
	}
	cancel(err)
	why := err.Error()
	if err == io.EOF {
		why = "the connection was closed"
	}
	l.mu.Lock()
	l.endConn(fmt.Errorf("%w: %s", ErrConnLost, why))
	l.dead = true
	l.mu.Unlock()
	if c, ok := rw.(io.Closer); ok {
		c.Close()
	}
	<-writerDone
	<-readErr
	return err
}

// link is one byte stream being served.
type link struct {
	ep *Endpoint
	rw io.ReadWriter
	r  *wire.Reader // used by the reading goroutine only

	mu      sync.Mutex
	my      uint64 // this side's nonce
	peer    uint64 // the peer's nonce, 0 until a Hello arrives
	acked   bool   // the peer's current Hello acknowledged my nonce
	conn    *Conn
	queue   []outFrame
	control int           // bytes of non-data frames in queue
	wake    chan struct{} // signals the writer
	failed  error         // set when the link must fail
	dead    bool          // Serve has returned
	cancel  context.CancelCauseFunc
}

// outFrame is an encoded frame waiting to be written. Frames of a Conn
// that has ended are dropped.
type outFrame struct {
	conn *Conn
	data bool
	b    []byte
}

// hello is the payload of a Hello frame.
type hello struct {
	Proto   int    `json:"proto"`
	Role    string `json:"role"`
	Version string `json:"version"`
	Nonce   uint64 `json:"nonce"`
	Ack     uint64 `json:"ack"`
}

func randomNonce() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		if n := binary.LittleEndian.Uint64(b[:]); n != 0 {
			return n
		}
	}
}

// restart begins afresh on this link: the Conn ends, a new nonce is
// chosen and announced, and the peer's next Hello is awaited.
func (l *link) restart() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead {
		return
	}
	l.endConn(fmt.Errorf("%w: this side restarted the connection", ErrConnLost))
	l.my, l.peer, l.acked = randomNonce(), 0, false
	l.sendHello()
}

// sendHello queues a Hello (after a preamble if configured) announcing
// l.my and acknowledging l.peer. l.mu is held.
func (l *link) sendHello() {
	e := l.ep
	p, _ := json.Marshal(hello{Proto: Proto, Role: e.cfg.Role, Version: e.cfg.Version, Nonce: l.my, Ack: l.peer})
	var b []byte
	if e.cfg.Preamble {
		b = wire.AppendPreamble(b)
	}
	l.enqueue(outFrame{b: wire.Append(b, wire.Frame{Type: wire.Hello, Payload: p})})
}

// onHello applies the peer's Hello to the handshake and returns the Conn
// it established, if it did.
func (l *link) onHello(payload []byte) *Conn {
	var h hello
	if err := json.Unmarshal(payload, &h); err != nil || h.Nonce == 0 {
		l.ep.logf("ignoring a malformed hello %q", payload)
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead {
		return nil
	}
	if h.Nonce != l.peer {
		// The peer started afresh: what was shared with its previous
		// self is gone.
		l.endConn(fmt.Errorf("%w: the %s started a new connection", ErrConnLost, h.Role))
		l.peer, l.acked = h.Nonce, h.Ack == l.my
		l.sendHello()
	} else if h.Ack == l.my {
		l.acked = true
	}
	if l.acked && l.conn == nil {
		return l.startConn(h)
	}
	return nil
}

// readLoop reads frames until the stream fails.
func (l *link) readLoop() error {
	for {
		f, err := l.r.Next()
		if n := l.r.Skipped(); n > 0 && !errors.Is(err, wire.ErrCorrupt) {
			l.ep.logf("discarded %d stale bytes before a hello", n)
		}
		if errors.Is(err, wire.ErrCorrupt) {
			l.ep.logf("%v; resynchronising", err)
			l.restart()
			continue
		}
		if err != nil {
			return err
		}
		if f.Type == wire.Hello {
			if c := l.onHello(f.Payload); c != nil && l.ep.cfg.OnConn != nil {
				l.ep.cfg.OnConn(c)
			}
			continue
		}
		l.mu.Lock()
		c, dead := l.conn, l.dead
		l.mu.Unlock()
		if dead {
			return io.EOF
		}
		if c == nil {
			continue // not established: a stale frame
		}
		if err := c.dispatch(f); err != nil {
			l.ep.logf("%v; resynchronising", err)
			l.r.Resync()
			l.restart()
		}
	}
}

// enqueue adds a frame for the writer. l.mu is held. A peer that lets
// control frames pile up fails the link.
func (l *link) enqueue(f outFrame) {
	if l.failed != nil || l.dead || (f.conn != nil && f.conn.ended()) {
		return
	}
	if !f.data {
		l.control += len(f.b)
		if l.control > maxQueuedControl {
			l.failed = fmt.Errorf("the peer does not read: %d bytes of control frames queued", l.control)
			l.cancel(l.failed)
			return
		}
	}
	l.queue = append(l.queue, f)
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// writeLoop writes queued frames, several at a time, until ctx ends or a
// write fails.
func (l *link) writeLoop(ctx context.Context) error {
	var buf []byte
	for {
		l.mu.Lock()
		if l.failed != nil {
			l.mu.Unlock()
			return l.failed
		}
		buf = buf[:0]
		n := 0
		for n < len(l.queue) && (len(buf) == 0 || len(buf)+len(l.queue[n].b) <= writeBatch) {
			f := l.queue[n]
			if !f.data {
				l.control -= len(f.b)
			}
			if f.conn == nil || !f.conn.ended() {
				buf = append(buf, f.b...)
			}
			n++
		}
		l.queue = l.queue[n:]
		if len(l.queue) == 0 {
			l.queue = nil
		}
		l.mu.Unlock()
		if len(buf) == 0 {
			select {
			case <-l.wake:
				continue
			case <-ctx.Done():
				return nil
			}
		}
		if _, err := l.rw.Write(buf); err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
}

// startConn establishes a Conn with the peer that sent h. l.mu is held.
func (l *link) startConn(h hello) *Conn {
	c := newConn(l, h)
	l.conn = c
	e := l.ep
	e.mu.Lock()
	e.conn = c
	close(e.ready)
	e.mu.Unlock()
	return c
}

// endConn ends the established Conn, if any, with err. l.mu is held.
func (l *link) endConn(err error) {
	c := l.conn
	if c == nil {
		return
	}
	l.conn = nil
	e := l.ep
	e.mu.Lock()
	if e.conn == c {
		e.conn = nil
		e.ready = make(chan struct{})
	}
	e.mu.Unlock()
	// Drop its frames that the writer has not taken yet.
	kept := l.queue[:0]
	for _, f := range l.queue {
		if f.conn == c {
			if !f.data {
				l.control -= len(f.b)
			}
			continue
		}
		kept = append(kept, f)
	}
	l.queue = kept
	c.end(err)
}
