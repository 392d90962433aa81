package guest_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sbuml/sbuml/agent"
	"github.com/sbuml/sbuml/agent/guest"
)

// These tests run the guest daemon in the test process, on the host,
// over socket pairs: its processes are the host's.

func TestExec(t *testing.T) {
	host, _, _, _ := setup(t, nil)
	dir := t.TempDir()
	tests := []struct {
		name      string
		req       agent.ExecRequest
		stdin     string
		code      int
		out, errs string
		fails     string // part of the error, if it fails
	}{
		{name: "streams and status", req: agent.ExecRequest{Argv: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}},
			code: 3, out: "out\n", errs: "err\n"},
		{name: "stdin", req: agent.ExecRequest{Argv: []string{"sh", "-c", "tr a-z A-Z; echo done"}}, stdin: "hello\nworld\n",
			out: "HELLO\nWORLD\ndone\n"},
		{name: "stdin left closed", req: agent.ExecRequest{Argv: []string{"cat"}}, out: ""},
		{name: "env and dir", req: agent.ExecRequest{Argv: []string{"sh", "-c", "echo $GREETING; pwd"}, Env: []string{"GREETING=hi"}, Dir: dir},
			out: "hi\n" + dir + "\n"},
		{name: "PATH of the request", req: agent.ExecRequest{Argv: []string{"only-here"}, Env: []string{"PATH=" + writeScript(t, dir, "only-here", "echo found")}},
			out: "found\n"},
		{name: "signal", req: agent.ExecRequest{Argv: []string{"sh", "-c", "kill -TERM $$"}}, code: 128 + 15},
		{name: "not found", req: agent.ExecRequest{Argv: []string{"no-such-program-here"}}, fails: "no-such-program-here: not found in PATH"},
		{name: "bad dir", req: agent.ExecRequest{Argv: []string{"true"}, Dir: "/no/such/dir"}, fails: "no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs, err := run(t, host, tt.req, tt.stdin)
			if tt.fails != "" {
				if err == nil || !strings.Contains(err.Error(), tt.fails) {
					t.Fatalf("error %v, want one saying %q", err, tt.fails)
				}
				return
			}
			if err != nil || code != tt.code || out != tt.out || errs != tt.errs {
				t.Errorf("got %d %q %q %v, want %d %q %q", code, out, errs, err, tt.code, tt.out, tt.errs)
			}
		})
	}
}

