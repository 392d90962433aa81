package sbuml_test

import (
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
	"testing"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/agent"
	"github.com/sbuml/sbuml/objects"
)

// Tests of the guest agent through the porcelain: exec, cp, ckpt() and
// the clock, on real guests of the test image (which carries
// sbuml-guest), with the keepers this test binary runs (TestMain).

// execIn runs argv in machine through its agent and returns stdout,
// stderr and the exit code.
func execIn(t testing.TB, s *sbuml.Scrapbook, machine string, argv ...string) (string, string, int) {
	t.Helper()
	ctx := guestContext(t)
	g, err := s.Guest(ctx, machine)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	var out, errOut bytes.Buffer
	code, err := agent.Run(ctx, g, agent.ExecRequest{Argv: argv}, nil, &out, &errOut)
	if err != nil {
		t.Fatalf("exec %q in %s: %v", argv, machine, err)
	}
	return out.String(), errOut.String(), code
}

// sh runs a shell command in machine, failing the test unless it exits 0,
// and returns its stdout.
func sh(t testing.TB, s *sbuml.Scrapbook, machine, cmd string) string {
	t.Helper()
	out, errOut, code := execIn(t, s, machine, "sh", "-c", cmd)
	if code != 0 {
		t.Fatalf("%s: %q exited %d: %s", machine, cmd, code, errOut)
	}
	return out
}

// TestExecAndCopy runs commands and copies files through a guest's agent,
// by the API and by the command line.
// It is long because one booted guest serves all these checks: each guest
// costs seconds to boot under TCG.
func TestExecAndCopy(t *testing.T) {
	t.Parallel()
	s := guestScrapbook(t, 1)
	bootGuest(t, s, "m1", 0)

	out, errOut, code := execIn(t, s, "m1", "sh", "-c", "echo out; echo err >&2; exit 3")
	if out != "out\n" || errOut != "err\n" || code != 3 {
		t.Errorf("exec: stdout %q, stderr %q, status %d; want out, err, 3", out, errOut, code)
	}

	// The same through the command line: sbuml exits with the status.
	cmd := exec.Command(sbumlCommand(t), "--scrapbook", s.Dir, "exec", "m1", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
	var cout, cerr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &cout, &cerr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 || cout.String() != "out\n" || cerr.String() != "err\n" {
		t.Errorf("sbuml exec: stdout %q, stderr %q, %v; want out, err, exit status 3", cout.String(), cerr.String(), err)
	}

	// 50 MiB each way, byte for byte.
	data := make([]byte, 50<<20)
	rand.Read(data)
	src := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(src, data, 0o640); err != nil {
		t.Fatal(err)
	}
	ctx := guestContext(t)
	start := time.Now()
	if err := s.CopyToGuest(ctx, "m1", src, "/tmp/"); err != nil {
		t.Fatal(err)
	}
	in := time.Since(start)
	if got := sh(t, s, "m1", "wc -c < /tmp/big; stat -c %a /tmp/big"); got != "52428800\n640\n" {
		t.Fatalf("in the guest: size and mode %q", got)
	}
	back := filepath.Join(t.TempDir(), "back")
	start = time.Now()
	if err := s.CopyFromGuest(ctx, "m1", "/tmp/big", back); err != nil {
		t.Fatal(err)
	}
	outTime := time.Since(start)
	got, err := os.ReadFile(back)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("50 MiB copied in and out differ")
	}
	t.Logf("cp 50 MiB: in %v (%.1f MB/s), out %v (%.1f MB/s)", in.Round(time.Millisecond), 50*1.048576/in.Seconds(),
		outTime.Round(time.Millisecond), 50*1.048576/outTime.Seconds())

	// Directories, both ways, with docker cp's rules.
	tree := filepath.Join(t.TempDir(), "tree")
	os.MkdirAll(filepath.Join(tree, "sub"), 0o755)
	os.WriteFile(filepath.Join(tree, "sub", "f"), []byte("hello\n"), 0o600)
	os.Symlink("sub/f", filepath.Join(tree, "link"))
	if err := s.CopyToGuest(ctx, "m1", tree, "/mnt/copied"); err != nil {
		t.Fatal(err)
	}
	if got := sh(t, s, "m1", "cat /mnt/copied/sub/f /mnt/copied/link; stat -c %a /mnt/copied/sub/f"); got != "hello\nhello\n600\n" {
		t.Errorf("directory in the guest: %q", got)
	}
	host := t.TempDir()
	if err := s.CopyFromGuest(ctx, "m1", "/mnt/copied", host); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(host, "copied", "link")); err != nil || string(b) != "hello\n" {
		t.Errorf("directory back on the host: %q, %v", b, err)
	}

	// stdin passes through.
	g, err := s.Guest(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	var upper bytes.Buffer
	if code, err := agent.Run(ctx, g, agent.ExecRequest{Argv: []string{"tr", "a-z", "A-Z"}}, strings.NewReader("shout\n"), &upper, io.Discard); err != nil || code != 0 || upper.String() != "SHOUT\n" {
		t.Errorf("stdin: %q, %d, %v", upper.String(), code, err)
	}
}

