package mux

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbuml/sbuml/agent/internal/wire"
)

// logger collects log lines; tests print them when they fail.
type logger struct {
	mu    sync.Mutex
	lines []string
}

func (l *logger) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logger) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

func (l *logger) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// serve runs e over rw until the test ends.
func serve(t *testing.T, e *Endpoint, rw io.ReadWriteCloser) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Serve(context.Background(), rw)
	}()
	t.Cleanup(func() {
		rw.Close()
		<-done
	})
}

// echoAcceptor returns the configuration of an acceptor that answers
// "echo" calls, and runs "upper" sessions: stream 0 comes back upper-cased
// on stream 1, its length on stream 2, then an exit status of 7.
func echoAcceptor(log *logger) Config {
	return Config{
		Role: "guest", Version: "test", Preamble: true, Logf: log.logf,
		OnRequest: func(ctx context.Context, c *Conn, op string, args json.RawMessage) (any, error) {
			switch op {
			case "echo":
				return args, nil
			case "block":
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("no op %s", op)
		},
		OnOpen: func(s *Session) {
			go func() {
				out, errw := s.Writer(StreamOut), s.Writer(StreamErr)
				n, err := io.Copy(upperWriter{out}, s.Reader(StreamIn))
				if err != nil {
					return // the session failed
				}
				fmt.Fprintf(errw, "%d bytes", n)
				out.Close()
				errw.Close()
				s.Exit(7)
			}()
		},
	}
}

type upperWriter struct{ w io.Writer }

func (u upperWriter) Write(p []byte) (int, error) {
	return u.w.Write(bytes.ToUpper(p))
}

func opener(log *logger) Config {
	return Config{Role: "host", Version: "test", Opener: true, Preamble: true, Logf: log.logf}
}

// pair connects an opener and an acceptor through net.Pipe, which has no
// buffer: every write waits for the reader, the harshest transport for
// deadlocks.
func pair(t *testing.T, oc, ac Config) (*Endpoint, *Endpoint) {
	o, a := New(oc), New(ac)
	p1, p2 := net.Pipe()
	serve(t, o, p1)
	serve(t, a, p2)
	return o, a
}

func TestCall(t *testing.T) {
	log := &logger{}
	defer func() {
		if t.Failed() {
			t.Log(log)
		}
	}()
	ctx := testContext(t)
	ac := echoAcceptor(log)
	var conns atomic.Int32
	ac.OnConn = func(c *Conn) { conns.Add(1) }
	o, _ := pair(t, opener(log), ac)
	c, err := o.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.PeerRole() != "guest" || c.PeerVersion() != "test" {
		t.Errorf("peer %s %s", c.PeerRole(), c.PeerVersion())
	}
	var got string
	if err := c.Call(ctx, "echo", "hello", &got); err != nil || got != "hello" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	err = c.Call(ctx, "nope", nil, nil)
	var re *RemoteError
	if !errors.As(err, &re) || re.Msg != "no op nope" {
		t.Errorf("unknown op: %v", err)
	}
	// A call cut short by its context leaves the Conn usable.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := c.Call(short, "block", nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("blocked call: %v", err)
	}
	if err := c.Call(ctx, "echo", 1, nil); err != nil {
		t.Error(err)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("OnConn called %d times, want 1", n)
	}
}

func TestSession(t *testing.T) {
	log := &logger{}
	defer func() {
		if t.Failed() {
			t.Log(log)
		}
	}()
	ctx := testContext(t)
	o, _ := pair(t, opener(log), echoAcceptor(log))
	c, err := o.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Open("upper", map[string]int{"x": 1})
	if err != nil {
		t.Fatal(err)
	}
	in := bytes.Repeat([]byte("abcdefgh"), 200_000) // 1.6 MB: several windows
	go func() {
		w := s.Writer(StreamIn)
		w.Write(in)
		w.Close()
	}()
	var stderr []byte
	errDone := make(chan struct{})
	go func() {
		stderr, _ = io.ReadAll(s.Reader(StreamErr))
		close(errDone)
	}()
	out, err := io.ReadAll(s.Reader(StreamOut))
	if err != nil || !bytes.Equal(out, bytes.ToUpper(in)) {
		t.Fatalf("stdout: %d bytes, %v", len(out), err)
	}
	<-errDone
	if string(stderr) != fmt.Sprintf("%d bytes", len(in)) {
		t.Errorf("stderr %q", stderr)
	}
	select {
	case <-s.Done():
	case <-ctx.Done():
		t.Fatal("no exit")
	}
	if s.Err() != nil || string(s.Status()) != "7" {
		t.Errorf("end: %v, status %s", s.Err(), s.Status())
	}
	if _, err := s.Writer(StreamIn).Write([]byte("late")); !errors.Is(err, ErrSessionEnded) {
		t.Errorf("write after exit: %v", err)
	}
}

