package vmm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// DefaultQMPTimeout bounds a QMP command whose context has no deadline.
const DefaultQMPTimeout = 30 * time.Second

// ErrQMPClosed is returned for commands issued on, or pending on, a QMP
// connection that has been closed by either side (QEMU exiting closes it).
var ErrQMPClosed = errors.New("qmp connection closed")

// QMPError is an error reply from QEMU to a QMP command.
type QMPError struct {
	Command string // the command that failed
	Class   string // QEMU's error class, e.g. "GenericError"
	Desc    string // QEMU's human-readable description
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// Event is an asynchronous QMP event such as STOP, RESUME, SHUTDOWN or
// MIGRATION.
type Event struct {
	Name string          // event name, e.g. "MIGRATION"
	Data json.RawMessage // the event's data member; may be nil
	Time time.Time       // QEMU's timestamp
}

// QMP is a client of the QEMU Machine Protocol over a unix socket. Commands
// may be issued from several goroutines at once; replies are matched to
// commands by id, and events are delivered to subscriptions while commands
// are in flight.
type QMP struct {
	conn *net.UnixConn

	// Version is the QEMU version from the greeting, e.g. "7.2.22".
	Version string

	writeMu sync.Mutex // serialises writes to conn

	mu      sync.Mutex
	nextID  uint64
	pending map[string]chan qmpReply
	subs    map[*Subscription]struct{}
	err     error         // why the connection ended; set once
	done    chan struct{} // closed when the reader stops
}

type qmpReply struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
}

