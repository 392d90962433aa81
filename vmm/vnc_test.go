package vmm

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// rfbFramebufferUpdate speaks just enough of the RFB protocol (RFC 6143)
// over c to see a screen: the version 3.8 handshake, security type None,
// ClientInit, one FramebufferUpdateRequest for the whole screen, and the
// header of the FramebufferUpdate that answers it. It returns the screen
// size from ServerInit and the number of rectangles in the update.
func rfbFramebufferUpdate(c net.Conn) (width, height, rects int, err error) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	read := func(n int) []byte {
		b := make([]byte, n)
		if err == nil {
			_, err = io.ReadFull(c, b)
		}
		return b
	}
	write := func(b []byte) {
		if err == nil {
			_, err = c.Write(b)
		}
	}
	if v := read(12); err == nil && string(v) != "RFB 003.008\n" {
		return 0, 0, 0, fmt.Errorf("server version %q, want RFB 003.008", v)
	}
	write([]byte("RFB 003.008\n"))
	types := read(int(read(1)[0]))
	if err == nil && !strings.Contains(string(types), "\x01") {
		return 0, 0, 0, fmt.Errorf("security types %v lack None (1)", types)
	}
	write([]byte{1})
	if res := read(4); err == nil && binary.BigEndian.Uint32(res) != 0 {
		return 0, 0, 0, fmt.Errorf("security result %v", res)
	}
	write([]byte{1}) // ClientInit: shared
	init := read(24)
	name := read(int(binary.BigEndian.Uint32(init[20:24])))
	width, height = int(binary.BigEndian.Uint16(init[0:2])), int(binary.BigEndian.Uint16(init[2:4]))
	req := []byte{3, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(req[6:], uint16(width))
	binary.BigEndian.PutUint16(req[8:], uint16(height))
	write(req)
	hdr := read(4)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("rfb with %q: %w", name, err)
	}
	if hdr[0] != 0 {
		return 0, 0, 0, fmt.Errorf("server message type %d, want FramebufferUpdate (0)", hdr[0])
	}
	return width, height, int(binary.BigEndian.Uint16(hdr[2:])), nil
}

// checkVNC connects an RFB client to the machine in dir through ServeVNC
// and through VNCWebsocket, and checks that both get a screen of the given
// size.
func checkVNC(t *testing.T, ctx context.Context, dir string, width, height int) {
	t.Helper()
	check := func(how string, c net.Conn) {
		t.Helper()
		defer c.Close()
		w, h, rects, err := rfbFramebufferUpdate(c)
		if err != nil {
			t.Errorf("vnc through %s: %v", how, err)
			return
		}
		if w != width || h != height || rects < 1 {
			t.Errorf("vnc through %s: %dx%d screen, %d rectangles; want %dx%d and at least one", how, w, h, rects, width, height)
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
