package guest_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbuml/sbuml/agent"
	"github.com/sbuml/sbuml/agent/guest"
)

// TestLocalProtocol speaks the line protocol by hand, as the C library
// does.
func TestLocalProtocol(t *testing.T) {
	h := newBlockingHandler(0)
	close(h.release)
	_, d, _, _ := setup(t, h)
	sock := filepath.Join(t.TempDir(), "sock")
	serveLocal(t, d, sock)
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	for _, tt := range []struct{ req, reply string }{
		{"ping", "ok " + agent.Version},
		{"ckpt", "ok 0"},
		{`ckpt two\nlines \\ and a backslash`, "ok 0"},
		{"fork", `err unknown request "fork": want ckpt or ping`},
		{"ckpt " + strings.Repeat("x", 5000), "err message longer than 4096 bytes"},
	} {
		fmt.Fprintf(conn, "%s\n", tt.req)
		line, err := r.ReadString('\n')
		if err != nil || line != tt.reply+"\n" {
			t.Errorf("%.20s: reply %q, %v; want %q", tt.req, line, err, tt.reply)
		}
	}
	if h.msgs[0] != "" || h.msgs[1] != "two\nlines \\ and a backslash" {
		t.Errorf("messages %q", h.msgs)
	}
}

// TestLocalClientWithdraws: a client that goes away while its
// checkpoint is pending withdraws it; the daemon goes on.
func TestLocalClientWithdraws(t *testing.T) {
	h := newBlockingHandler(0)
	host, d, _, _ := setup(t, h)
	sock := filepath.Join(t.TempDir(), "sock")
	serveLocal(t, d, sock)
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "ckpt gone\n")
	<-h.called
	conn.Close()
	time.Sleep(50 * time.Millisecond)
	close(h.release) // the answer finds nobody
	if _, err := host.Ping(testContext(t)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(testContext(t), 10*time.Second)
	defer cancel()
	if n, err := d.Checkpoint(ctx, "next"); n != 0 || err != nil {
		t.Errorf("next checkpoint: %d, %v", n, err)
	}
}

// TestCkptErrors: a host that refuses, and a missing daemon.
func TestCkptErrors(t *testing.T) {
	_, d, _, _ := setup(t, nil) // a host without a handler
	ctx := testContext(t)
	if _, err := d.Checkpoint(ctx, ""); err == nil || !strings.Contains(err.Error(), "takes no checkpoints") {
		t.Errorf("checkpoint refused by the host: %v", err)
	}
	if _, err := guest.Ckpt(ctx, filepath.Join(t.TempDir(), "none"), ""); err == nil || !strings.Contains(err.Error(), "connect to the sbuml-guest daemon") {
		t.Errorf("ckpt without a daemon: %v", err)
	}
}

func TestStats(t *testing.T) {
	host, _, _, _ := setup(t, nil)
	ctx := testContext(t)
	a, err := host.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := run(t, host, agent.ExecRequest{Argv: []string{"true"}}, ""); err != nil {
		t.Fatal(err)
	}
	b, err := host.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// This guest is the test's host: its counters move on their own, but
	// a process was started in between.
	if a.Version != agent.Version || a.Uptime <= 0 || b.Processes <= a.Processes || b.User+b.System < a.User+a.System {
		t.Errorf("stats %+v then %+v", a, b)
	}
}
