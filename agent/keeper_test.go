package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbuml/sbuml/agent"
	"github.com/sbuml/sbuml/agent/guest"
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fixture runs in the test process what runs around a machine: a guest
// daemon, a Host connected to it over a socket pair, and a keeper
// serving the Host on a unix socket.
type fixture struct {
	host   *agent.Host
	d      *guest.Daemon
	sock   string
	hc, gc net.Conn      // the current link's ends
	done   chan struct{} // receives once per side when the link ends
}

func newFixture(t *testing.T, calls agent.CallHandler) *fixture {
	t.Helper()
	f := &fixture{host: agent.NewHost(nil, t.Logf), d: guest.NewDaemon(t.Logf)}
	f.connect(t)
	f.sock = filepath.Join(t.TempDir(), "keeper.sock")
	ln, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- agent.Serve(ctx, ln, f.host, calls) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; !errors.Is(err, context.Canceled) {
			t.Errorf("Serve: %v", err)
		}
		f.drop()
	})
	return f
}

// connect links the host and the daemon over a new socket pair.
func (f *fixture) connect(t *testing.T) {
	f.hc, f.gc = socketPair(t)
	f.done = make(chan struct{}, 2)
	go func() { f.host.Serve(context.Background(), f.hc); f.done <- struct{}{} }()
	go func() { f.d.Serve(context.Background(), f.gc); f.done <- struct{}{} }()
}

// socketPair returns the two ends of a unix stream socket pair.
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f) // pollable: Close ends a blocked Read
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	return conns[0], conns[1]
}

// drop ends the link, as a QEMU that went away does.
func (f *fixture) drop() {
	f.hc.Close()
	f.gc.Close()
	<-f.done
	<-f.done
}

func (f *fixture) dial(t *testing.T) *agent.Client {
	t.Helper()
	c, err := agent.Dial(testContext(t), f.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestKeeper runs the Agent operations through the keeper.
func TestKeeper(t *testing.T) {
	calls := func(ctx context.Context, name string, args json.RawMessage) (any, error) {
		if name == "add" {
			var xs []int
			json.Unmarshal(args, &xs)
			return xs[0] + xs[1], nil
		}
		return nil, fmt.Errorf("no call %s", name)
	}
	f := newFixture(t, calls)
	c := f.dial(t)
	ctx := testContext(t)

	var out, errb bytes.Buffer
	code, err := agent.Run(ctx, c, agent.ExecRequest{Argv: []string{"sh", "-c", "tr a-z A-Z; echo err >&2; exit 3"}}, strings.NewReader("through the keeper"), &out, &errb)
	if code != 3 || err != nil || out.String() != "THROUGH THE KEEPER" || errb.String() != "err\n" {
		t.Errorf("exec: %d %v %q %q", code, err, out.String(), errb.String())
	}
	if _, err := agent.Run(ctx, c, agent.ExecRequest{Argv: []string{"no-such-program-here"}}, nil, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("exec of a missing program: %v", err)
	}

	dir := t.TempDir()
	data := bytes.Repeat([]byte("0123456789abcdef"), 100_000) // 1.6 MB: several windows per hop
	os.WriteFile(filepath.Join(dir, "f"), data, 0o600)
	var archive bytes.Buffer
	if err := c.CopyOut(ctx, filepath.Join(dir, "f"), &archive); err != nil {
		t.Fatal(err)
	}
	into := t.TempDir()
	if err := c.CopyIn(ctx, into, &archive); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(into, "f")); !bytes.Equal(b, data) {
		t.Errorf("copy out and in through the keeper: %d bytes, want %d", len(b), len(data))
	}
	if err := c.CopyIn(ctx, filepath.Join(into, "missing"), bytes.NewReader(nil)); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("copy into a missing directory: %v", err)
	}

	if v, err := c.Ping(ctx); v != agent.Version || err != nil {
		t.Errorf("ping: %q %v", v, err)
	}
	if st, err := c.Stats(ctx); err != nil || st.Processes == 0 {
		t.Errorf("stats: %+v %v", st, err)
	}
	var sum int
	if err := c.Call(ctx, "add", []int{2, 3}, &sum); err != nil || sum != 5 {
		t.Errorf("call add: %d %v", sum, err)
	}
	if err := c.Call(ctx, "sub", nil, nil); err == nil || !strings.Contains(err.Error(), "keeper call sub: no call sub") {
		t.Errorf("unknown call: %v", err)
	}
}

