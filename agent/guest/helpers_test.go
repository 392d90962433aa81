package guest_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sbuml/sbuml/agent"
	"github.com/sbuml/sbuml/agent/guest"
)

// logger collects log lines of both sides; tests print them on failure.
type logger struct {
	mu    sync.Mutex
	lines []string
}

func (l *logger) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logger) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// socketPair returns the two ends of a unix stream socket pair, the
// transport the agent's virtio-serial port behaves most like.
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	return conns[0], conns[1]
}

// link is one connection between a Host and a Daemon.
type link struct {
	hostConn, guestConn net.Conn
	hostDone, guestDone chan error
}

// connect runs host and daemon over a new socket pair.
func connect(t *testing.T, h *agent.Host, d *guest.Daemon) *link {
	t.Helper()
	l := &link{hostDone: make(chan error, 1), guestDone: make(chan error, 1)}
	l.hostConn, l.guestConn = socketPair(t)
	go func() { l.hostDone <- h.Serve(context.Background(), l.hostConn) }()
	go func() { l.guestDone <- d.Serve(context.Background(), l.guestConn) }()
	t.Cleanup(l.drop)
	return l
}

// drop closes the link and waits for both sides to notice.
func (l *link) drop() {
	l.hostConn.Close()
	l.guestConn.Close()
	<-l.hostDone
	<-l.guestDone
	l.hostDone <- nil // later drops return at once
	l.guestDone <- nil
}

// setup returns a connected host and guest daemon, with a handler for
// checkpoints (nil refuses them).
func setup(t *testing.T, h agent.Handler) (*agent.Host, *guest.Daemon, *link, *logger) {
	t.Helper()
	log := &logger{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", log)
		}
	})
	host := agent.NewHost(h, log.logf)
	d := guest.NewDaemon(log.logf)
	l := connect(t, host, d)
	if err := host.WaitReady(testContext(t)); err != nil {
		t.Fatal(err)
	}
	return host, d, l, log
}

// run runs a process and returns its exit code, stdout and stderr.
func run(t *testing.T, a agent.Agent, req agent.ExecRequest, stdin string) (int, string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	var in io.Reader
	if stdin != "" {
		in = strings.NewReader(stdin)
	}
	code, err := agent.Run(testContext(t), a, req, in, &out, &errb)
	return code, out.String(), errb.String(), err
}
