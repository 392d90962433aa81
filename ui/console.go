package ui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"

	"github.com/coder/websocket"
	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/vmm"
)

// A machine's serial console is a socket that QEMU serves to one client.
// The server is that client for all its pages at once: the first page that
// opens a machine's console attaches it as `sbuml console` does
// (vmm.Machine.ShareConsole, so commit, freeze and halt keep working), the
// others share that attachment, and the last one to leave detaches it.
// While pages show it, `sbuml console` in a shell is refused with one line
// saying the console is attached in another sbuml process, and a page that
// opens the console while a shell shows it is told the same.

const (
	// backlogSize is how much recent console output a page that opens the
	// console is shown first.
	backlogSize = 16 << 10
	// viewerQueue is how many pieces of output may wait for a slow page
	// before it is disconnected.
	viewerQueue = 256
)

// consoleMessage is a text message on the console websocket: what
// happened to the console, for the page to show. Output travels in binary
// messages, typed input in text messages from the page.
type consoleMessage struct {
	// Event is "attached", "busy" (another process shows the console),
	// "closed" (QEMU exited) or "error".
	Event   string `json:"event"`
	Message string `json:"message"`
}

// consoles holds the console sessions of the server, by machine directory.
type consoles struct {
	mu   sync.Mutex
	hubs map[string]*consoleHub
}

func newConsoles() *consoles { return &consoles{hubs: map[string]*consoleHub{}} }

// consoleHub is one machine's attached console and the pages showing it.
type consoleHub struct {
	name    string
	cancel  context.CancelFunc
	in      *io.PipeWriter
	stopped chan struct{} // closed when the console is detached
	// why says why the console was detached, set before stopped is closed.
	why consoleMessage

	mu      sync.Mutex
	backlog []byte
	viewers map[*viewer]struct{}
	ended   bool
}

// viewer is one page's websocket.
type viewer struct {
	out  chan []byte
	gone chan struct{}  // closed when the hub drops the viewer
	why  consoleMessage // why it was dropped, set before gone is closed
}

// console serves GET /api/console?machine=NAME: a websocket to the
// machine's serial console.
func (s *Server) console(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("machine")
	sb, err := s.openScrapbook()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	dir, err := sb.MachineDir(name)
	if err == nil {
		_, err = os.Stat(filepath.Join(dir, vmm.ConfigFile))
	}
	if err != nil {
		sb.Close()
		writeError(w, http.StatusNotFound, fmt.Sprintf("console: no machine %s (see 'sbuml ps')", name))
		return
	}
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		sb.Close()
		return // Accept has answered
	}
	defer ws.CloseNow()
	ctx := r.Context()
	hub, v, err := s.consoles.join(s.ctx, sb, name, dir)
	sb.Close()
	if err != nil {
		ev := "error"
		if errors.Is(err, vmm.ErrConsoleBusy) {
			ev = "busy"
			err = fmt.Errorf("the console of %s is shown by another sbuml process (sbuml console in a shell?): detach it there with Ctrl-] q, then open it here again", name)
		}
		sendMessage(ctx, ws, consoleMessage{Event: ev, Message: err.Error()})
		ws.Close(websocket.StatusPolicyViolation, ev)
		return
	}
	defer s.consoles.leave(hub, v)
	sendMessage(ctx, ws, consoleMessage{Event: "attached", Message: "attached to the serial console of " + name})
	go relayInput(ctx, ws, hub)
	relayOutput(ctx, ws, v)
}

// relayInput passes what the page types to the console until the
// websocket closes.
func relayInput(ctx context.Context, ws *websocket.Conn, hub *consoleHub) {
	for {
		_, b, err := ws.Read(ctx)
		if err != nil {
			return
		}
		if hub.input(b) != nil {
			return
		}
	}
}

// relayOutput sends the console's output to the page until either ends.
func relayOutput(ctx context.Context, ws *websocket.Conn, v *viewer) {
	for {
		select {
		case b := <-v.out:
			if err := ws.Write(ctx, websocket.MessageBinary, b); err != nil {
				return
			}
		case <-v.gone:
			// Send what was queued before the end, then say why.
			for len(v.out) > 0 {
				if ws.Write(ctx, websocket.MessageBinary, <-v.out) != nil {
					return
				}
			}
			sendMessage(ctx, ws, v.why)
			ws.Close(websocket.StatusNormalClosure, v.why.Event)
			return
		case <-ctx.Done():
			return
		}
	}
}

func sendMessage(ctx context.Context, ws *websocket.Conn, m consoleMessage) {
	b, _ := json.Marshal(m)
	ws.Write(ctx, websocket.MessageText, b)
}