// TestKeeperConnectionLost: a client's exec whose guest connection drops
// fails with ErrConnLost; the process is killed; the next exec works.
func TestKeeperConnectionLost(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial(t)
	ctx := testContext(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	s, err := c.Exec(ctx, agent.ExecRequest{Argv: []string{"sh", "-c", "echo $$ > " + pidFile + "; exec sleep 100"}})
	if err != nil {
		t.Fatal(err)
	}
	pid := waitPID(t, pidFile)
	f.drop()
	if _, err := s.Wait(); !errors.Is(err, agent.ErrConnLost) {
		t.Errorf("Wait: %v, want ErrConnLost", err)
	}
	waitGone(t, pid)
	f.connect(t)
	var out bytes.Buffer
	if code, err := agent.Run(ctx, c, agent.ExecRequest{Argv: []string{"echo", "again"}}, nil, &out, io.Discard); code != 0 || err != nil || out.String() != "again\n" {
		t.Errorf("exec after reconnecting: %d %v %q", code, err, out.String())
	}
}

// TestKeeperClientGone: closing the client kills its processes.
func TestKeeperClientGone(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	if _, err := c.Exec(testContext(t), agent.ExecRequest{Argv: []string{"sh", "-c", "echo $$ > " + pidFile + "; exec sleep 100"}}); err != nil {
		t.Fatal(err)
	}
	pid := waitPID(t, pidFile)
	c.Close()
	waitGone(t, pid)
}

// TestKeeperBoundsBuffering: a client that does not read stops the
// process after a bounded amount of output, however fast it writes.
func TestKeeperBoundsBuffering(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial(t)
	counter := filepath.Join(t.TempDir(), "kib")
	s, err := c.Exec(testContext(t), agent.ExecRequest{Argv: []string{"sh", "-c",
		"i=0; while head -c 65536 /dev/zero; do i=$((i+64)); echo $i > " + counter + "; done"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Wait until the count stops moving.
	last := -1
	for {
		time.Sleep(300 * time.Millisecond)
		b, _ := os.ReadFile(counter)
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if n == last {
			break
		}
		last = n
	}
	// Two windows of 256 KiB (guest to keeper, keeper to client), the
	// keeper's copy buffer, the pipe: about 600 KiB.
	if last > 1000 {
		t.Errorf("the process wrote %d KiB to a client that reads nothing", last)
	}
	t.Logf("stopped after %d KiB", last)
	n, _ := io.Copy(io.Discard, io.LimitReader(s.Stdout, 4<<20))
	if n != 4<<20 {
		t.Errorf("read %d bytes after the stall", n)
	}
}

// waitPID reads a pid a process wrote to a file.
func waitPID(t *testing.T, path string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(path)
		if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil {
			return pid
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no pid in %s", path)
	return 0
}

// waitGone waits for a process to have been killed.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil || strings.Contains(string(b), ") Z ") {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("process %d still runs", pid)
}

// TestKeeperErrors: an error of the guest reaches the client once, with
// the client's words around it.
func TestKeeperErrors(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial(t)
	// The test is not allowed to set the host's clock through the daemon
	// running in it; a time the kernel refuses shows the error's path.
	err := c.SetTime(testContext(t), time.Unix(-1, 0))
	if err == nil || strings.Count(err.Error(), "set the guest clock") != 1 || !strings.Contains(err.Error(), "set the clock: invalid argument") {
		t.Errorf("SetTime of a negative time through the keeper: %v", err)
	}
}