func writeScript(t *testing.T, dir, name, body string) string {
	bin := filepath.Join(dir, "bin")
	os.MkdirAll(bin, 0o755)
	if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestExecTTY runs a process on a terminal: its size, a resize, typed
// input, and stdout and stderr merged.
func TestExecTTY(t *testing.T) {
	host, _, _, _ := setup(t, nil)
	ctx := testContext(t)
	s, err := host.Exec(ctx, agent.ExecRequest{
		Argv: []string{"sh", "-c", "stty size; tty; echo to-stderr >&2; read line; echo got:$line; stty size"},
		TTY:  true, Rows: 30, Cols: 100,
	})
	if err != nil {
		t.Fatal(err)
	}
	out := bufio.NewReader(s.Stdout)
	expect := func(want string) {
		t.Helper()
		for {
			line, err := out.ReadString('\n')
			if err != nil {
				t.Fatalf("waiting for %q: %v", want, err)
			}
			if strings.Contains(line, want) {
				return
			}
		}
	}
	expect("30 100")
	expect("/dev/pts/")
	expect("to-stderr")
	if err := s.Resize(40, 120); err != nil {
		t.Fatal(err)
	}
	// The resize goes ahead of the input on the same connection.
	io.WriteString(s.Stdin, "hello\n")
	expect("got:hello")
	expect("40 120")
	if b, _ := io.ReadAll(s.Stderr); len(b) != 0 {
		t.Errorf("stderr of a terminal session: %q", b)
	}
	io.Copy(io.Discard, out)
	if code, err := s.Wait(); code != 0 || err != nil {
		t.Errorf("Wait = %d, %v", code, err)
	}
}

func TestExecSignalAndClose(t *testing.T) {
	host, _, _, _ := setup(t, nil)
	ctx := testContext(t)
	s, err := host.Exec(ctx, agent.ExecRequest{Argv: []string{"sleep", "100"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, s.Stderr)
	io.Copy(io.Discard, s.Stdout)
	if code, err := s.Wait(); code != 128+int(syscall.SIGTERM) || err != nil {
		t.Errorf("Wait after SIGTERM = %d, %v", code, err)
	}

	// Close kills the process group, grandchildren included.
	pidFile := filepath.Join(t.TempDir(), "pid")
	s, err = host.Exec(ctx, agent.ExecRequest{Argv: []string{"sh", "-c", "sleep 100 & echo $! > " + pidFile + "; wait"}})
	if err != nil {
		t.Fatal(err)
	}
	pid := waitPID(t, pidFile)
	s.Close()
	if _, err := s.Wait(); err == nil || !strings.Contains(err.Error(), "closed by the host") {
		t.Errorf("Wait after Close: %v", err)
	}
	waitGone(t, pid)
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

// waitGone waits for a process to have been killed (it may stay a zombie
// of a killed parent for a moment).
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

// TestSessionsDieWithTheConnection: an exec running when the connection
// drops is killed with its process group, its host side gets an error
// saying the connection was lost, and the next connection works.
func TestSessionsDieWithTheConnection(t *testing.T) {
	host, d, l, _ := setup(t, nil)
	ctx := testContext(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	s, err := host.Exec(ctx, agent.ExecRequest{Argv: []string{"sh", "-c", "sleep 100 & echo $! > " + pidFile + "; wait"}})
	if err != nil {
		t.Fatal(err)
	}
	pid := waitPID(t, pidFile)
	l.drop()
	_, err = s.Wait()
	if !errors.Is(err, agent.ErrConnLost) || !strings.Contains(err.Error(), `exec "sh" "-c"`) || !strings.HasSuffix(err.Error(), "run it again") {
		t.Errorf("Wait across a dropped connection: %v", err)
	}
	t.Log(err)
	waitGone(t, pid)

	connect(t, host, d)
	if code, out, _, err := run(t, host, agent.ExecRequest{Argv: []string{"echo", "again"}}, ""); code != 0 || out != "again\n" || err != nil {
		t.Errorf("exec on the next connection: %d %q %v", code, out, err)
	}
}

// blockingHandler answers checkpoints with answer once released, and
// counts its calls per id.
type blockingHandler struct {
	answer  int
	release chan struct{}
	mu      sync.Mutex
	calls   map[uint64]int
	msgs    []string
	called  chan uint64
}

func newBlockingHandler(answer int) *blockingHandler {
	return &blockingHandler{answer: answer, release: make(chan struct{}), calls: make(map[uint64]int), called: make(chan uint64, 10)}
}

func (h *blockingHandler) Checkpoint(ctx context.Context, id uint64, msg string) (int, error) {
	h.mu.Lock()
	h.calls[id]++
	h.msgs = append(h.msgs, msg)
	h.mu.Unlock()
	h.called <- id
	select {
	case <-h.release:
		return h.answer, nil
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

// TestCkptAcrossReconnection is what happens across a snapshot: a
// checkpoint request pending when the connection drops is sent again, with
// the same id, on the next one, and its caller gets exactly one answer.
func TestCkptAcrossReconnection(t *testing.T) {
	h := newBlockingHandler(0)
	host, d, l, _ := setup(t, h)
	ctx := testContext(t)
	sock := filepath.Join(t.TempDir(), "sock")
	serveLocal(t, d, sock)

	type result struct {
		n   int
		err error
	}
	res := make(chan result, 1)
	go func() {
		n, err := guest.Ckpt(ctx, sock, "line one\nback\\slash")
		res <- result{n, err}
	}()
	id := <-h.called

	// The same host reconnects while its handler still runs: the re-sent
	// request joins that call instead of starting another.
	l.drop()
	l = connect(t, host, d)
	time.Sleep(100 * time.Millisecond) // let the request be sent again
	close(h.release)
	if r := <-res; r.n != 0 || r.err != nil {
		t.Fatalf("ckpt in the original = %d, %v", r.n, r.err)
	}
	if h.calls[id] != 1 || h.msgs[0] != "line one\nback\\slash" {
		t.Errorf("handler calls %v, messages %q", h.calls, h.msgs)
	}

	// A request pending when a snapshot is taken: the restored machine's
	// new keeper gets it again, with its id, and its answer is the one the
	// caller sees.
	l.drop()
	original := newBlockingHandler(0)
	t.Cleanup(func() { close(original.release) })
	l = connect(t, agent.NewHost(original, nil), d)
	go func() {
		n, err := d.Checkpoint(ctx, "second")
		res <- result{n, err}
	}()
	id2 := <-original.called
	l.drop()
	child := newBlockingHandler(7)
	close(child.release)
	connect(t, agent.NewHost(child, nil), d)
	if r := <-res; r.n != 7 || r.err != nil {
		t.Fatalf("ckpt in the restored machine = %d, %v", r.n, r.err)
	}
	if child.calls[id2] != 1 || id2 == id {
		t.Errorf("the new host was called %v, want once for %x", child.calls, id2)
	}
}

func serveLocal(t *testing.T, d *guest.Daemon, sock string) {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		d.ServeLocal(ctx, ln)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// failingWriter fails once it has taken n bytes, like a full disk.
type failingWriter struct{ n int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.n -= len(p); w.n < 0 {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

// TestRunWriterFails: Run stops a process whose output it cannot write,
// and says why.
func TestRunWriterFails(t *testing.T) {
	host, _, _, _ := setup(t, nil)
	_, err := agent.Run(testContext(t), host, agent.ExecRequest{Argv: []string{"yes"}}, nil, &failingWriter{n: 100_000}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), `exec "yes" in the guest: copy its output: disk full`) {
		t.Errorf("Run into a failing writer: %v", err)
	}
}