// ckptSnapshots returns the snapshots of branch that a ckpt() took.
func ckptSnapshots(t testing.TB, s *sbuml.Scrapbook, branch string) []sbuml.LogEntry {
	t.Helper()
	entries, err := s.Log(context.Background(), sbuml.LogOptions{Revs: []string{branch}})
	if err != nil {
		return nil // no snapshot on the branch yet
	}
	var out []sbuml.LogEntry
	for _, e := range entries {
		if e.Labels["ckpt"] != "" {
			out = append(out, e)
		}
	}
	return out
}

// waitForCkpt waits until branch has n snapshots taken by ckpt() and
// returns the newest.
func waitForCkpt(t testing.TB, s *sbuml.Scrapbook, branch string, n int) objects.ID {
	t.Helper()
	deadline := time.Now().Add(guestTimeout)
	for time.Now().Before(deadline) {
		if got := ckptSnapshots(t, s, branch); len(got) >= n {
			return got[0].ID
		}
		time.Sleep(200 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(s.MachinesDir(), branch, "keeper.log"))
	t.Fatalf("no ckpt() snapshot number %d on %s; keeper.log:\n%s", n, branch, log)
	return objects.Zero
}

// waitForLine waits until a file in machine holds line.
func waitForLine(t testing.TB, s *sbuml.Scrapbook, machine, file, line string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var got string
	for time.Now().Before(deadline) {
		got = sh(t, s, machine, "cat "+file+" 2>/dev/null; true")
		if strings.Contains(got, line+"\n") {
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("%s: %s never held %q; it holds %q", machine, file, line, got)
}

// roles returns the distinct lines of a role file, in order of first
// appearance.
func roles(t testing.TB, s *sbuml.Scrapbook, machine, file string) []string {
	t.Helper()
	var out []string
	seen := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(sh(t, s, machine, "cat "+file)), "\n") {
		if !seen[l] {
			seen[l] = true
			out = append(out, l)
		}
	}
	return out
}

// buildTestCkpt compiles libckpt's testckpt statically.
func buildTestCkpt(t testing.TB) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "testckpt")
	cmd := exec.Command("gcc", "-static", "-O2", "-Wall", "-o", out, "libckpt/testckpt.c", "libckpt/ckpt.c")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gcc (apt-get install gcc libc6-dev): %v\n%s", err, b)
	}
	return out
}

// TestCkptChildren is seed 003's scenario: a program calls ckpt() and
// loops writing its role; the snapshot is checked out three times, and
// each checkout's ckpt() returns its child number in checkout order,
// while the original's returned 0. Then a second ckpt(), in child 2 and
// in the shell form, returns 0 there and 1 in the first machine checked
// out of its snapshot.
func TestCkptChildren(t *testing.T) {
	t.Parallel()
	s := guestScrapbook(t, 3)
	bootGuest(t, s, "p", 0)
	ctx := guestContext(t)
	if err := s.CopyToGuest(ctx, "p", buildTestCkpt(t), "/usr/bin/testckpt"); err != nil {
		t.Fatal(err)
	}
	// setsid: the program outlives the exec session that starts it.
	sh(t, s, "p", "setsid testckpt -m 'seed 003' /tmp/role </dev/null >/tmp/testckpt.log 2>&1 &")
	snap := waitForCkpt(t, s, "p", 1)
	waitForLine(t, s, "p", "/tmp/role", "I am the Parent")

	for i := 1; i <= 3; i++ {
		_, res := checkoutGuest(t, s, snap.String(), fmt.Sprintf("c%d", i), sbuml.CheckoutOptions{Continue: true})
		if res.Child != i {
			t.Errorf("checkout %d: child number %d", i, res.Child)
		}
	}
	for i := 1; i <= 3; i++ {
		m := fmt.Sprintf("c%d", i)
		waitForLine(t, s, m, "/tmp/role", fmt.Sprintf("I am the Child # %d", i))
		if got := roles(t, s, m, "/tmp/role"); len(got) != 1 {
			t.Errorf("%s wrote %q, want only its own role", m, got)
		}
	}
	if got := roles(t, s, "p", "/tmp/role"); len(got) != 1 || got[0] != "I am the Parent" {
		t.Errorf("the parent wrote %q", got)
	}
	for _, m := range []string{"c1", "c3"} {
		if err := s.Halt(ctx, m); err != nil {
			t.Fatal(err)
		}
	}

	// The shell form, in child 2: 0 there, 1 in the first checkout of
	// its snapshot.
	sh(t, s, "c2", "setsid sh -c 'sbuml-guest ckpt -m second > /tmp/second' </dev/null >/dev/null 2>&1 &")
	snap2 := waitForCkpt(t, s, "c2", 1)
	waitForLine(t, s, "c2", "/tmp/second", "0")
	_, res := checkoutGuest(t, s, snap2.String(), "c2a", sbuml.CheckoutOptions{Continue: true})
	if res.Child != 1 {
		t.Errorf("first checkout of the second ckpt: child %d", res.Child)
	}
	waitForLine(t, s, "c2a", "/tmp/second", "1")
	// In c2a, testckpt is still child 2 of the first checkpoint.
	waitForLine(t, s, "c2a", "/tmp/role", "I am the Child # 2")
	if strings.Contains(sh(t, s, "c2a", "cat /tmp/role"), "# 1") {
		t.Error("c2a's testckpt changed its role")
	}
}

