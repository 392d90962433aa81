package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/sbuml/sbuml/agent/internal/mux"
	"github.com/sbuml/sbuml/agent/internal/proto"
)

// Handler answers the guest's checkpoint requests.
type Handler interface {
	// Checkpoint is called for each checkpoint request of the guest
	// (sbuml-guest ckpt, the C ckpt()), with the request's id and
	// message, and returns the number the guest's caller gets: 0 in the
	// machine that took the checkpoint, the child's number in a machine
	// checked out from it. A request pending in the guest when a
	// snapshot was taken is sent again, with the same id, by the machine
	// restored from it, and a request may be sent again on any new
	// connection: the handler must answer each id the same way every
	// time (idempotence by id). The Host never runs two calls for one id
	// at once. ctx is the context of the Serve call that received the
	// request: the call goes on when the connection ends, so that its
	// answer can go to a request sent again on the next one.
	Checkpoint(ctx context.Context, id uint64, msg string) (int, error)
}

// Host is the host end of one guest's agent channel. Serve runs it over
// one connection to the machine's agent socket at a time; call Serve
// again with a new connection to reconnect. Its Agent methods use the
// current connection, waiting within their context for one to be
// established.
type Host struct {
	opener
	handler Handler
	logf    func(string, ...any)

	mu       sync.Mutex
	serveCtx context.Context
	inflight map[uint64]*ckptCall
}

// ckptCall is a Checkpoint call in progress, shared by the requests for
// its id that arrive meanwhile.
type ckptCall struct {
	done   chan struct{}
	result int
	err    error
}

// NewHost returns a Host that answers checkpoint requests with h and
// logs protocol problems (one line each) with logf; either may be nil.
func NewHost(h Handler, logf func(string, ...any)) *Host {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	host := &Host{handler: h, logf: logf, inflight: make(map[uint64]*ckptCall)}
	host.ep = mux.New(mux.Config{
		Role:      "host",
		Version:   Version,
		Opener:    true,
		Preamble:  true,
		Logf:      logf,
		OnRequest: host.onRequest,
	})
	return host
}

// Serve runs the protocol over conn, a connection to the machine's agent
// socket (vmm.DialAgent), until it fails or ctx ends; it closes conn and
// returns why (io.EOF when QEMU closed it). Operations running on that
// connection fail with ErrConnLost. Serve calls must not overlap.
func (h *Host) Serve(ctx context.Context, conn io.ReadWriteCloser) error {
	h.mu.Lock()
	h.serveCtx = ctx
	h.mu.Unlock()
	return h.ep.Serve(ctx, conn)
}

// WaitReady waits until the guest agent has completed a handshake on the
// current connection.
func (h *Host) WaitReady(ctx context.Context) error {
	_, err := h.ep.Conn(ctx)
	return err
}

func (h *Host) onRequest(_ context.Context, _ *mux.Conn, op string, args json.RawMessage) (any, error) {
	if op != proto.OpCkpt {
		return nil, fmt.Errorf("the host does not answer %q requests", op)
	}
	var a proto.CkptArgs
	if err := json.Unmarshal(args, &a); err != nil || a.ID == 0 {
		return nil, fmt.Errorf("malformed checkpoint request %s", args)
	}
	if h.handler == nil {
		return nil, errors.New("this host takes no checkpoints")
	}
	call := h.checkpoint(a)
	<-call.done
	return call.result, call.err
}

// checkpoint returns the call for a's id, starting the handler unless it
// runs already.
func (h *Host) checkpoint(a proto.CkptArgs) *ckptCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	if call := h.inflight[a.ID]; call != nil {
		return call
	}
	call := &ckptCall{done: make(chan struct{})}
	h.inflight[a.ID] = call
	ctx := h.serveCtx
	go func() {
		call.result, call.err = h.handler.Checkpoint(ctx, a.ID, a.Msg)
		h.mu.Lock()
		delete(h.inflight, a.ID)
		h.mu.Unlock()
		close(call.done)
	}()
	return call
}

// Reseed gives the guest's random number generator fresh randomness from
// the host and has the guest kernel reseed from it. A keeper calls it
// when a restored guest connects: machines checked out of one snapshot
// would otherwise draw the same "random" numbers.
func (h *Host) Reseed(ctx context.Context, seed []byte) error {
	if err := h.call(ctx, proto.OpReseed, proto.ReseedArgs{Seed: seed}, nil); err != nil {
		return fmt.Errorf("reseed the guest: %w", err)
	}
	return nil
}
