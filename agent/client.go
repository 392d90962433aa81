package agent

import (
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

	"github.com/sbuml/sbuml/agent/internal/mux"
	"github.com/sbuml/sbuml/agent/internal/proto"
)

// CallHandler answers a client's Call in the keeper: name and the JSON
// arguments as the client sent them; the result is sent back as JSON.
type CallHandler func(ctx context.Context, name string, args json.RawMessage) (any, error)

// Serve accepts clients (Dial) on ln and serves them until ctx ends or
// accepting fails; it closes ln. Their Agent operations are relayed to
// host, with flow control from end to end; their Calls go to calls (nil
// refuses them). It is what a machine's keeper runs on its socket.
func Serve(ctx context.Context, ln net.Listener, host *Host, calls CallHandler) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return fmt.Errorf("agent keeper: accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := &keeperConn{host: host, calls: calls, bridges: make(map[*mux.Session]*bridge)}
			k.ep = mux.New(mux.Config{
				Role: "keeper", Version: Version, Logf: host.logf,
				OnRequest: k.onRequest, OnOpen: k.onOpen, OnCtl: k.onCtl,
			})
			k.ep.Serve(ctx, conn)
		}()
	}
}

// keeperConn serves one client.
type keeperConn struct {
	ep    *mux.Endpoint
	host  *Host
	calls CallHandler

	mu      sync.Mutex
	bridges map[*mux.Session]*bridge // by client session
}

// onRequest relays the guest's calls as they are (the client adds its
// own context to errors) and answers keeper calls.
func (k *keeperConn) onRequest(ctx context.Context, _ *mux.Conn, op string, args json.RawMessage) (any, error) {
	switch op {
	case proto.OpPing, proto.OpStats, proto.OpSetTime:
		var result json.RawMessage
		if err := k.host.call(ctx, op, args, &result); err != nil {
			return nil, err
		}
		return result, nil
	case proto.OpCall:
		var a proto.CallArgs
		if err := json.Unmarshal(args, &a); err != nil {
			return nil, err
		}
		if k.calls == nil {
			return nil, fmt.Errorf("the keeper has no call %q", a.Name)
		}
		return k.calls(ctx, a.Name, a.Args)
	}
	return nil, fmt.Errorf("the keeper does not answer %q requests", op)
}

// bridge relays one client session to a guest session.
type bridge struct {
	mu      sync.Mutex
	guest   *mux.Session // nil until opened
	pending []ctl        // control messages that came before it
}

type ctl struct {
	op   string
	args json.RawMessage
}

func (k *keeperConn) onOpen(client *mux.Session) {
	b := &bridge{}
	k.mu.Lock()
	k.bridges[client] = b
	k.mu.Unlock()
	go func() {
		defer func() {
			k.mu.Lock()
			delete(k.bridges, client)
			k.mu.Unlock()
		}()
		k.relay(client, b)
	}()
}

func (k *keeperConn) onCtl(client *mux.Session, op string, args json.RawMessage) {
	if op != proto.CtlResize && op != proto.CtlSignal {
		return
	}
	k.mu.Lock()
	b := k.bridges[client]
	k.mu.Unlock()
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.guest == nil {
		b.pending = append(b.pending, ctl{op, args})
		return
	}
	b.guest.Ctl(op, args)
}

// relay opens the guest session for a client session and copies their
// streams until both end. Each copy reads only as fast as the other side
// takes the bytes, so flow control holds from the client to the guest.
func (k *keeperConn) relay(client *mux.Session, b *bridge) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-client.Done():
		case <-ctx.Done():
		}
		cancel()
	}()
	guest, err := k.host.open(ctx, client.Kind(), client.Args())
	if err != nil {
		client.Exit(proto.ExitStatus{Error: err.Error(), Lost: errors.Is(err, ErrConnLost)})
		return
	}
	b.mu.Lock()
	b.guest = guest
	for _, c := range b.pending {
		guest.Ctl(c.op, c.args)
	}
	b.pending = nil
	b.mu.Unlock()

	// A copy that fails does nothing more: the end of one of the two
	// sessions is what failed it, and is handled below.
	go copyStream(guest.Writer(mux.StreamIn), client.Reader(mux.StreamIn))
	var wg sync.WaitGroup
	for _, st := range []int{mux.StreamOut, mux.StreamErr} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			copyStream(client.Writer(st), guest.Reader(st))
		}()
	}
	select {
	case <-guest.Done():
	case <-client.Done():
		guest.Abort("the client went away")
		return
	}
	wg.Wait()
	if err := guest.Err(); err != nil {
		client.Exit(proto.ExitStatus{Error: err.Error(), Lost: errors.Is(err, ErrConnLost)})
		return
	}
	client.Exit(guest.Status())
}

// copyStream copies a stream to its end and closes w.
func copyStream(w io.WriteCloser, r io.Reader) {
	if _, err := io.Copy(w, r); err == nil {
		w.Close()
	}
}

// Client is a connection to a machine's keeper (Serve), used by
// command-line processes. It implements Agent; the keeper relays the
// operations to the guest.
type Client struct {
	opener
	conn  net.Conn
	done  chan error
	close sync.Once
}

// Dial connects to the keeper listening on the unix socket sockPath and
// completes the handshake.
func Dial(ctx context.Context, sockPath string) (*Client, error) {
	conn, err := dialUnix(ctx, sockPath)
	if err != nil {
		return nil, fmt.Errorf("connect to the machine's keeper at %s: %w; is the machine running?", sockPath, err)
	}
	c := &Client{conn: conn, done: make(chan error, 1)}
	c.ep = mux.New(mux.Config{Role: "client", Version: Version, Opener: true})
	go func() { c.done <- c.ep.Serve(context.Background(), conn) }()
	if _, err := c.ep.Conn(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("connect to the machine's keeper at %s: %w", sockPath, err)
	}
	return c, nil
}

// Call asks the keeper's CallHandler to run name with args (encoded as
// JSON) and decodes its result into reply, unless reply is nil.
func (c *Client) Call(ctx context.Context, name string, args, reply any) error {
	a, err := json.Marshal(args)
	if err != nil {
		return fmt.Errorf("keeper call %s: %w", name, err)
	}
	if err := c.call(ctx, proto.OpCall, proto.CallArgs{Name: name, Args: a}, reply); err != nil {
		return fmt.Errorf("keeper call %s: %w", name, err)
	}
	return nil
}

// Close ends the connection; sessions still running are killed.
func (c *Client) Close() error {
	var err error
	c.close.Do(func() {
		err = c.conn.Close()
		<-c.done
	})
	return err
}

// dialUnix connects to a unix socket, through /proc/self/fd when the
// path is too long for a socket address (108 bytes).
func dialUnix(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	if len(path) < 100 {
		return d.DialContext(ctx, "unix", path)
	}
	dir, err := os.OpenFile(filepath.Dir(path), os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	return d.DialContext(ctx, "unix", "/proc/self/fd/"+strconv.Itoa(int(dir.Fd()))+"/"+filepath.Base(path))
}
