package mux

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/sbuml/sbuml/agent/internal/wire"
)

// Conn is a logical connection: it begins with a completed handshake and
// ends when the link fails or either side starts afresh. Calls and
// sessions belong to one Conn and fail with it.
type Conn struct {
	l      *link
	peer   hello
	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{}
	closed atomic.Bool

	mu       sync.Mutex
	err      error
	calls    map[uint64]chan message
	nextCall uint64
	sessions map[uint32]*Session
	requests int
}

func newConn(l *link, h hello) *Conn {
	ctx, cancel := context.WithCancelCause(context.Background())
	return &Conn{
		l: l, peer: h, ctx: ctx, cancel: cancel, done: make(chan struct{}),
		calls: make(map[uint64]chan message), sessions: make(map[uint32]*Session),
	}
}

// PeerRole returns the role the peer announced, such as "guest".
func (c *Conn) PeerRole() string { return c.peer.Role }

// PeerVersion returns the agent version the peer announced.
func (c *Conn) PeerVersion() string { return c.peer.Version }

// Done is closed when the Conn ends.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the Conn ended, or nil while it lasts.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *Conn) ended() bool { return c.closed.Load() }

// end fails everything of the Conn with err. The link's mutex is held.
func (c *Conn) end(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	c.closed.Store(true)
	calls := c.calls
	c.calls = nil
	var sessions []*Session
	for _, s := range c.sessions {
		sessions = append(sessions, s)
	}
	c.mu.Unlock()
	close(c.done)
	c.cancel(err)
	for _, ch := range calls {
		close(ch)
	}
	for _, s := range sessions {
		s.finish(err, false, nil)
	}
}

// send queues a frame of this Conn, or fails if the Conn has ended.
func (c *Conn) send(f wire.Frame) error {
	b := wire.Append(nil, f)
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	if c.ended() {
		return c.errLocked()
	}
	c.l.enqueue(outFrame{conn: c, data: f.Type == wire.Data, b: b})
	return nil
}

