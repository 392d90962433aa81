// Package rfbtest is a VNC viewer for tests: just enough of the RFB
// protocol (RFC 6143) to see that a screen is served and to type on its
// keyboard.
package rfbtest

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// Client speaks just enough of the RFB protocol (RFC 6143) to see a
// screen and type on its keyboard, with Raw encoding only.
type Client struct {
	c             net.Conn
	Width, Height int // the screen's size, in pixels
	bytesPerPixel int
}

// Handshake does the version 3.8 handshake with security type None
// and ClientInit (shared), and reads ServerInit.
func Handshake(c net.Conn) (*Client, error) {
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
	return &Client{
		c:             c,
		Width:         int(binary.BigEndian.Uint16(init[0:2])),
		Height:        int(binary.BigEndian.Uint16(init[2:4])),
		bytesPerPixel: int(init[4]) / 8,
	}, nil
}

// Update asks for the whole screen and reads the FramebufferUpdate that
// answers, returning its number of rectangles. The server handles
// messages in order, so the update also means that everything sent
// before has been handled.
func (r *Client) Update() (rects int, err error) {
	req := []byte{3, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(req[6:], uint16(r.Width))
	binary.BigEndian.PutUint16(req[8:], uint16(r.Height))
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

// Type presses and releases a key for each character of text. Only
// characters typed without Shift will do, and '\n' for Return.
func (r *Client) Type(text string) error {
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
