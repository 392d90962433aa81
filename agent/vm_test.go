package agent_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbuml/sbuml/agent"
	"github.com/sbuml/sbuml/internal/testimage"
	"github.com/sbuml/sbuml/vmm"
)

// TestGuest runs the agent in a real TCG guest of the test image: exec,
// 50 MiB each way, the clock, the counters, and a snapshot taken while a
// checkpoint request is pending, restored in a second QEMU whose host
// gets the request again with the same id.
func TestGuest(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	log := &syncLog{}
	defer log.flush(t)
	img := testimage.Get(t)
	cfg := vmm.Config{Memory: 256 << 20, Accel: "tcg", Kernel: img.Kernel, Initrd: img.Initrd,
		Cmdline: img.Cmdline, Disks: []string{img.Disk}, Agent: true}
	m := boot(t, ctx, "original", cfg)
	parent := &answerer{answer: 0, ids: make(chan uint64, 4), release: make(chan struct{})}
	h, _ := connectHost(t, ctx, m, parent, log)
	start := time.Now()
	if err := h.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("agent ready %v after boot", time.Since(start).Round(time.Millisecond))

	code, out, errs := guestRun(t, ctx, h, "echo out; echo err >&2; exit 3")
	if code != 3 || out != "out\n" || errs != "err\n" {
		t.Errorf("exec: %d %q %q", code, out, errs)
	}
	var tty bytes.Buffer
	code, err := agent.Run(ctx, h, agent.ExecRequest{Argv: []string{"sh", "-c", "tty; stty size; echo err >&2"}, TTY: true, Rows: 33, Cols: 99}, nil, &tty, io.Discard)
	if code != 0 || err != nil || !strings.Contains(tty.String(), "/dev/pts/") || !strings.Contains(tty.String(), "33 99") || !strings.Contains(tty.String(), "err") {
		t.Errorf("exec on a terminal: %d %v %q", code, err, tty.String())
	}
	copyBothWays(t, ctx, h)
	checkClock(t, ctx, h)
	checkStats(t, ctx, h)
	m2, disconnect := snapshotWithPendingCkpt(t, ctx, m, h, parent, log)
	keeperRestart(t, ctx, m2, disconnect, log)
}

func boot(t *testing.T, ctx context.Context, name string, cfg vmm.Config) *vmm.Machine {
	t.Helper()
	m, err := vmm.Boot(ctx, filepath.Join(t.TempDir(), name), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Halt(context.Background()); err != nil {
			t.Error(err)
		}
		m.Close()
	})
	return m
}

// connectHost connects a Host to the machine's agent socket, as a keeper
// does, and serves it until the test ends or disconnect is called.
func connectHost(t *testing.T, ctx context.Context, m *vmm.Machine, handler agent.Handler, log *syncLog) (h *agent.Host, disconnect func()) {
	t.Helper()
	conn, err := vmm.DialAgent(ctx, m.Dir())
	if err != nil {
		t.Fatal(err)
	}
	h = agent.NewHost(handler, log.logf)
	sctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		h.Serve(sctx, conn)
		close(done)
	}()
	disconnect = func() {
		stop()
		<-done
	}
	t.Cleanup(disconnect)
	return h, disconnect
}

// guestRun runs a shell command in the guest.
func guestRun(t *testing.T, ctx context.Context, a agent.Agent, script string) (int, string, string) {
	t.Helper()
	var out, errs bytes.Buffer
	code, err := agent.Run(ctx, a, agent.ExecRequest{Argv: []string{"sh", "-c", script}}, nil, &out, &errs)
	if err != nil {
		t.Fatalf("exec %q: %v", script, err)
	}
	return code, out.String(), errs.String()
}

// copyBothWays copies 50 MiB of random bytes into the guest's disk and
// back, and reports the speed.
func copyBothWays(t *testing.T, ctx context.Context, h *agent.Host) {
	data := make([]byte, 50<<20)
	rand.Read(data)
	var in bytes.Buffer
	tw := tar.NewWriter(&in)
	tw.WriteHeader(&tar.Header{Name: "big", Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg, ModTime: time.Now()})
	tw.Write(data)
	tw.Close()
	start := time.Now()
	if err := h.CopyIn(ctx, "/mnt", &in); err != nil {
		t.Fatal(err)
	}
	in1 := time.Since(start)
	var out bytes.Buffer
	start = time.Now()
	if err := h.CopyOut(ctx, "/mnt/big", &out); err != nil {
		t.Fatal(err)
	}
	out1 := time.Since(start)
	t.Logf("50 MiB: in %v (%.1f MB/s), out %v (%.1f MB/s)", in1.Round(time.Millisecond), mbps(len(data), in1),
		out1.Round(time.Millisecond), mbps(len(data), out1))
	tr := tar.NewReader(&out)
	hdr, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(tr)
	if err != nil || hdr.Name != "big" || !bytes.Equal(got, data) {
		t.Fatalf("copied back %q, %d bytes (%v): not what went in", hdr.Name, len(got), err)
	}
	guestRun(t, ctx, h, "rm /mnt/big")
}