// TestSlowReader: a stream nobody reads stops its writer after one
// window, while other sessions and calls go on.
func TestSlowReader(t *testing.T) {
	log := &logger{}
	defer func() {
		if t.Failed() {
			t.Log(log)
		}
	}()
	ctx := testContext(t)
	var written atomic.Int64
	ac := echoAcceptor(log)
	upper := ac.OnOpen
	ac.OnOpen = func(s *Session) {
		if s.Kind() != "flood" {
			upper(s)
			return
		}
		go func() {
			w := s.Writer(StreamOut)
			chunk := bytes.Repeat([]byte{'x'}, 1024) // divides the window
			for i := 0; i < 2000; i++ {
				n, err := w.Write(chunk)
				written.Add(int64(n))
				if err != nil {
					return
				}
			}
			w.Close()
			s.Exit(0)
		}()
	}
	o, _ := pair(t, opener(log), ac)
	c, err := o.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	flood, err := c.Open("flood", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Nobody reads the flood: its writer stops at exactly one window.
	for written.Load() < Window {
		select {
		case <-ctx.Done():
			t.Fatalf("flood wrote %d bytes", written.Load())
		case <-time.After(time.Millisecond):
		}
	}
	// Meanwhile another session and a call complete.
	s, err := c.Open("upper", nil)
	if err != nil {
		t.Fatal(err)
	}
	w := s.Writer(StreamIn)
	w.Write([]byte("still flowing"))
	w.Close()
	if out, err := io.ReadAll(s.Reader(StreamOut)); string(out) != "STILL FLOWING" || err != nil {
		t.Errorf("second session: %q, %v", out, err)
	}
	if err := c.Call(ctx, "echo", 1, nil); err != nil {
		t.Error(err)
	}
	if n := written.Load(); n != Window {
		t.Errorf("the writer of an unread stream wrote %d bytes, want the window of %d", n, Window)
	}
	out, err := io.ReadAll(flood.Reader(StreamOut))
	if err != nil || len(out) != 2000*1024 {
		t.Errorf("flood: %d bytes, %v", len(out), err)
	}
}

func TestManySessions(t *testing.T) {
	log := &logger{}
	defer func() {
		if t.Failed() {
			t.Log(log)
		}
	}()
	ctx := testContext(t)
	o, _ := pair(t, opener(log), echoAcceptor(log))
	c, err := o.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sessions []*Session
	for i := 0; i < MaxSessions; i++ {
		s, err := c.Open("upper", i)
		if err != nil {
			t.Fatal(err)
		}
		sessions = append(sessions, s)
	}
	if _, err := c.Open("upper", nil); err == nil || !strings.Contains(err.Error(), "sessions are open already") {
		t.Errorf("one session too many: %v", err)
	}
	var wg sync.WaitGroup
	for i, s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in := bytes.Repeat([]byte(fmt.Sprintf("session %d;", i)), 20_000)
			go func() {
				w := s.Writer(StreamIn)
				w.Write(in)
				w.Close()
			}()
			go io.Copy(io.Discard, s.Reader(StreamErr))
			out, err := io.ReadAll(s.Reader(StreamOut))
			if err != nil || !bytes.Equal(out, bytes.ToUpper(in)) {
				t.Errorf("session %d: %d bytes, %v", i, len(out), err)
			}
		}()
	}
	wg.Wait()
}