// errLocked returns c.err for a Conn known to have ended.
func (c *Conn) errLocked() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// message is the payload of a Msg frame: a request, or a reply to one.
type message struct {
	ID     uint64          `json:"id"`
	Op     string          `json:"op,omitempty"`
	Args   json.RawMessage `json:"args,omitempty"`
	Reply  bool            `json:"reply,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// RemoteError is an error the peer returned for a call.
type RemoteError struct {
	Op  string // the call's operation
	Msg string // the peer's error message
}

// Error returns the peer's message.
func (e *RemoteError) Error() string { return e.Msg }

// Call sends a request and waits for the reply, which it decodes into
// result unless result is nil. It fails if ctx ends or the Conn ends
// first; an error the peer returned is a *RemoteError.
func (c *Conn) Call(ctx context.Context, op string, args, result any) error {
	a, err := json.Marshal(args)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	ch := make(chan message, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return c.err
	}
	c.nextCall++
	id := c.nextCall
	c.calls[id] = ch
	c.mu.Unlock()
	p, err := json.Marshal(message{ID: id, Op: op, Args: a})
	if err == nil && len(p) > wire.MaxPayload {
		err = fmt.Errorf("%s: request of %d bytes is too long", op, len(p))
	}
	if err == nil {
		err = c.send(wire.Frame{Type: wire.Msg, Payload: p})
	}
	if err != nil {
		c.forget(id)
		return err
	}
	select {
	case m, ok := <-ch:
		if !ok {
			return c.Err()
		}
		if m.Error != "" {
			return &RemoteError{Op: op, Msg: m.Error}
		}
		if result != nil {
			if err := json.Unmarshal(m.Result, result); err != nil {
				return fmt.Errorf("%s: bad reply %q: %w", op, m.Result, err)
			}
		}
		return nil
	case <-ctx.Done():
		c.forget(id)
		return context.Cause(ctx)
	}
}

func (c *Conn) forget(id uint64) {
	c.mu.Lock()
	delete(c.calls, id)
	c.mu.Unlock()
}

// dispatch handles a frame other than Hello. An error means the peer
// broke the protocol and the link must resynchronise.
func (c *Conn) dispatch(f wire.Frame) error {
	switch f.Type {
	case wire.Msg:
		return c.onMessage(f.Payload)
	case wire.Open:
		return c.onOpen(f.Session, f.Payload)
	case wire.Data, wire.Close, wire.Window, wire.Ctl:
		c.mu.Lock()
		s := c.sessions[f.Session]
		c.mu.Unlock()
		if s == nil {
			return nil // a session that has ended: late frames are expected
		}
		s.onFrame(f)
		return nil
	}
	return fmt.Errorf("unknown frame type %d from the %s", f.Type, c.peer.Role)
}

func (c *Conn) onMessage(payload []byte) error {
	var m message
	if err := json.Unmarshal(payload, &m); err != nil {
		return fmt.Errorf("malformed message from the %s: %v", c.peer.Role, err)
	}
	if m.Reply {
		c.mu.Lock()
		ch := c.calls[m.ID]
		delete(c.calls, m.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- m
		}
		return nil
	}
	c.mu.Lock()
	busy := c.requests >= MaxRequests
	if !busy {
		c.requests++
	}
	c.mu.Unlock()
	if busy {
		c.reply(m.ID, nil, fmt.Errorf("%s: too many requests at once (%d)", m.Op, MaxRequests))
		return nil
	}
	go func() {
		defer func() {
			c.mu.Lock()
			c.requests--
			c.mu.Unlock()
		}()
		h := c.l.ep.cfg.OnRequest
		if h == nil {
			c.reply(m.ID, nil, fmt.Errorf("unknown request %q", m.Op))
			return
		}
		result, err := h(c.ctx, c, m.Op, m.Args)
		c.reply(m.ID, result, err)
	}()
	return nil
}

// reply answers request id; a reply for a Conn that has ended is dropped.
func (c *Conn) reply(id uint64, result any, err error) {
	m := message{ID: id, Reply: true}
	if err != nil {
		m.Error = err.Error()
		if m.Error == "" {
			m.Error = "error"
		}
	} else if m.Result, err = json.Marshal(result); err != nil {
		m.Result, m.Error = nil, err.Error()
	}
	p, _ := json.Marshal(m)
	if len(p) > wire.MaxPayload {
		p, _ = json.Marshal(message{ID: id, Reply: true, Error: fmt.Sprintf("reply of %d bytes is too long", len(p))})
	}
	c.send(wire.Frame{Type: wire.Msg, Payload: p})
}

// Open opens a session of the given kind; args are sent as JSON. Only an
// opener may call it. The peer reports a failure to start the session
// through the session's end.
func (c *Conn) Open(kind string, args any) (*Session, error) {
	e := c.l.ep
	if !e.cfg.Opener {
		return nil, errors.New("mux: Open called on an accepting endpoint")
	}
	raw, err := json.Marshal(args)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", kind, err)
	}
	a, _ := json.Marshal(openArgs{Kind: kind, Args: raw})
	if len(a) > wire.MaxPayload {
		return nil, fmt.Errorf("open %s: arguments of %d bytes are too long", kind, len(a))
	}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	if len(c.sessions) >= MaxSessions {
		c.mu.Unlock()
		return nil, fmt.Errorf("open %s: %d sessions are open already; wait for one to end", kind, MaxSessions)
	}
	e.mu.Lock()
	e.nextSession++
	if e.nextSession == 0 {
		e.nextSession++
	}
	id := e.nextSession
	e.mu.Unlock()
	s := newSession(c, id, kind, raw, true)
	c.sessions[id] = s
	c.mu.Unlock()
	if err := c.send(wire.Frame{Type: wire.Open, Session: id, Payload: a}); err != nil {
		s.finish(err, false, nil)
		return nil, err
	}
	return s, nil
}

// openArgs is the payload of an Open frame.
type openArgs struct {
	Kind string          `json:"kind"`
	Args json.RawMessage `json:"args,omitempty"`
}

func (c *Conn) onOpen(id uint32, payload []byte) error {
	e := c.l.ep
	var a openArgs
	if e.cfg.Opener || id == 0 || json.Unmarshal(payload, &a) != nil {
		return fmt.Errorf("unexpected or malformed open of session %d from the %s", id, c.peer.Role)
	}
	c.mu.Lock()
	_, dup := c.sessions[id]
	full := len(c.sessions) >= MaxSessions
	var s *Session
	if !dup && !full && c.err == nil {
		s = newSession(c, id, a.Kind, a.Args, false)
		c.sessions[id] = s
	}
	c.mu.Unlock()
	switch {
	case dup:
		return fmt.Errorf("the %s opened session %d twice", c.peer.Role, id)
	case full:
		c.sendCtl(id, ctlMsg{Op: "abort", Error: fmt.Sprintf("%d sessions are open already", MaxSessions)})
		return nil
	case s == nil:
		return nil
	}
	if e.cfg.OnOpen == nil {
		s.Abort("sessions are not accepted here")
		return nil
	}
	e.cfg.OnOpen(s)
	return nil
}

func (c *Conn) sendCtl(id uint32, m ctlMsg) error {
	p, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("session control %s: %w", m.Op, err)
	}
	if len(p) > wire.MaxPayload {
		return fmt.Errorf("session control %s: %d bytes is too long", m.Op, len(p))
	}
	return c.send(wire.Frame{Type: wire.Ctl, Session: id, Payload: p})
}

func windowPayload(n int) []byte {
	return binary.LittleEndian.AppendUint32(nil, uint32(n))
}
