package vmm

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/sbuml/sbuml/internal/rfbtest"
)

// typeThroughVNC types text on the machine's keyboard through ServeVNC,
// as a viewer would, and returns a function that hangs up. QEMU hands a
// viewer's keys to the guest 10 ms apart (its key-delay-ms), and keys it
// still held when the viewer hung up at once were seen lost: hang up only
// after the guest has reacted.
func typeThroughVNC(t *testing.T, ctx context.Context, dir, text string) (hangUp func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- ServeVNC(sctx, dir, ln) }()
	hangUp = func() {
		stop()
		<-served
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		hangUp()
		t.Fatal(err)
	}
	hangUp = func() {
		c.Close()
		stop()
		<-served
	}
	r, err := rfbtest.Handshake(c)
	if err == nil {
		_, err = r.Update()
	}
	if err == nil {
		err = r.Type(text)
	}
	if err != nil {
		hangUp()
		t.Fatalf("type through vnc: %v", err)
	}
	c.SetDeadline(time.Time{})
	return hangUp
}

// checkVNC connects an RFB client to the machine in dir through ServeVNC
// and through VNCWebsocket, and checks that both get a screen of the given
// size.
func checkVNC(t *testing.T, ctx context.Context, dir string, width, height int) {
	t.Helper()
	check := func(how string, c net.Conn) {
		t.Helper()
		defer c.Close()
		r, err := rfbtest.Handshake(c)
		if err != nil {
			t.Errorf("vnc through %s: %v", how, err)
			return
		}
		rects, err := r.Update()
		if err != nil || r.Width != width || r.Height != height || rects < 1 {
			t.Errorf("vnc through %s: %dx%d screen, %d rectangles, %v; want %dx%d and at least one", how, r.Width, r.Height, rects, err, width, height)
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- ServeVNC(sctx, dir, ln) }()
	for range 2 { // two viewers, one after the other
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		check("ServeVNC", c)
	}
	stop()
	if err := <-served; err != nil {
		t.Errorf("ServeVNC after its context ended: %v", err)
	}

	srv := httptest.NewServer(VNCWebsocket(dir))
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"binary"}})
	if err != nil {
		t.Fatal(err)
	}
	if ws.Subprotocol() != "binary" {
		t.Errorf("websocket subprotocol %q, want binary", ws.Subprotocol())
	}
	check("VNCWebsocket", websocket.NetConn(ctx, ws, websocket.MessageBinary))

	// A page of another web site cannot use the viewer's browser to
	// reach the machine.
	_, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"http://elsewhere.example"}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("websocket from another origin: %v, response %v; want 403", err, resp)
	}
}

// TestVNCServerGone relays to a machine whose VNC socket is left but
// nobody listens on it any more, as after QEMU was killed: ServeVNC stops
// with an error, the websocket handler answers 502, and 404 without a
// socket at all.
func TestVNCServerGone(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, time.Minute)
	dir := t.TempDir()
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, VNCSocket), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- ServeVNC(ctx, dir, ln) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("viewer read %d bytes from a machine without a vnc server", n)
	}
	c.Close()
	select {
	case err := <-served:
		if err == nil || !strings.Contains(err.Error(), "connect to its vnc server") {
			t.Errorf("ServeVNC: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("ServeVNC went on serving a machine without a vnc server")
	}

	srv := httptest.NewServer(VNCWebsocket(dir))
	defer srv.Close()
	for _, want := range []int{http.StatusBadGateway, http.StatusNotFound} {
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("websocket handler: %s, want %d", resp.Status, want)
		}
		os.Remove(filepath.Join(dir, VNCSocket))
	}
}