// TestReconnect: a new link ends the old Conn with its calls and sessions,
// and a new Conn is established.
func TestReconnect(t *testing.T) {
	log := &logger{}
	defer func() {
		if t.Failed() {
			t.Log(log)
		}
	}()
	ctx := testContext(t)
	o, a := New(opener(log)), New(echoAcceptor(log))
	p1, p2 := net.Pipe()
	oDone, aDone := make(chan error, 1), make(chan error, 1)
	go func() { oDone <- o.Serve(ctx, p1) }()
	go func() { aDone <- a.Serve(ctx, p2) }()
	c1, err := o.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c1.Open("upper", nil)
	if err != nil {
		t.Fatal(err)
	}
	blocked := make(chan error, 1)
	go func() { blocked <- c1.Call(ctx, "block", nil, nil) }()
	time.Sleep(20 * time.Millisecond)

	p1.Close()
	<-oDone
	<-aDone
	if err := <-blocked; !errors.Is(err, ErrConnLost) {
		t.Errorf("call across the drop: %v", err)
	}
	<-s.Done()
	if _, err := io.ReadAll(s.Reader(StreamOut)); !errors.Is(err, ErrConnLost) {
		t.Errorf("session across the drop: %v", err)
	}
	if _, err := s.Writer(StreamIn).Write([]byte("x")); !errors.Is(err, ErrConnLost) {
		t.Errorf("write across the drop: %v", err)
	}

	p3, p4 := net.Pipe()
	serve(t, o, p3)
	serve(t, a, p4)
	c2, err := o.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c2 == c1 {
		t.Fatal("the same Conn after a new link")
	}
	if err := c2.Call(ctx, "echo", 1, nil); err != nil {
		t.Error(err)
	}
}

// TestGarbage: bytes that are not frames, in the middle of a session,
// make the reader resynchronise with one log line each way; the session
// of the garbled Conn fails, and the next Conn works.
func TestGarbage(t *testing.T) {
	log := &logger{}
	defer func() {
		if t.Failed() {
			t.Log(log)
		}
	}()
	ctx := testContext(t)
	o, a := New(opener(log)), New(echoAcceptor(log))
	oToA, aIn := net.Pipe()
	aOut, oIn := net.Pipe()
	serve(t, o, rwc(oIn, oToA))
	// The forwarder passes the opener's bytes on and injects the test's.
	chunks, inject := make(chan []byte), make(chan []byte)
	go func() {
		for {
			buf := make([]byte, 4096)
			n, err := aIn.Read(buf)
			if err != nil {
				close(chunks)
				return
			}
			chunks <- buf[:n]
		}
	}()
	fwdR, fwdW := net.Pipe()
	go func() {
		defer fwdW.Close()
		for {
			select {
			case b, ok := <-chunks:
				if !ok {
					return
				}
				fwdW.Write(b)
			case g := <-inject:
				fwdW.Write(g)
			}
		}
	}()
	serve(t, a, rwc(fwdR, aOut))

	c1, err := o.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c1.Open("upper", nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Writer(StreamIn).Write([]byte("before"))
	buf := make([]byte, 6)
	if _, err := io.ReadFull(s.Reader(StreamOut), buf); err != nil || string(buf) != "BEFORE" {
		t.Fatalf("before the garbage: %q, %v", buf, err)
	}
	inject <- []byte(wire.Magic + " this is not a frame")
	s.Writer(StreamIn).Write([]byte("after")) // may fail: the Conn ends
	<-s.Done()
	if err := s.Err(); !errors.Is(err, ErrConnLost) {
		t.Errorf("session of the garbled Conn: %v", err)
	}
	c2, err := o.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.Call(ctx, "echo", 1, nil); err != nil {
		t.Fatal(err)
	}
	if n := log.count("resynchronising"); n != 1 {
		t.Errorf("%d resynchronising lines, want 1", n)
	}
}

// rwc makes one io.ReadWriteCloser of two halves.
func rwc(r io.ReadCloser, w io.WriteCloser) io.ReadWriteCloser {
	return struct {
		io.Reader
		io.Writer
		io.Closer
	}{r, w, multiCloser{r, w}}
}

type multiCloser []io.Closer

func (m multiCloser) Close() error {
	for _, c := range m {
		c.Close()
	}
	return nil
}

// switchWriter sends its writes to a writer the test can replace.
type switchWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *switchWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	w := s.w
	s.mu.Unlock()
	w.Write(p) // the old peer may be gone: its errors do not matter
	return len(p), nil
}