func mbps(n int, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }

// checkClock sets the guest's clock far off, then to the host's time.
func checkClock(t *testing.T, ctx context.Context, h *agent.Host) {
	if err := h.SetTime(ctx, time.Unix(1_000_000_000, 0)); err != nil {
		t.Fatal(err)
	}
	if _, out, _ := guestRun(t, ctx, h, "date +%s"); !strings.HasPrefix(out, "100000000") {
		t.Errorf("guest clock after setting it to 2001: %q", out)
	}
	if err := h.SetTime(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	_, out, _ := guestRun(t, ctx, h, "date +%s")
	after := time.Now()
	if secs, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64); err != nil || secs < before.Unix()-1 || secs > after.Unix()+1 {
		t.Errorf("guest date %q, host between %v and %v", out, before, after)
	}
	before = time.Now()
	st, err := h.Stats(ctx)
	after = time.Now()
	if err != nil {
		t.Fatal(err)
	}
	if st.Time.Before(before.Add(-time.Second)) || st.Time.After(after.Add(time.Second)) {
		t.Errorf("guest clock %v, host between %v and %v", st.Time, before, after)
	}
	t.Logf("guest clock %v from the host's, read in %v", st.Time.Sub(before).Round(time.Millisecond), after.Sub(before).Round(time.Millisecond))
}

// checkStats checks that the counters move with activity.
func checkStats(t *testing.T, ctx context.Context, h *agent.Host) {
	a, err := h.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	guestRun(t, ctx, h, "echo data > /mnt/stats; sync")
	b, err := h.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b.Processes <= a.Processes || b.SectorsWritten <= a.SectorsWritten || b.Uptime <= a.Uptime || b.Version != agent.Version {
		t.Errorf("stats did not move: %+v then %+v", a, b)
	}
}

// answerer answers checkpoints with a fixed number, once released.
type answerer struct {
	answer  int
	ids     chan uint64
	release chan struct{}
}