type qmpMessage struct {
	qmpReply
	ID        json.RawMessage `json:"id"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
	Greeting *struct {
		Version struct {
			QEMU struct {
				Major int `json:"major"`
				Minor int `json:"minor"`
				Micro int `json:"micro"`
			} `json:"qemu"`
		} `json:"version"`
	} `json:"QMP"`
}

// DialQMP connects to the QMP socket at path, reads QEMU's greeting and
// leaves capabilities negotiation mode, so the returned client is ready for
// commands. ctx bounds the whole handshake.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	ctx, cancel := withDefaultTimeout(ctx, DefaultQMPTimeout)
	defer cancel()
	conn, err := dialUnix(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("qmp dial %s: %w", path, err)
	}
	q := &QMP{
		conn:    conn,
		pending: make(map[string]chan qmpReply),
		subs:    make(map[*Subscription]struct{}),
		done:    make(chan struct{}),
	}
	r := bufio.NewReaderSize(conn, 64<<10)
	if d, ok := ctx.Deadline(); ok {
		conn.SetReadDeadline(d)
	}
	line, err := r.ReadBytes('\n')
	conn.SetReadDeadline(time.Time{})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp %s: read greeting: %w", path, err)
	}
	var g qmpMessage
	if err := json.Unmarshal(line, &g); err != nil || g.Greeting == nil {
		conn.Close()
		return nil, fmt.Errorf("qmp %s: unexpected greeting %q", path, trimLine(line))
	}
	v := g.Greeting.Version.QEMU
	q.Version = fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro)
	go q.readLoop(r)
	if _, err := q.Execute(ctx, "qmp_capabilities", nil); err != nil {
		q.Close()
		return nil, err
	}
	return q, nil
}

// DialEvents connects to the second QMP server of the machine in dir
// (EventsSocket), which is there for one long-lived process to watch
// events (RESUME, STOP, SHUTDOWN, ...) with Subscribe while commands go
// through the machine's own connection on QMPSocket. It needs no lock on
// the machine. QEMU serves one client at a time on it: a second client
// waits until the first disconnects, or until ctx ends.
func DialEvents(ctx context.Context, dir string) (*QMP, error) {
	q, err := DialQMP(ctx, filepath.Join(dir, EventsSocket))
	if err != nil {
		return nil, fmt.Errorf("watch events of machine %s: %w", dir, err)
	}
	return q, nil
}

// dialUnix connects to a unix socket. Paths longer than the kernel's limit
// for socket addresses (108 bytes) are reached through /proc/self/fd.
func dialUnix(ctx context.Context, path string) (*net.UnixConn, error) {
	var d net.Dialer
	if len(path) < 100 {
		c, err := d.DialContext(ctx, "unix", path)
		if err != nil {
			return nil, err
		}
		return c.(*net.UnixConn), nil
	}
	dir, name := filepath.Split(path)
	f, err := os.OpenFile(dir, oPath|syscall.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c, err := d.DialContext(ctx, "unix", "/proc/self/fd/"+strconv.Itoa(int(f.Fd()))+"/"+name)
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}

func (q *QMP) readLoop(r *bufio.Reader) {
	var err error
	for {
		var line []byte
		line, err = r.ReadBytes('\n')
		if err != nil {
			break
		}
		var m qmpMessage
		if jerr := json.Unmarshal(line, &m); jerr != nil {
			err = fmt.Errorf("qmp: malformed message %q: %w", trimLine(line), jerr)
			break
		}
		switch {
		case m.Event != "":
			ev := Event{Name: m.Event, Data: m.Data}
			if m.Timestamp != nil {
				ev.Time = time.Unix(m.Timestamp.Seconds, m.Timestamp.Microseconds*1000)
			}
			q.mu.Lock()
			for s := range q.subs {
				s.deliver(ev)
			}
			q.mu.Unlock()
		case m.ID != nil:
			q.mu.Lock()
			ch := q.pending[string(m.ID)]
			delete(q.pending, string(m.ID))
			q.mu.Unlock()
			if ch != nil {
				ch <- m.qmpReply
			}
		}
	}
	q.shutdown(err)
}

// shutdown records why the connection ended and wakes everyone waiting.
func (q *QMP) shutdown(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return
	}
	if err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) || errors.Is(err, io.EOF) {
		q.err = ErrQMPClosed
	} else {
		q.err = fmt.Errorf("%w: %v", ErrQMPClosed, err)
	}
	q.conn.Close()
	close(q.done)
	for s := range q.subs {
		s.close()
	}
}

// Done is closed when the connection has ended, for instance because QEMU
// exited.
func (q *QMP) Done() <-chan struct{} { return q.done }

// Err returns why the connection ended, or nil while it is open.
func (q *QMP) Err() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err
}

// Close closes the connection. Pending commands fail with ErrQMPClosed.
func (q *QMP) Close() error {
	q.conn.Close()
	<-q.done
	return nil
}

// Execute runs a QMP command and returns its "return" member. args, if not
// nil, is marshalled as the command's arguments. If ctx has no deadline,
// DefaultQMPTimeout applies. An error reply from QEMU is returned as a
// *QMPError.
func (q *QMP) Execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	return q.execute(ctx, command, args, nil)
}

// SendFile passes f to QEMU over the socket (SCM_RIGHTS) and registers it
// under name with the getfd command, for use in "fd:name" URIs. QEMU holds
// its own copy of the descriptor; the caller may close f afterwards.
func (q *QMP) SendFile(ctx context.Context, name string, f *os.File) error {
	_, err := q.execute(ctx, "getfd", map[string]string{"fdname": name}, f)
	return err
}

func (q *QMP) execute(ctx context.Context, command string, args any, f *os.File) (json.RawMessage, error) {
	ctx, cancel := withDefaultTimeout(ctx, DefaultQMPTimeout)
	defer cancel()

	q.mu.Lock()
	if q.err != nil {
		err := q.err
		q.mu.Unlock()
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	q.nextID++
	id := strconv.Quote("sbuml-" + strconv.FormatUint(q.nextID, 10))
	ch := make(chan qmpReply, 1)
	q.pending[id] = ch
	q.mu.Unlock()
	forget := func() {
		q.mu.Lock()
		delete(q.pending, id)
		q.mu.Unlock()
	}

	msg := struct {
		Execute   string          `json:"execute"`
		Arguments any             `json:"arguments,omitempty"`
		ID        json.RawMessage `json:"id"`
	}{command, args, json.RawMessage(id)}
	b, err := json.Marshal(msg)
	if err != nil {
		forget()
		return nil, fmt.Errorf("qmp %s: encode arguments: %w", command, err)
	}
	b = append(b, '\n')
	if err := q.write(ctx, b, f); err != nil {
		forget()
		return nil, fmt.Errorf("qmp %s: send: %w", command, err)
	}

	select {
	case r := <-ch:
		if r.Error != nil {
			return nil, &QMPError{Command: command, Class: r.Error.Class, Desc: r.Error.Desc}
		}
		return r.Return, nil
	case <-q.done:
		// A reply may have raced with the close.
		select {
		case r := <-ch:
			if r.Error != nil {
				return nil, &QMPError{Command: command, Class: r.Error.Class, Desc: r.Error.Desc}
			}
			return r.Return, nil
		default:
		}
		forget()
		return nil, fmt.Errorf("qmp %s: %w", command, q.Err())
	case <-ctx.Done():
		forget()
		return nil, fmt.Errorf("qmp %s: no reply: %w", command, ctx.Err())
	}
}

func (q *QMP) write(ctx context.Context, b []byte, f *os.File) error {
	q.writeMu.Lock()
	defer q.writeMu.Unlock()
	if d, ok := ctx.Deadline(); ok {
		q.conn.SetWriteDeadline(d)
		defer q.conn.SetWriteDeadline(time.Time{})
	}
	if f == nil {
		_, err := q.conn.Write(b)
		return err
	}
	// The descriptor travels with the first byte of the command, which is
	// where QEMU looks for it.
	n, _, err := q.conn.WriteMsgUnix(b, syscall.UnixRights(int(f.Fd())), nil)
	if err != nil {
		return err
	}
	if n < len(b) {
		_, err = q.conn.Write(b[n:])
	}
	return err
}

// Subscription receives QMP events. Events are queued without bound, so a
// slow reader never stalls the connection.
type Subscription struct {
	q      *QMP
	names  map[string]bool // nil means all events
	mu     sync.Mutex
	queue  []Event
	wake   chan struct{}
	closed bool
}

// Subscribe returns a subscription to the named events, or to all events if
// no names are given. Only events arriving after Subscribe returns are
// delivered, so subscribe before issuing the command whose events you want.
func (q *QMP) Subscribe(names ...string) *Subscription {
	s := &Subscription{q: q, wake: make(chan struct{}, 1)}
	if len(names) > 0 {
		s.names = make(map[string]bool)
		for _, n := range names {
			s.names[n] = true
		}
	}
	q.mu.Lock()
	if q.err != nil {
		s.closed = true
	} else {
		q.subs[s] = struct{}{}
	}
	q.mu.Unlock()
	return s
}

func (s *Subscription) deliver(ev Event) {
	if s.names != nil && !s.names[ev.Name] {
		return
	}
	s.mu.Lock()
	s.queue = append(s.queue, ev)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Subscription) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Next returns the next event, waiting for it until ctx is done or the
// connection ends.
func (s *Subscription) Next(ctx context.Context) (Event, error) {
	for {
		s.mu.Lock()
		if len(s.queue) > 0 {
			ev := s.queue[0]
			s.queue = s.queue[1:]
			s.mu.Unlock()
			return ev, nil
		}
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return Event{}, s.q.closedErr()
		}
		select {
		case <-s.wake:
		case <-ctx.Done():
			return Event{}, ctx.Err()
		}
	}
}

// poll returns the next event already received, without waiting. QEMU
// sends the events a command causes before its reply, so once Execute
// has returned they are there.
func (s *Subscription) poll() (Event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return Event{}, false
	}
	ev := s.queue[0]
	s.queue = s.queue[1:]
	return ev, true
}

// Wait returns the next event with the given name, discarding others.
func (s *Subscription) Wait(ctx context.Context, name string) (Event, error) {
	for {
		ev, err := s.Next(ctx)
		if err != nil {
			return Event{}, fmt.Errorf("wait for qmp event %s: %w", name, err)
		}
		if ev.Name == name {
			return ev, nil
		}
	}
}

// Close stops delivery to the subscription.
func (s *Subscription) Close() {
	s.q.mu.Lock()
	delete(s.q.subs, s)
	s.q.mu.Unlock()
	s.close()
}

func (q *QMP) closedErr() error {
	if err := q.Err(); err != nil {
		return err
	}
	return ErrQMPClosed
}

// WaitEvent waits for the next event with the given name that arrives after
// the call. To catch an event caused by a command, use Subscribe before the
// command instead.
func (q *QMP) WaitEvent(ctx context.Context, name string) (Event, error) {
	s := q.Subscribe(name)
	defer s.Close()
	return s.Wait(ctx, name)
}

func withDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

func trimLine(b []byte) string {
	const max = 200
	if len(b) > max {
		b = b[:max]
	}
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return string(b)
}

// oPath is O_PATH, which package syscall does not name on linux/amd64.
const oPath = 0x200000