func (s *switchWriter) set(w io.Writer) {
	s.mu.Lock()
	s.w = w
	s.mu.Unlock()
}

// TestPeerStartsAfresh is what a guest sees when the host it talked to is
// replaced without the guest noticing a disconnection (a snapshot restored
// and reconnected before the guest ran): the new host's bytes follow half
// a frame of the old one. The acceptor drops the old Conn and its
// sessions, and connects to the new host.
//
// It is long because the two hosts' bytes must arrive in one exact order,
// which it writes out step by step.
func TestPeerStartsAfresh(t *testing.T) {
	log := &logger{}
	defer func() {
		if t.Failed() {
			t.Log(log)
		}
	}()
	ctx := testContext(t)
	ac := echoAcceptor(log)
	accepted := make(chan *Session, 1)
	upper := ac.OnOpen
	ac.OnOpen = func(s *Session) { accepted <- s; upper(s) }
	a := New(ac)
	aIn, toA := net.Pipe()
	fromA, aOut := net.Pipe()
	out := &switchWriter{w: io.Discard}
	go io.Copy(out, fromA)
	serve(t, a, rwc(aIn, aOut))

	// The old host's frames reach the acceptor one by one, the last one
	// cut in half.
	old := New(opener(log))
	oldIn, oldInW := io.Pipe()
	oldOutR, oldOut := io.Pipe()
	out.set(oldInW)
	serve(t, old, rwc(oldIn, oldOut))
	cut := make(chan struct{})
	go func() {
		r := wire.NewReader(oldOutR)
		for {
			f, err := r.Next()
			if err != nil {
				return
			}
			b := wire.Append(nil, f)
			select {
			case <-cut:
				if f.Type == wire.Data && len(f.Payload) > 1000 {
					toA.Write(b[:len(b)/2])
					io.Copy(io.Discard, oldOutR)
					return
				}
			default:
			}
			toA.Write(b)
		}
	}()
	c1, err := old.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c1.Open("upper", nil)
	if err != nil {
		t.Fatal(err)
	}
	guestSide := <-accepted
	s.Writer(StreamIn).Write([]byte("x"))
	if _, err := io.ReadFull(s.Reader(StreamOut), make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	close(cut)
	s.Writer(StreamIn).Write(make([]byte, 5000))

	// The new host: same acceptor stream, no disconnection in between.
	host := New(opener(log))
	newIn, newInW := io.Pipe()
	out.set(newInW)
	serve(t, host, rwc(newIn, nopCloser{toA}))
	c2, err := host.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got string
	if err := c2.Call(ctx, "echo", "again", &got); err != nil || got != "again" {
		t.Fatalf("call to the acceptor after the switch: %q, %v", got, err)
	}
	select {
	case <-guestSide.Done():
	case <-ctx.Done():
		t.Fatal("the acceptor kept the old host's session")
	}
	if err := guestSide.Err(); !errors.Is(err, ErrConnLost) {
		t.Errorf("old session on the acceptor: %v", err)
	}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// rawPeer speaks the protocol by hand, to break its rules.
type rawPeer struct {
	t   *testing.T
	c   net.Conn
	r   *wire.Reader
	out chan []byte // written in order by one goroutine: net.Pipe blocks
}

// dialRaw connects a rawPeer to a running acceptor and does the handshake.
func dialRaw(t *testing.T, a *Endpoint) *rawPeer {
	p1, p2 := net.Pipe()
	serve(t, a, p2)
	p := &rawPeer{t: t, c: p1, r: wire.NewReader(p1), out: make(chan []byte, 100)}
	go func() {
		for b := range p.out {
			p1.Write(b)
		}
	}()
	p.hello(5, 0)
	f := p.next(wire.Hello)
	var h hello
	json.Unmarshal(f.Payload, &h)
	p.hello(5, h.Nonce)
	return p
}

func (p *rawPeer) hello(nonce, ack uint64) {
	b, _ := json.Marshal(hello{Proto: Proto, Role: "raw", Nonce: nonce, Ack: ack})
	p.send(wire.Frame{Type: wire.Hello, Payload: b})
}

func (p *rawPeer) send(f wire.Frame) {
	p.out <- wire.Append(nil, f)
}

// next returns the next frame of type typ, skipping others.
func (p *rawPeer) next(typ wire.Type) wire.Frame {
	p.t.Helper()
	p.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := p.r.Next()
		if err != nil {
			p.t.Fatalf("raw peer: %v", err)
		}
		if f.Type == typ {
			f.Payload = bytes.Clone(f.Payload)
			return f
		}
	}
}

// TestHostilePeer: frames that break flow control or name unknown
// sessions cost the offending session and a log line, not the Conn.
func TestHostilePeer(t *testing.T) {
	log := &logger{}
	defer func() {
		if t.Failed() {
			t.Log(log)
		}
	}()
	ac := echoAcceptor(log)
	ac.OnOpen = func(s *Session) {} // nobody reads: the window fills
	p := dialRaw(t, New(ac))

	open, _ := json.Marshal(openArgs{Kind: "upper"})
	p.send(wire.Frame{Type: wire.Open, Session: 1, Payload: open})
	p.send(wire.Frame{Type: wire.Data, Session: 99, Payload: []byte("unknown session")})
	chunk := make([]byte, wire.MaxPayload)
	for sent := 0; sent <= Window; sent += len(chunk) {
		p.send(wire.Frame{Type: wire.Data, Session: 1, Stream: StreamIn, Payload: chunk})
	}
	f := p.next(wire.Ctl)
	var m ctlMsg
	json.Unmarshal(f.Payload, &m)
	if f.Session != 1 || m.Op != "abort" || !strings.Contains(m.Error, "beyond the window") {
		t.Errorf("session 1 got %s %+v, want an abort for the window", f.Type, m)
	}
	call, _ := json.Marshal(message{ID: 1, Op: "echo", Args: json.RawMessage(`"ok"`)})
	p.send(wire.Frame{Type: wire.Msg, Payload: call})
	f = p.next(wire.Msg)
	if !strings.Contains(string(f.Payload), `"result":"ok"`) {
		t.Errorf("call after the violation: %s", f.Payload)
	}
	if n := log.count("beyond the window"); n != 1 {
		t.Errorf("%d log lines about the window, want 1", n)
	}
	if n := log.count("resynchronising"); n != 0 {
		t.Errorf("the Conn was restarted %d times", n)
	}
}

// TestReservedCtl: an opener cannot end a session on the acceptor's
// behalf, nor send the reserved ops through Ctl.
func TestReservedCtl(t *testing.T) {
	log := &logger{}
	defer func() {
		if t.Failed() {
			t.Log(log)
		}
	}()
	ac := echoAcceptor(log)
	var ctls []string
	ac.OnOpen = func(s *Session) {}
	ac.OnCtl = func(s *Session, op string, args json.RawMessage) { ctls = append(ctls, op) }
	p := dialRaw(t, New(ac))
	open, _ := json.Marshal(openArgs{Kind: "upper"})
	p.send(wire.Frame{Type: wire.Open, Session: 1, Payload: open})
	exit, _ := json.Marshal(ctlMsg{Op: "exit", Status: json.RawMessage("0")})
	p.send(wire.Frame{Type: wire.Ctl, Session: 1, Payload: exit})
	f := p.next(wire.Ctl)
	var m ctlMsg
	json.Unmarshal(f.Payload, &m)
	if m.Op != "abort" || !strings.Contains(m.Error, `control message "exit"`) || len(ctls) != 0 {
		t.Errorf("an exit from the opener: got %+v, OnCtl saw %q", m, ctls)
	}

	o, _ := pair(t, opener(log), echoAcceptor(log))
	c, err := o.Conn(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Open("upper", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ctl("exit", nil); err == nil {
		t.Error("Ctl exit accepted")
	}
}