func (a *answerer) Checkpoint(ctx context.Context, id uint64, msg string) (int, error) {
	a.ids <- id
	select {
	case <-a.release:
		return a.answer, nil
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

// snapshotWithPendingCkpt starts seed 003's testckpt (or sbuml-guest ckpt
// without gcc) and an exec session, takes a snapshot while the
// checkpoint is pending, and restores it into a second QEMU, as commit
// and checkout do. The original gets 0, the restored machine's host gets
// the request again with the same id and answers 7, and the exec session
// of the original is dead in the restored machine.
// It returns the restored machine and what disconnects its host.
func snapshotWithPendingCkpt(t *testing.T, ctx context.Context, m *vmm.Machine, h *agent.Host, parent *answerer, log *syncLog) (*vmm.Machine, func()) {
	prog, parentLine, childLine := ckptProgram(t, ctx, h)
	guestRun(t, ctx, h, "("+prog+") >/dev/null 2>&1 &")
	sleeper, err := h.Exec(ctx, agent.ExecRequest{Argv: []string{"sleep", "1000"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sleeper.Close()
	var id uint64
	select {
	case id = <-parent.ids:
	case <-ctx.Done():
		t.Fatal("no checkpoint request reached the host")
	}

	// Commit, at vmm level: freeze, save device state, copy RAM and disk.
	if err := m.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	var state bytes.Buffer
	if err := m.SaveDeviceState(ctx, &state); err != nil {
		t.Fatal(err)
	}
	ram, err := vmm.NewRAMFile("", "agent-restored")
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(t.TempDir(), "disk")
	for _, c := range [][2]string{{ram, m.RAMFile()}, {disk, m.Config().Disks[0]}} {
		if err := vmm.CloneFile(c[0], c[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Continue(ctx); err != nil {
		t.Fatal(err)
	}
	close(parent.release)
	if got := waitOutput(t, ctx, h, "/mnt/ckpt.out"); got != parentLine {
		t.Errorf("the original's checkpoint said %q, want %q", got, parentLine)
	}

	// Checkout: a new QEMU on the copies; its keeper connects before the
	// guest runs again, so the guest sees no disconnection, only a new
	// host's Hello.
	cfg := m.Config()
	cfg.Name, cfg.RAMFile, cfg.RAMDir, cfg.Disks = "", ram, "", []string{disk}
	cfg.Boot.Incoming = true
	m2 := boot(t, ctx, "restored", cfg)
	child := &answerer{answer: 7, ids: make(chan uint64, 4), release: make(chan struct{})}
	close(child.release)
	h2, disconnect := connectHost(t, ctx, m2, child, log)
	if err := m2.LoadDeviceState(ctx, &state); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := m2.Continue(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case id2 := <-child.ids:
		if id2 != id {
			t.Errorf("the restored machine asked for checkpoint %x, want the pending %x", id2, id)
		}
		t.Logf("pending checkpoint re-sent %v after continuing", time.Since(start).Round(time.Millisecond))
	case <-ctx.Done():
		t.Fatal("the restored machine did not send its pending checkpoint again")
	}
	if got := waitOutput(t, ctx, h2, "/mnt/ckpt.out"); got != childLine {
		t.Errorf("the restored machine's checkpoint said %q, want %q", got, childLine)
	}
	if _, out, _ := guestRun(t, ctx, h2, "ps -o args | grep '^sleep 1000' || true"); out != "" {
		t.Errorf("the original's exec still runs in the restored machine: %q", out)
	}
	// The original knows nothing of it: its session lives on.
	if _, out, _ := guestRun(t, ctx, h, "ps -o args | grep '^sleep 1000'"); !strings.HasPrefix(out, "sleep 1000") {
		t.Errorf("the original's exec is gone: %q", out)
	}
	return m2, disconnect
}

// keeperRestart: the host goes away while a checkpoint is pending, and
// another connects later. The guest reads end of file on its port,
// polls for a host, and sends the request again to the new one.
func keeperRestart(t *testing.T, ctx context.Context, m *vmm.Machine, disconnect func(), log *syncLog) {
	disconnect()
	gone := &answerer{ids: make(chan uint64, 4), release: make(chan struct{})} // never answers
	h, disconnectGone := connectHost(t, ctx, m, gone, log)
	guestRun(t, ctx, h, "(sbuml-guest ckpt -m again >/mnt/again.out) >/dev/null 2>&1 &")
	id := <-gone.ids
	disconnectGone()
	time.Sleep(500 * time.Millisecond) // the guest notices nobody is there
	next := &answerer{answer: 9, ids: make(chan uint64, 4), release: make(chan struct{})}
	close(next.release)
	h2, _ := connectHost(t, ctx, m, next, log)
	if id2 := <-next.ids; id2 != id {
		t.Errorf("after a keeper restart the guest asked for %x, want the pending %x", id2, id)
	}
	if got := waitOutput(t, ctx, h2, "/mnt/again.out"); got != "9\n" {
		t.Errorf("sbuml-guest ckpt across a keeper restart printed %q, want 9", got)
	}
}

// ckptProgram returns the command that asks for a checkpoint in the
// guest and writes what it got to /mnt/ckpt.out, and the lines it writes
// in the original and in child 7: seed 003's testckpt, copied in, if gcc
// can build it, else sbuml-guest ckpt.
func ckptProgram(t *testing.T, ctx context.Context, h *agent.Host) (string, string, string) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Log("gcc is not installed: testing with sbuml-guest ckpt instead of the C library")
		return "sbuml-guest ckpt -m pending >/mnt/ckpt.out", "0\n", "7\n"
	}
	dir := t.TempDir()
	src, _ := filepath.Abs("../libckpt")
	bin := filepath.Join(dir, "testckpt")
	out, err := exec.Command(gcc, "-static", "-O2", "-o", bin, filepath.Join(src, "testckpt.c"), filepath.Join(src, "ckpt.c")).CombinedOutput()
	if err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var archive bytes.Buffer
	tw := tar.NewWriter(&archive)
	tw.WriteHeader(&tar.Header{Name: "testckpt", Mode: 0o755, Size: int64(len(b)), Typeflag: tar.TypeReg, ModTime: time.Now()})
	tw.Write(b)
	tw.Close()
	if err := h.CopyIn(ctx, "/mnt", &archive); err != nil {
		t.Fatal(err)
	}
	return "/mnt/testckpt -m pending /mnt/ckpt.out", "I am the Parent\n", "I am the Child # 7\n"
}

// waitOutput waits for the first line of a guest file.
func waitOutput(t *testing.T, ctx context.Context, h *agent.Host, path string) string {
	t.Helper()
	for {
		_, out, _ := guestRun(t, ctx, h, "head -n 1 "+path+" 2>/dev/null || true")
		if out != "" {
			return out
		}
		select {
		case <-ctx.Done():
			t.Fatalf("nothing in %s", path)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// syncLog keeps the hosts' log lines for the end of the test: they may
// come from goroutines that outlive it.
type syncLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *syncLog) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *syncLog) flush(t *testing.T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		t.Log("host: " + line)
	}
}
