// Package guest is the guest side of the sbuml agent: the daemon that
// sbuml-guest runs at boot. It owns the agent's virtio-serial port and
// serves the host's requests (exec, copy, settime, stats), and it serves
// local programs on a unix socket, sending their checkpoint requests
// (ckpt) to the host.
//
// The daemon is written against io.ReadWriter links, so tests run it on
// the host over socket pairs; Port is the real device.
package guest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/sbuml/sbuml/agent"
	"github.com/sbuml/sbuml/agent/internal/mux"
	"github.com/sbuml/sbuml/agent/internal/proto"
)

// Daemon is the guest agent. It outlives links to the host: checkpoint
// requests stay pending across them; sessions do not.
type Daemon struct {
	ep   *mux.Endpoint
	logf func(string, ...any)

	mu      sync.Mutex
	pending map[uint64]*ckpt // checkpoint requests not yet answered
	seq     uint64           // mixed into request ids
	execs   map[*mux.Session]*execState
}

// ckpt is a checkpoint request waiting for the host's answer.
type ckpt struct {
	id     uint64
	msg    string
	sentOn *mux.Conn // the Conn it was last sent on
	answer chan ckptAnswer
}

type ckptAnswer struct {
	n   int
	err error
}

// NewDaemon returns a daemon that logs problems, one line each, with
// logf (nil discards).
func NewDaemon(logf func(string, ...any)) *Daemon {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	d := &Daemon{logf: logf, pending: make(map[uint64]*ckpt), execs: make(map[*mux.Session]*execState)}
	d.ep = mux.New(mux.Config{
		Role:      "guest",
		Version:   agent.Version,
		Preamble:  true,
		Logf:      logf,
		OnConn:    d.onConn,
		OnRequest: d.onRequest,
		OnOpen:    d.onOpen,
		OnCtl:     d.onCtl,
	})
	return d
}

// Serve runs the protocol over one link to the host until it fails (for
// the port: io.EOF when the host disconnects) or ctx ends. Sessions of
// the link are killed when it ends; checkpoint requests stay pending and
// are sent again on the next link. If rw is an io.Closer, Serve closes it
// before returning, which must make blocked reads and writes return.
func (d *Daemon) Serve(ctx context.Context, rw io.ReadWriter) error {
	return d.ep.Serve(ctx, rw)
}

// Checkpoint asks the host for a checkpoint and returns its answer: 0 in
// the machine that took it, the child's number in a machine checked out
// from it. It waits as long as it takes, across reconnections, unless ctx
// ends first, which withdraws the request.
func (d *Daemon) Checkpoint(ctx context.Context, msg string) (int, error) {
	p := &ckpt{msg: msg, answer: make(chan ckptAnswer, 1)}
	d.mu.Lock()
	p.id = d.newID()
	d.pending[p.id] = p
	d.mu.Unlock()
	if c := d.ep.Current(); c != nil {
		d.send(c, p)
	}
	select {
	case a := <-p.answer:
		return a.n, a.err
	case <-ctx.Done():
		d.mu.Lock()
		delete(d.pending, p.id)
		d.mu.Unlock()
		return -1, context.Cause(ctx)
	}
}

// newID returns a fresh request id. Two machines checked out from one
// snapshot start with the same random generator state, so the id also
// mixes in the clock (set by each machine's keeper after the restore)
// and a counter. d.mu is held.
func (d *Daemon) newID() uint64 {
	var b [16]byte
	rand.Read(b[:])
	d.seq++
	h := sha256.New()
	h.Write(b[:])
	binary.Write(h, binary.LittleEndian, time.Now().UnixNano())
	binary.Write(h, binary.LittleEndian, d.seq)
	for {
		id := binary.LittleEndian.Uint64(h.Sum(nil))
		if _, dup := d.pending[id]; id != 0 && !dup {
			return id
		}
		h.Write([]byte{0})
	}
}

// onConn sends every pending checkpoint request on a new Conn.
func (d *Daemon) onConn(c *mux.Conn) {
	d.mu.Lock()
	var ps []*ckpt
	for _, p := range d.pending {
		ps = append(ps, p)
	}
	d.mu.Unlock()
	for _, p := range ps {
		d.send(c, p)
	}
}

// send sends p on c unless it was sent there already, and delivers the
// answer. A Conn that ends first leaves p pending for the next one.
func (d *Daemon) send(c *mux.Conn, p *ckpt) {
	d.mu.Lock()
	if d.pending[p.id] != p || p.sentOn == c {
		d.mu.Unlock()
		return
	}
	p.sentOn = c
	d.mu.Unlock()
	go func() {
		var n int
		err := c.Call(context.Background(), proto.OpCkpt, proto.CkptArgs{ID: p.id, Msg: p.msg}, &n)
		if errors.Is(err, mux.ErrConnLost) {
			return // sent again on the next Conn
		}
		if err != nil {
			err = fmt.Errorf("the host could not checkpoint: %w", err)
		}
		d.mu.Lock()
		answered := d.pending[p.id] == p
		delete(d.pending, p.id)
		d.mu.Unlock()
		if answered {
			p.answer <- ckptAnswer{n, err}
		}
	}()
}

func (d *Daemon) onRequest(ctx context.Context, _ *mux.Conn, op string, args json.RawMessage) (any, error) {
	switch op {
	case proto.OpPing:
		return agent.Version, nil
	case proto.OpStats:
		return readStats()
	case proto.OpSetTime:
		var a proto.SetTimeArgs
		if err := json.Unmarshal(args, &a); err != nil {
			return nil, fmt.Errorf("settime: %w", err)
		}
		return nil, setTime(time.Unix(0, a.UnixNano))
	case proto.OpReseed:
		var a proto.ReseedArgs
		if err := json.Unmarshal(args, &a); err != nil {
			return nil, fmt.Errorf("reseed: %w", err)
		}
		return nil, reseed(a.Seed)
	}
	return nil, fmt.Errorf("the guest agent %s does not know %q requests; update sbuml-guest", agent.Version, op)
}

func (d *Daemon) onOpen(s *mux.Session) {
	switch s.Kind() {
	case proto.KindExec:
		e := &execState{}
		d.mu.Lock()
		d.execs[s] = e
		d.mu.Unlock()
		go func() {
			d.runExec(s, e)
			d.mu.Lock()
			delete(d.execs, s)
			d.mu.Unlock()
		}()
	case proto.KindCopyIn:
		go d.copyIn(s)
	case proto.KindCopyOut:
		go d.copyOut(s)
	default:
		s.Abort(fmt.Sprintf("the guest agent %s does not know %q sessions; update sbuml-guest", agent.Version, s.Kind()))
	}
}

func (d *Daemon) onCtl(s *mux.Session, op string, args json.RawMessage) {
	d.mu.Lock()
	e := d.execs[s]
	d.mu.Unlock()
	if e == nil {
		return
	}
	switch op {
	case proto.CtlResize:
		var ws proto.Winsize
		if json.Unmarshal(args, &ws) == nil {
			e.resize(ws)
		}
	case proto.CtlSignal:
		var sig int
		if json.Unmarshal(args, &sig) == nil {
			e.signal(sig)
		}
	}
}

// fail ends a session with an error message for the host.
func fail(s *mux.Session, format string, args ...any) {
	s.Exit(proto.ExitStatus{Code: -1, Error: shorten(fmt.Sprintf(format, args...))})
}

// shorten keeps an error message well within a frame.
func shorten(msg string) string {
	if len(msg) > 4<<10 {
		return msg[:4<<10] + "..."
	}
	return msg
}
