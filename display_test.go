package sbuml_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/internal/rfbtest"
	"github.com/sbuml/sbuml/vmm"
)

// TestDisplayTravels checks that the screen is part of a snapshot: the
// screen of a machine just before a commit and that of a machine checked
// out of it are the same, byte for byte, and a VNC viewer sees it
// through ServeVNC.
func TestDisplayTravels(t *testing.T) {
	t.Parallel()
	s := guestScrapbook(t, 2)
	bootGuestWith(t, s, "m1", sbuml.BootOptions{Memory: 256 << 20, Accel: guestAccel, Display: vmm.DisplayVNC})
	// Hide the text cursor: QEMU does not save where it is in its blink.
	sh(t, s, "m1", `printf '\033[?25l\033[2J\033[Hhello from the screen of m1\n' > /dev/tty1`)
	ctx := guestContext(t)

	// A viewer through the porcelain's relay.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	vctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- s.ServeVNC(vctx, "m1", ln) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r, err := rfbtest.Handshake(c)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := r.Update(); err != nil || n == 0 {
		t.Fatalf("framebuffer update: %d rectangles, %v", n, err)
	}
	c.Close()
	stop()
	if err := <-served; err != nil {
		t.Errorf("ServeVNC: %v", err)
	}

	res, err := s.Commit(ctx, "m1", sbuml.CommitOptions{Freeze: true})
	if err != nil {
		t.Fatal(err)
	}
	before := screendump(t, s, "m1")
	checkoutGuest(t, s, res.ID.String(), "m2", sbuml.CheckoutOptions{})
	after := screendump(t, s, "m2")
	if !bytes.Equal(before, after) {
		t.Errorf("the checkout's screen differs from the screen at the commit (%d and %d bytes)", len(before), len(after))
	}
	if !bytes.Equal(before, screendump(t, s, "m1")) {
		t.Error("the frozen original's screen changed")
	}
}

// screendump returns a machine's screen as a PPM image.
func screendump(t testing.TB, s *sbuml.Scrapbook, machine string) []byte {
	t.Helper()
	m, err := s.OpenMachine(machine)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	p := filepath.Join(t.TempDir(), "screen.ppm")
	if err := m.Screendump(guestContext(t), p); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