// TestExecAcrossCheckout checks that an exec running when a snapshot is
// taken fails cleanly in a machine checked out of it (its process is
// killed there), while the original finishes it, and that the next exec
// in the checkout works.
func TestExecAcrossCheckout(t *testing.T) {
	t.Parallel()
	s := guestScrapbook(t, 2)
	bootGuest(t, s, "m1", 0)
	ctx := guestContext(t)
	g, err := s.Guest(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	sess, err := g.Exec(ctx, agent.ExecRequest{Argv: []string{"sh", "-c", "echo started; exec sleep 7"}})
	if err != nil {
		t.Fatal(err)
	}
	sess.Stdin.Close()
	line := make([]byte, 8)
	if _, err := io.ReadFull(sess.Stdout, line); err != nil || string(line) != "started\n" {
		t.Fatalf("exec did not start: %q %v", line, err)
	}
	res, err := s.Commit(ctx, "m1", sbuml.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkoutGuest(t, s, res.ID.String(), "m2", sbuml.CheckoutOptions{Continue: true})
	if out := sh(t, s, "m2", "echo next"); out != "next\n" {
		t.Errorf("next exec in the checkout: %q", out)
	}
	// In the checkout, the session's sleep was killed with its session.
	if out := sh(t, s, "m2", "ps -o comm | grep -c '^sleep$'; true"); strings.TrimSpace(out) != "0" {
		t.Errorf("the checkout still runs the exec of its origin: %s sleeps", strings.TrimSpace(out))
	}
	// The original's exec runs to its end.
	io.Copy(io.Discard, sess.Stdout)
	if code, err := sess.Wait(); err != nil || code != 0 {
		t.Errorf("the original's exec: %d, %v", code, err)
	}
}

// TestClockAfterCheckout checks that a guest checked out a while after
// its commit has the host's time, not the snapshot's.
func TestClockAfterCheckout(t *testing.T) {
	t.Parallel()
	s := guestScrapbook(t, 1)
	bootGuest(t, s, "m1", 0)
	ctx := guestContext(t)
	res, err := s.Commit(ctx, "m1", sbuml.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Halt(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	// TestDebianMachine checks out 60 s after its commit; here 20 s show
	// the same (the clock is set when the agent connects).
	wait := 20 * time.Second
	if testing.Short() {
		wait = 5 * time.Second
	}
	time.Sleep(wait)
	checkoutGuest(t, s, res.ID.String(), "m2", sbuml.CheckoutOptions{Continue: true})
	checkClock(t, s, "m2")
	// A freeze leaves the clock behind too; continue sets it again.
	if err := s.Freeze(ctx, "m2"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if err := s.Continue(ctx, "m2"); err != nil {
		t.Fatal(err)
	}
	checkClock(t, s, "m2")
}

// checkClock checks that machine's wall clock is within a second of the
// host's, allowing the keeper a few seconds to set it. busybox's date has
// no fractions of a second, so the guest waits for its next second to
// begin and prints it: that instant is known to a few milliseconds.
func checkClock(t testing.TB, s *sbuml.Scrapbook, machine string) {
	t.Helper()
	var off time.Duration
	for try := 0; try < 10; try++ {
		out := strings.TrimSpace(sh(t, s, machine, `a=$(date +%s); while [ "$(date +%s)" = "$a" ]; do :; done; date +%s`))
		received := time.Now()
		secs, err := strconv.ParseInt(out, 10, 64)
		if err != nil {
			t.Fatalf("date in the guest: %q", out)
		}
		// The second began in the guest just before it printed it.
		off = time.Unix(secs, 0).Sub(received)
		if off.Abs() <= time.Second {
			t.Logf("%s: clock off by %v (the exec's latency included)", machine, off.Round(time.Millisecond))
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Errorf("%s: clock off by %v", machine, off.Round(time.Millisecond))
}
