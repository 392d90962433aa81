package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/internal/testenv"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/transport"
	"golang.org/x/sys/unix"
)

// sbumlRun runs the built sbuml (see TestMain) with a private HOME and
// returns stdout, stderr and the exit code.
func sbumlRun(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(sbumlBin, args...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "SBUML_DIR=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("sbuml %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

// sbumlOK runs sbuml and fails the test unless it succeeds.
func sbumlOK(t *testing.T, args ...string) (string, string) {
	t.Helper()
	out, errOut, code := sbumlRun(t, args...)
	if code != 0 {
		t.Fatalf("sbuml %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out, errOut
}

// sbumlFails runs sbuml, expects it to fail with one line on stderr
// containing msg, and returns that line.
func sbumlFails(t *testing.T, msg string, args ...string) string {
	t.Helper()
	out, errOut, code := sbumlRun(t, args...)
	if code == 0 {
		t.Fatalf("sbuml %s succeeded:\n%s", strings.Join(args, " "), out)
	}
	lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "sbuml: ") || !strings.Contains(last, msg) {
		t.Fatalf("sbuml %s: stderr %q; want a last line 'sbuml: ...' saying %q", strings.Join(args, " "), errOut, msg)
	}
	return last
}

// startServe runs `sbuml serve` on a free port of 127.0.0.1 and returns
// its URL; the server is stopped when the test ends, and must stop
// cleanly.
func startServe(t *testing.T, book string, args ...string) string {
	t.Helper()
	url, _ := runServe(t, book, true, args...)
	return url
}

// runServe runs `sbuml serve` with args on a free port of 127.0.0.1 until
// the test ends, and returns its URL and process. With clean, the server
// must exit 0 when it is stopped; either way it must stop within 15 s of
// SIGTERM.
func runServe(t *testing.T, book string, clean bool, args ...string) (string, *os.Process) {
	t.Helper()
	cmd := exec.Command(sbumlBin, append([]string{"--scrapbook", book, "serve", "--addr", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil && clean {
				t.Errorf("sbuml serve did not stop cleanly: %v", err)
			}
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Error("sbuml serve ignored SIGTERM")
		}
	})
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	select {
	case line, ok := <-lines:
		if !ok {
			t.Fatal("sbuml serve exited before serving")
		}
		m := regexp.MustCompile(`at (http://127\.0\.0\.1:\d+/) `).FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("sbuml serve said %q", line)
		}
		go func() { // keep draining the log
			for l := range lines {
				t.Logf("serve: %s", l)
			}
		}()
		return m[1], cmd.Process
	case <-time.After(30 * time.Second):
		t.Fatal("sbuml serve did not start")
	}
	return "", nil
}

func writeRandom(t *testing.T, path string, size int, seed uint64) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 3))
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// logOf returns `sbuml log --json REV` without the ref names, which
// differ between scrapbooks.
func logOf(t *testing.T, book, rev string) string {
	t.Helper()
	out, _ := sbumlOK(t, "--scrapbook", book, "log", "--json", rev)
	var entries []map[string]any
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatalf("log --json: %v\n%s", err, out)
	}
	if len(entries) == 0 {
		t.Fatalf("log of %s in %s is empty", rev, book)
	}
	for _, e := range entries {
		delete(e, "refs")
	}
	b, _ := json.Marshal(entries)
	return string(b)
}

