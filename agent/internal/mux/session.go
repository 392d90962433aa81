package mux

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/sbuml/sbuml/agent/internal/wire"
)

// Streams of a session. Stream 0 flows from the opener to the acceptor,
// streams 1 and 2 the other way.
const (
	StreamIn   = 0 // opener to acceptor: stdin, or a tar stream to extract
	StreamOut  = 1 // acceptor to opener: stdout, or a tar stream produced
	StreamErr  = 2 // acceptor to opener: stderr
	NumStreams = 3
)

// ErrSessionEnded is returned by writes to a session that has ended
// normally, for example to the stdin of a process that has exited.
var ErrSessionEnded = errors.New("session ended")

// Session is one exchange of streams within a Conn: a process being run,
// a file tree being copied.
type Session struct {
	c      *Conn
	id     uint32
	kind   string
	args   json.RawMessage
	opener bool
	done   chan struct{}

	mu     sync.Mutex
	cond   *sync.Cond
	recv   [NumStreams]*recvState
	send   [NumStreams]*sendState
	ended  bool
	err    error           // why it ended, nil after a normal exit
	status json.RawMessage // the acceptor's exit status
}

type recvState struct {
	chunks  [][]byte
	n       int // bytes in chunks
	unacked int // bytes read since the last window update
	eof     bool
}

type sendState struct {
	credit int
	closed bool
}

func newSession(c *Conn, id uint32, kind string, args json.RawMessage, opener bool) *Session {
	s := &Session{c: c, id: id, kind: kind, args: args, opener: opener, done: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	for i := 0; i < NumStreams; i++ {
		if (i == StreamIn) == opener {
			s.send[i] = &sendState{credit: Window}
		} else {
			s.recv[i] = &recvState{}
		}
	}
	return s
}

// ID returns the session's number within its Conn.
func (s *Session) ID() uint32 { return s.id }

// Kind returns the kind the opener gave, such as "exec".
func (s *Session) Kind() string { return s.kind }

// Args returns the arguments the opener gave, as JSON.
func (s *Session) Args() json.RawMessage { return s.args }

// Done is closed when the session ends.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns why the session ended: nil while it runs or after a normal
// exit.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Status returns the exit status the acceptor sent, once the session has
// ended normally.
func (s *Session) Status() json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Reader returns the reading end of a stream flowing towards this side.
// Reads return the stream's bytes, then io.EOF when the peer closed it or
// the session exited, or the session's error if it failed. Reading
// returns credit to the peer.
func (s *Session) Reader(stream int) io.Reader {
	if s.recv[stream] == nil {
		panic(fmt.Sprintf("mux: stream %d does not flow towards this side", stream))
	}
	return &streamReader{s, stream}
}

// Writer returns the writing end of a stream flowing away from this side.
// Writes block while the peer's window is full. Close sends the end of
// the stream.
func (s *Session) Writer(stream int) io.WriteCloser {
	if s.send[stream] == nil {
		panic(fmt.Sprintf("mux: stream %d does not flow away from this side", stream))
	}
	return &streamWriter{s, stream}
}

type streamReader struct {
	s      *Session
	stream int
}

func (r *streamReader) Read(p []byte) (int, error) {
	s := r.s
	st := s.recv[r.stream]
	s.mu.Lock()
	for st.n == 0 && !st.eof && !s.ended {
		s.cond.Wait()
	}
	if st.n == 0 {
		err := s.err
		if st.eof || err == nil {
			err = io.EOF
		}
		s.mu.Unlock()
		return 0, err
	}
	n := 0
	for n < len(p) && len(st.chunks) > 0 {
		k := copy(p[n:], st.chunks[0])
		n += k
		if st.chunks[0] = st.chunks[0][k:]; len(st.chunks[0]) == 0 {
			st.chunks[0] = nil
			st.chunks = st.chunks[1:]
		}
	}
	st.n -= n
	st.unacked += n
	grant := 0
	if st.unacked >= Window/4 && !st.eof && !s.ended {
		grant, st.unacked = st.unacked, 0
	}
	s.mu.Unlock()
	if grant > 0 {
		s.c.send(wire.Frame{Type: wire.Window, Session: s.id, Stream: uint8(r.stream), Payload: windowPayload(grant)})
	}
	return n, nil
}

type streamWriter struct {
	s      *Session
	stream int
}

func (w *streamWriter) Write(p []byte) (int, error) {
	s := w.s
	st := s.send[w.stream]
	written := 0
	for len(p) > 0 {
		s.mu.Lock()
		for st.credit == 0 && !s.ended && !st.closed {
			s.cond.Wait()
		}
		if err := s.writeErr(st); err != nil {
			s.mu.Unlock()
			return written, err
		}
		k := min(len(p), st.credit, wire.MaxPayload)
		st.credit -= k
		s.mu.Unlock()
		if err := s.c.send(wire.Frame{Type: wire.Data, Session: s.id, Stream: uint8(w.stream), Payload: p[:k]}); err != nil {
			return written, err
		}
		written += k
		p = p[k:]
	}
	return written, nil
}

// writeErr says why a stream cannot be written. s.mu is held.
func (s *Session) writeErr(st *sendState) error {
	switch {
	case s.ended && s.err != nil:
		return s.err
	case s.ended:
		return ErrSessionEnded
	case st.closed:
		return errors.New("write to a closed stream")
	}
	return nil
}

func (w *streamWriter) Close() error {
	s := w.s
	st := s.send[w.stream]
	s.mu.Lock()
	if st.closed || s.ended {
		s.mu.Unlock()
		return nil
	}
	st.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
	return s.c.send(wire.Frame{Type: wire.Close, Session: s.id, Stream: uint8(w.stream)})
}

// ctlMsg is the payload of a Ctl frame.
type ctlMsg struct {
	Op     string          `json:"op"` // exit, abort, or one for OnCtl
	Args   json.RawMessage `json:"args,omitempty"`
	Status json.RawMessage `json:"status,omitempty"` // exit
	Error  string          `json:"error,omitempty"`  // abort
}

// Ctl sends a control message to the acceptor, such as a terminal resize.
// The ops exit and abort are reserved: use Exit and Abort.
func (s *Session) Ctl(op string, args any) error {
	if op == "exit" || op == "abort" {
		return fmt.Errorf("mux: control op %q is reserved", op)
	}
	if err := s.endedErr(); err != nil {
		return err
	}
	a, err := json.Marshal(args)
	if err != nil {
		return fmt.Errorf("session control %s: %w", op, err)
	}
	return s.c.sendCtl(s.id, ctlMsg{Op: op, Args: a})
}

func (s *Session) endedErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return s.writeErr(&sendState{})
	}
	return nil
}

