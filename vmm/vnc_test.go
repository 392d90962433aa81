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

// rfbClient speaks just enough of the RFB protocol (RFC 6143) to see a
// screen and type on its keyboard, with Raw encoding only.
type rfbClient struct {
	c             net.Conn
	width, height int
	bytesPerPixel int
}

// rfbHandshake does the version 3.8 handshake with security type None
// and ClientInit (shared), and reads ServerInit.
func rfbHandshake(c net.Conn) (*rfbClient, error) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	var err error
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
		return nil, fmt.Errorf("server version %q, want RFB 003.008", v)
	}
	write([]byte("RFB 003.008\n"))
	types := read(int(read(1)[0]))
	if err == nil && !strings.Contains(string(types), "\x01") {
		return nil, fmt.Errorf("security types %v lack None (1)", types)
	}
	write([]byte{1})
	if res := read(4); err == nil && binary.BigEndian.Uint32(res) != 0 {
		return nil, fmt.Errorf("security result %v", res)
	}
	write([]byte{1}) // ClientInit: shared
	init := read(24)
	read(int(binary.BigEndian.Uint32(init[20:24]))) // the desktop's name
	if err != nil {
		return nil, fmt.Errorf("rfb handshake: %w", err)
	}
	return &rfbClient{
		c:             c,
		width:         int(binary.BigEndian.Uint16(init[0:2])),
		height:        int(binary.BigEndian.Uint16(init[2:4])),
		bytesPerPixel: int(init[4]) / 8,
	}, nil
}

// update asks for the whole screen and reads the FramebufferUpdate that
// answers, returning its number of rectangles. The server handles
// messages in order, so the update also means that everything sent
// before has been handled.
func (r *rfbClient) update() (rects int, err error) {
	req := []byte{3, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(req[6:], uint16(r.width))
	binary.BigEndian.PutUint16(req[8:], uint16(r.height))
	if _, err := r.c.Write(req); err != nil {
		return 0, err
	}
	hdr := make([]byte, 4)
	if _, err := io.ReadFull(r.c, hdr); err != nil {
		return 0, err
	}
	if hdr[0] != 0 {
		return 0, fmt.Errorf("server message type %d, want FramebufferUpdate (0)", hdr[0])
	}
	rects = int(binary.BigEndian.Uint16(hdr[2:]))
	for range rects {
		rect := make([]byte, 12)
		if _, err := io.ReadFull(r.c, rect); err != nil {
			return 0, err
		}
		if enc := binary.BigEndian.Uint32(rect[8:]); enc != 0 {
			return 0, fmt.Errorf("rectangle in encoding %d, want Raw (0)", enc)
		}
		w, h := int(binary.BigEndian.Uint16(rect[4:])), int(binary.BigEndian.Uint16(rect[6:]))
		if _, err := io.CopyN(io.Discard, r.c, int64(w*h*r.bytesPerPixel)); err != nil {
			return 0, err
		}
	}
	return rects, nil
}

// typeText presses and releases a key for each character of text. Only
// characters typed without Shift will do, and '\n' for Return.
func (r *rfbClient) typeText(text string) error {
	for _, ch := range text {
		sym := uint32(ch)
		if ch == '\n' {
			sym = 0xff0d // XK_Return
		}
		for _, down := range []byte{1, 0} {
			ev := []byte{4, down, 0, 0, 0, 0, 0, 0}
			binary.BigEndian.PutUint32(ev[4:], sym)
			if _, err := r.c.Write(ev); err != nil {
				return fmt.Errorf("rfb key event: %w", err)
			}
		}
	}
	return nil
}

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
	r, err := rfbHandshake(c)
	if err == nil {
		_, err = r.update()
	}
	if err == nil {
		err = r.typeText(text)
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
		r, err := rfbHandshake(c)
		if err != nil {
			t.Errorf("vnc through %s: %v", how, err)
			return
		}
		rects, err := r.update()
		if err != nil || r.width != width || r.height != height || rects < 1 {
			t.Errorf("vnc through %s: %dx%d screen, %d rectangles, %v; want %dx%d and at least one", how, r.width, r.height, rects, err, width, height)
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