func objectBytes(t *testing.T, book string) map[objects.ID]int64 {
	t.Helper()
	s, err := sbuml.Open(book)
	if err != nil {
		t.Fatal(err)
	}
	m := map[objects.ID]int64{}
	if err := s.Objects.List(context.Background(), func(id objects.ID, size int64) error {
		m[id] = size
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestCLIServePushPullClone drives two scrapbooks through a real
// `sbuml serve` on 127.0.0.1.
//
// It is long because it is one scenario: each step starts from what the
// steps before it left.
func TestCLIServePushPullClone(t *testing.T) {
	tmp := t.TempDir()
	a, served, b := filepath.Join(tmp, "a"), filepath.Join(tmp, "served"), filepath.Join(tmp, "b")
	work := filepath.Join(tmp, "work")
	writeRandom(t, filepath.Join(work, "disk.img"), 3<<20, 1)
	writeRandom(t, filepath.Join(work, "etc", "motd"), 500, 2)
	token := filepath.Join(tmp, "token")
	if err := os.WriteFile(token, []byte("let-me-push\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sbumlOK(t, "init", a)
	sbumlOK(t, "init", served)
	sbumlOK(t, "--scrapbook", a, "import", work, "-m", "first")
	url := startServe(t, served, "--token-file", token)

	// Without the token the server refuses, and says why.
	sbumlFails(t, "push needs the server's bearer token", "--scrapbook", a, "push", url)
	sbumlFails(t, `invalid ref name "refs/heads/a..b"`, "--scrapbook", a, "push", url, "a..b")

	sbumlOK(t, "--scrapbook", a, "remote", "add", "origin", url, "--token-file", token)
	out, _ := sbumlOK(t, "--scrapbook", a, "remote", "ls")
	if out != "origin\t"+url+"\n" {
		t.Errorf("remote ls = %q", out)
	}
	out, errOut := sbumlOK(t, "--scrapbook", a, "push", "origin")
	if !strings.HasPrefix(out, "refs/heads/main: created ") {
		t.Errorf("push said %q", out)
	}
	if !regexp.MustCompile(`^sent \d+ objects \(.*\); on the wire .* sent, .* received; .* already present; \d+\.\ds\n$`).MatchString(errOut) {
		t.Errorf("push summary line %q", errOut)
	}

	_, errOut = sbumlOK(t, "clone", url, b)
	if !strings.Contains(errOut, "received ") || !strings.Contains(errOut, "cloned into "+b) {
		t.Errorf("clone said %q", errOut)
	}
	sbumlOK(t, "--scrapbook", b, "fsck")
	if logOf(t, a, "main") != logOf(t, b, "main") {
		t.Error("the clone's log differs")
	}

	// A child with a small change: the push sends about the new objects.
	before := objectBytes(t, a)
	f, err := os.OpenFile(filepath.Join(work, "disk.img"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(bytes.Repeat([]byte("changed!"), 512), 1<<20)
	f.Close()
	sbumlOK(t, "--scrapbook", a, "import", work, "-m", "second")
	var newBytes int64
	for id, size := range objectBytes(t, a) {
		if _, ok := before[id]; !ok {
			newBytes += size
		}
	}
	out, _ = sbumlOK(t, "--scrapbook", a, "push", "--json", "origin", "main")
	var pushed sbuml.PushResult
	if err := json.Unmarshal([]byte(out), &pushed); err != nil {
		t.Fatal(err)
	}
	if limit := int64(1.1*float64(newBytes)) + 64<<10; pushed.Stats.BytesSent > limit || pushed.Stats.ObjectBytes != newBytes {
		t.Errorf("child push: %d bytes on the wire, %d object bytes; %d new bytes (limit %d)", pushed.Stats.BytesSent, pushed.Stats.ObjectBytes, newBytes, limit)
	}
	t.Logf("child push: %d new bytes, %s", newBytes, pushed.Stats.Summary("sent"))

	out, _ = sbumlOK(t, "--scrapbook", b, "pull", "origin")
	if !strings.HasPrefix(out, "refs/remotes/origin/main: updated ") {
		t.Errorf("pull said %q", out)
	}
	sbumlOK(t, "--scrapbook", b, "fsck")
	if logOf(t, a, "main") != logOf(t, b, "origin/main") {
		t.Error("origin/main in the clone differs from main")
	}

	// b's own snapshot on top of an old main is not a fast-forward.
	writeRandom(t, filepath.Join(work, "etc", "motd"), 600, 5)
	sbumlOK(t, "--scrapbook", b, "import", work, "-m", "diverged")
	sbumlOK(t, "--scrapbook", b, "remote", "remove", "origin")
	sbumlOK(t, "--scrapbook", b, "remote", "add", "origin", url, "--token-file", token)
	sbumlFails(t, "not a fast-forward", "--scrapbook", b, "push", "origin")
	if logOf(t, a, "main") != logOf(t, served, "main") {
		t.Error("a refused push changed the server")
	}
}

// TestCLIPublish publishes a scrapbook, serves it with a plain web
// server and clones and fetches from it.
func TestCLIPublish(t *testing.T) {
	tmp := t.TempDir()
	a, pub := filepath.Join(tmp, "a"), filepath.Join(tmp, "pub")
	work := filepath.Join(tmp, "work")
	writeRandom(t, filepath.Join(work, "f"), 200<<10, 1)
	sbumlOK(t, "init", a)
	sbumlOK(t, "--scrapbook", a, "import", work, "-m", "published one")
	srv := httptest.NewServer(http.FileServer(http.Dir(pub)))
	defer srv.Close()

	sbumlFails(t, "--url is required", "--scrapbook", a, "publish", pub)
	out, _ := sbumlOK(t, "--scrapbook", a, "publish", pub, "--url", srv.URL)
	if !strings.Contains(out, "published 1 snapshots") {
		t.Errorf("publish said %q", out)
	}
	for _, f := range []string{"refs.json", "index.html", "branches/main.sbuml"} {
		if _, err := os.Stat(filepath.Join(pub, f)); err != nil {
			t.Error(err)
		}
	}
	b := filepath.Join(tmp, "b")
	sbumlOK(t, "clone", srv.URL, b)
	sbumlOK(t, "--scrapbook", b, "fsck")
	if logOf(t, a, "main") != logOf(t, b, "main") {
		t.Error("the clone of the published scrapbook differs")
	}
	c := filepath.Join(tmp, "c")
	sbumlOK(t, "init", c)
	out, _ = sbumlOK(t, "--scrapbook", c, "fetch", filepath.Join(pub, "branches", "main.sbuml"))
	id, err := objects.ParseID(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("fetch printed %q", out)
	}
	link, _ := os.ReadFile(filepath.Join(pub, "branches", "main.sbuml"))
	if l, err := sbuml.ParseLink(link); err != nil || l.Snapshot != id {
		t.Errorf("fetched %s; the link names %v (%v)", id, l, err)
	}
	// A published directory is read-only over HTTP.
	sbumlOK(t, "--scrapbook", b, "import", work, "-m", "more")
	sbumlFails(t, "read-only", "--scrapbook", b, "push", srv.URL)
}

// TestCLIServeReadOnly checks the safe default: no token file, no push.
func TestCLIServeReadOnly(t *testing.T) {
	tmp := t.TempDir()
	a, served := filepath.Join(tmp, "a"), filepath.Join(tmp, "served")
	work := filepath.Join(tmp, "work")
	writeRandom(t, filepath.Join(work, "f"), 1000, 1)
	sbumlOK(t, "init", a)
	sbumlOK(t, "init", served)
	sbumlOK(t, "--scrapbook", a, "import", work, "-m", "x")
	url := startServe(t, served)
	sbumlFails(t, "push is disabled", "--scrapbook", a, "push", url)
	resp, err := http.Get(url + "sbuml-protocol")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var info transport.ProtocolInfo
	if err := json.Unmarshal(body, &info); err != nil || info.Push != "disabled" || info.Protocol != transport.ProtocolName {
		t.Errorf("sbuml-protocol = %s (%v)", body, err)
	}
	sbumlFails(t, "give both --tls-cert and --tls-key", "--scrapbook", served, "serve", "--tls-cert", "x")
}

// openPTY returns both ends of a new pseudo-terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	testenv.Need(t, "a pseudo-terminal", err)
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		testenv.Need(t, "a pseudo-terminal (unlock)", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		testenv.Need(t, "a pseudo-terminal (number)", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		testenv.Need(t, "a pseudo-terminal (open)", err)
	}
	t.Cleanup(func() {
		s.Close()
		m.Close()
	})
	return m, s
}

// stallingServer serves until budget bytes went out, then stops sending
// (as a stuck network would) until the client gives up.
type stallingServer struct {
	h       http.Handler
	mu      sync.Mutex
	budget  int64
	stalled chan struct{}
	once    sync.Once
}

func (s *stallingServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.h.ServeHTTP(&stallingWriter{w, s, r}, r)
}

type stallingWriter struct {
	http.ResponseWriter
	s *stallingServer
	r *http.Request
}

func (w *stallingWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	w.s.budget -= int64(len(p))
	stall := w.s.budget < 0
	w.s.mu.Unlock()
	if stall {
		w.s.once.Do(func() { close(w.s.stalled) })
		<-w.r.Context().Done()
		panic(http.ErrAbortHandler)
	}
	return w.ResponseWriter.Write(p)
}

// halfwayPull is a `sbuml pull` into scrapbook b from a server of
// scrapbook a that stalls once half of a's bytes (total) are sent.
type halfwayPull struct {
	a, b     string
	total    int64
	stalling *stallingServer
	cmd      *exec.Cmd
	stderr   bytes.Buffer
}

// startHalfwayPull starts the pull and returns once it is stalled
// half-way.
func startHalfwayPull(t *testing.T) *halfwayPull {
	t.Helper()
	tmp := t.TempDir()
	p := &halfwayPull{a: filepath.Join(tmp, "a"), b: filepath.Join(tmp, "b")}
	work := filepath.Join(tmp, "work")
	writeRandom(t, filepath.Join(work, "disk.img"), 4<<20, 1)
	sbumlOK(t, "init", p.a)
	sbumlOK(t, "--scrapbook", p.a, "import", work, "-m", "big")
	for _, size := range objectBytes(t, p.a) {
		p.total += size
	}
	d, err := transport.OpenDir(p.a)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	p.stalling = &stallingServer{h: transport.NewServer(d, transport.ServerOptions{}), budget: p.total / 2, stalled: make(chan struct{})}
	srv := httptest.NewServer(p.stalling)
	t.Cleanup(srv.Close)

	sbumlOK(t, "init", p.b)
	sbumlOK(t, "--scrapbook", p.b, "remote", "add", "origin", srv.URL)
	p.cmd = exec.Command(sbumlBin, "--scrapbook", p.b, "pull", "origin")
	p.cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.stalling.stalled:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		p.cmd.Wait()
		t.Fatalf("the pull never got half-way: %s", p.stderr.String())
	}
	return p
}

// TestCLIPullInterrupted interrupts `sbuml pull` half-way with SIGINT and
// pulls again: the second pull receives only what the first did not keep.
func TestCLIPullInterrupted(t *testing.T) {
	p := startHalfwayPull(t)
	a, b, total, stalling, cmd := p.a, p.b, p.total, p.stalling, p.cmd
	stderr := &p.stderr
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err == nil {
		t.Fatal("an interrupted pull succeeded")
	}
	t.Logf("interrupted pull said: %s", strings.TrimSpace(stderr.String()))
	var kept int64
	for _, size := range objectBytes(t, b) {
		kept += size
	}
	if kept < total/4 {
		t.Fatalf("the interrupted pull kept %d of %d bytes", kept, total)
	}
	sbumlOK(t, "--scrapbook", b, "fsck")

	stalling.mu.Lock()
	stalling.budget = 1 << 62
	stalling.mu.Unlock()
	out, _ := sbumlOK(t, "--scrapbook", b, "pull", "--json", "origin")
	var res sbuml.PullResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if res.Stats.ObjectBytes != total-kept {
		t.Errorf("the second pull received %d object bytes; %d were missing", res.Stats.ObjectBytes, total-kept)
	}
	sbumlOK(t, "--scrapbook", b, "fsck")
	if logOf(t, a, "main") != logOf(t, b, "origin/main") {
		t.Error("origin/main differs after the resumed pull")
	}
	t.Logf("%d bytes in all; the interrupted pull kept %d; the second received %d", total, kept, res.Stats.ObjectBytes)
}

// TestCLIPullInterruptedTwice interrupts a pull, then interrupts it again
// while it is still handing over what arrived: the second interrupt ends
// the process at once, and the scrapbook is whole all the same.
func TestCLIPullInterruptedTwice(t *testing.T) {
	p := startHalfwayPull(t)
	b, cmd := p.b, p.cmd
	cmd.Process.Signal(os.Interrupt)
	// The second interrupt must come while the pull hands over what is
	// under way (up to 250 ms): once the kernel has delivered the first.
	// It is a SIGTERM, which sbuml takes as an interrupt too: a second
	// SIGINT could merge with the first in Go's runtime before sbuml
	// counts it, where two signals are always two, SIGINT first.
	waitDelivered(t, cmd.Process.Pid, syscall.SIGINT)
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !exit.Sys().(syscall.WaitStatus).Signaled() {
		t.Errorf("a pull interrupted twice: %v, want it ended by the second interrupt", err)
	}
	sbumlOK(t, "--scrapbook", b, "fsck")
}

// waitDelivered waits until signal sig, sent to process pid, is no longer
// pending: the process has taken it.
func waitDelivered(t *testing.T, pid int, sig syscall.Signal) {
	t.Helper()
	bit := uint64(1) << (uint(sig) - 1)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return // gone: it took the signal
		}
		pending := uint64(0)
		for _, line := range strings.Split(string(b), "\n") {
			for _, key := range []string{"ShdPnd:", "SigPnd:"} {
				if v, ok := strings.CutPrefix(line, key); ok {
					if m, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64); err == nil {
						pending |= m
					}
				}
			}
		}
		if pending&bit == 0 {
			return
		}
	}
	t.Fatalf("process %d did not take signal %v within 10 s", pid, sig)
}