// Exit ends the session normally, sending the acceptor's status to the
// opener. Close the outgoing streams first: data still queued is sent
// before the status.
func (s *Session) Exit(status any) error {
	st, err := json.Marshal(status)
	if err != nil {
		return fmt.Errorf("exit status: %w", err)
	}
	if err := s.endedErr(); err != nil {
		return err
	}
	err = s.c.sendCtl(s.id, ctlMsg{Op: "exit", Status: st})
	s.finish(nil, true, st)
	return err
}

// Abort ends the session at once, telling the peer why (in at most 1 KiB).
func (s *Session) Abort(reason string) {
	if s.endedErr() != nil {
		return
	}
	if len(reason) > 1<<10 {
		reason = reason[:1<<10]
	}
	s.c.sendCtl(s.id, ctlMsg{Op: "abort", Error: reason})
	s.finish(fmt.Errorf("%s session aborted: %s", s.kind, reason), false, nil)
}

// finish ends the session. err is nil for a normal exit.
func (s *Session) finish(err error, exited bool, status json.RawMessage) {
	c := s.c
	c.mu.Lock()
	if c.sessions[s.id] == s {
		delete(c.sessions, s.id)
	}
	c.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	s.ended, s.err, s.status = true, err, status
	if !exited && err == nil {
		s.err = errors.New("session ended")
	}
	close(s.done)
	s.cond.Broadcast()
}

// onFrame handles a Data, Close, Window or Ctl frame of the session.
func (s *Session) onFrame(f wire.Frame) {
	if f.Type == wire.Ctl {
		s.onCtl(f.Payload)
		return
	}
	if int(f.Stream) >= NumStreams {
		s.violation(fmt.Sprintf("%s frame for stream %d", f.Type, f.Stream))
		return
	}
	s.mu.Lock()
	var bad string
	switch f.Type {
	case wire.Data, wire.Close:
		st := s.recv[f.Stream]
		switch {
		case st == nil:
			bad = fmt.Sprintf("%s frame for stream %d, which flows the other way", f.Type, f.Stream)
		case st.eof:
			bad = fmt.Sprintf("%s frame for stream %d after its end", f.Type, f.Stream)
		case f.Type == wire.Close:
			st.eof = true
		case st.n+st.unacked+len(f.Payload) > Window:
			bad = fmt.Sprintf("%d bytes on stream %d beyond the window", st.n+st.unacked+len(f.Payload)-Window, f.Stream)
		case len(f.Payload) > 0:
			st.chunks = append(st.chunks, append([]byte(nil), f.Payload...))
			st.n += len(f.Payload)
		}
	case wire.Window:
		st := s.send[f.Stream]
		switch {
		case st == nil || len(f.Payload) != 4:
			bad = fmt.Sprintf("malformed window frame for stream %d", f.Stream)
		case st.credit+int(binary.LittleEndian.Uint32(f.Payload)) > Window:
			bad = fmt.Sprintf("window of stream %d grown beyond %d bytes", f.Stream, Window)
		default:
			st.credit += int(binary.LittleEndian.Uint32(f.Payload))
		}
	}
	s.cond.Broadcast()
	s.mu.Unlock()
	if bad != "" {
		s.violation(bad)
	}
}

// violation aborts a session whose peer broke flow control or stream
// rules, with one log line.
func (s *Session) violation(what string) {
	s.c.l.ep.logf("%s session %d: the %s sent %s; aborting the session", s.kind, s.id, s.c.peer.Role, what)
	s.Abort("protocol violation: " + what)
}

func (s *Session) onCtl(payload []byte) {
	var m ctlMsg
	if err := json.Unmarshal(payload, &m); err != nil {
		s.violation("a malformed control message")
		return
	}
	switch {
	case m.Op == "abort":
		s.finish(fmt.Errorf("%s session aborted by the %s: %s", s.kind, s.c.peer.Role, m.Error), false, nil)
	case m.Op == "exit" && s.opener:
		s.finish(nil, true, m.Status)
	case m.Op == "exit" || s.opener:
		s.violation(fmt.Sprintf("control message %q", m.Op))
	default:
		if h := s.c.l.ep.cfg.OnCtl; h != nil {
			h(s, m.Op, m.Args)
		}
	}
}