// join adds a viewer to the machine's console, attaching it first if no
// page of this server shows it.
func (c *consoles) join(ctx context.Context, sb *sbuml.Scrapbook, name, dir string) (*consoleHub, *viewer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	hub := c.hubs[dir]
	if hub != nil {
		select {
		case <-hub.stopped:
			hub = nil
		default:
		}
	}
	if hub == nil {
		var err error
		if hub, err = attach(ctx, sb, name); err != nil {
			return nil, nil, err
		}
		c.hubs[dir] = hub
	}
	v := &viewer{out: make(chan []byte, viewerQueue), gone: make(chan struct{})}
	hub.mu.Lock()
	defer hub.mu.Unlock()
	if hub.ended {
		v.why = hub.why
		close(v.gone)
		return hub, v, nil
	}
	if len(hub.backlog) > 0 {
		v.out <- append([]byte(nil), hub.backlog...)
	}
	hub.viewers[v] = struct{}{}
	return hub, v, nil
}

// leave removes a viewer; the last one detaches the console, so that
// `sbuml console` can attach it again.
func (c *consoles) leave(hub *consoleHub, v *viewer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	hub.mu.Lock()
	delete(hub.viewers, v)
	last := len(hub.viewers) == 0
	hub.mu.Unlock()
	if last {
		hub.cancel()
		<-hub.stopped
		for dir, h := range c.hubs {
			if h == hub {
				delete(c.hubs, dir)
			}
		}
	}
}

// closeAll detaches every console.
func (c *consoles) closeAll() {
	c.mu.Lock()
	hubs := c.hubs
	c.hubs = map[string]*consoleHub{}
	c.mu.Unlock()
	for _, h := range hubs {
		h.cancel()
		<-h.stopped
	}
}

// attach attaches the console of machine name as `sbuml console` does and
// starts copying its output to the hub's viewers.
func attach(ctx context.Context, sb *sbuml.Scrapbook, name string) (*consoleHub, error) {
	m, err := sb.OpenMachine(name)
	if err != nil {
		return nil, err
	}
	if err := m.ShareConsole(ctx); err != nil {
		m.Close()
		return nil, err
	}
	hctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	hub := &consoleHub{name: name, cancel: cancel, in: pw, stopped: make(chan struct{}),
		backlog: consoleTail(m.ConsoleLog(), backlogSize), viewers: map[*viewer]struct{}{}}
	go func() {
		err := m.Attach(hctx, pr, hub)
		pw.Close()
		m.Close()
		hub.end(err)
	}()
	return hub, nil
}

// end drops the viewers once the console is detached, saying why.
func (h *consoleHub) end(err error) {
	switch {
	case errors.Is(err, vmm.ErrConsoleClosed):
		h.why = consoleMessage{Event: "closed", Message: fmt.Sprintf("console of %s closed: its QEMU exited", h.name)}
	case err == nil || errors.Is(err, context.Canceled):
		h.why = consoleMessage{Event: "closed", Message: fmt.Sprintf("console of %s detached", h.name)}
	default:
		h.why = consoleMessage{Event: "error", Message: err.Error()}
	}
	h.mu.Lock()
	h.ended = true
	for v := range h.viewers {
		v.why = h.why
		close(v.gone)
	}
	h.viewers = map[*viewer]struct{}{}
	h.mu.Unlock()
	close(h.stopped)
}

// Write takes the guest's output (Attach writes it here) and queues it
// for every viewer; a viewer that has fallen viewerQueue pieces behind is
// dropped.
func (h *consoleHub) Write(b []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.backlog = append(h.backlog, b...)
	if over := len(h.backlog) - backlogSize; over > 0 {
		h.backlog = append(h.backlog[:0], h.backlog[over:]...)
	}
	for v := range h.viewers {
		select {
		case v.out <- append([]byte(nil), b...):
		default:
			delete(h.viewers, v)
			v.why = consoleMessage{Event: "error", Message: "this page fell behind the console's output: open the console again"}
			close(v.gone)
		}
	}
	return len(b), nil
}

// input passes bytes a page typed to the guest. Attach reads Ctrl-] q as
// "detach"; a page detaches by closing, so each Ctrl-] is doubled, which
// Attach passes on as one.
func (h *consoleHub) input(b []byte) error {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		out = append(out, c)
		if c == vmm.EscapeChar {
			out = append(out, c)
		}
	}
	_, err := h.in.Write(out)
	return err
}

// consoleTail returns at most n bytes from the end of the console log.
func consoleTail(path string, n int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	off := max(fi.Size()-n, 0)
	b := make([]byte, fi.Size()-off)
	k, _ := f.ReadAt(b, off)
	return b[:k]
}
