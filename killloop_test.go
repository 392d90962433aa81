package sbuml_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbuml/sbuml"
)

// killLoop is the state of TestKillLoop: a scrapbook, a scrapbook it
// pushes to by path, and the directory it imports.
type killLoop struct {
	t           *testing.T
	bin         string
	book, other string
	src         string
	rng         *rand.Rand
	typical     map[string]time.Duration
	round       int
}

// prepare gives the next operation op something to do: new data to
// import, garbage to collect (a branch imported and deleted), or a new
// snapshot to push.
func (k *killLoop) prepare(op string) {
	k.round++
	writeRandomFile(k.t, filepath.Join(k.src, "new.bin"), 3*mib, uint64(1000+k.round))
	switch op {
	case "gc":
		k.sbuml("import", "-b", "tmp", k.src)
		k.sbuml("branch", "-d", "tmp")
	case "push":
		k.sbuml("import", k.src)
	}
}

// args are the arguments of op.
func (k *killLoop) args(op string) []string {
	switch op {
	case "import":
		return []string{"--scrapbook", k.book, "import", k.src}
	case "gc":
		return []string{"--scrapbook", k.book, "gc"}
	}
	return []string{"--scrapbook", k.book, "push", k.other, "main"}
}

// sbuml runs the command on the scrapbook and fails the test if it fails.
func (k *killLoop) sbuml(args ...string) {
	k.t.Helper()
	if out, err := exec.Command(k.bin, append([]string{"--scrapbook", k.book}, args...)...).CombinedOutput(); err != nil {
		k.t.Fatalf("sbuml %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// killed runs op and kills it with SIGKILL at a random moment of a run of
// typical length. It reports whether the kill came before the end.
func (k *killLoop) killed(op string) (bool, time.Duration) {
	cmd := exec.Command(k.bin, k.args(op)...)
	if err := cmd.Start(); err != nil {
		k.t.Fatal(err)
	}
	delay := time.Duration(k.rng.Int64N(int64(k.typical[op]) * 6 / 5))
	time.Sleep(delay)
	cmd.Process.Signal(syscall.SIGKILL)
	err := cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL {
		return true, delay
	}
	if err != nil {
		k.t.Fatalf("sbuml %s failed by itself: %v", op, err)
	}
	return false, delay
}

// again runs op at once, unkilled, and returns what went wrong, if
// anything; it learns how long op takes.
func (k *killLoop) again(op string) string {
	start := time.Now()
	var stderr bytes.Buffer
	cmd := exec.Command(k.bin, k.args(op)...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Sprintf("the next %s failed: %v: %s", op, err, strings.TrimSpace(stderr.String()))
	}
	k.typical[op] = time.Since(start)
	return ""
}

// whole returns the problems fsck finds in both scrapbooks.
func (k *killLoop) whole() []string {
	var problems []string
	for _, dir := range []string{k.book, k.other} {
		s, err := sbuml.Open(dir)
		if err != nil {
			return append(problems, err.Error())
		}
		r, err := s.Fsck(context.Background())
		s.Close()
		if err != nil {
			return append(problems, err.Error())
		}
		for _, p := range r.Problems {
			problems = append(problems, dir+": "+p.String())
		}
	}
	return problems
}

// TestKillLoop kills import, gc and push to a path remote with SIGKILL at
// random moments, and runs the same command again at once: it must
// succeed (a lock the killed process held is taken over, not waited
// for), and both scrapbooks must pass fsck. $SBUML_KILL_TRIALS sets the
// number of trials (12 by default; the hardening brief asks for 200).
func TestKillLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the sbuml command many times")
	}
	trials := 12
	if v := os.Getenv("SBUML_KILL_TRIALS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("SBUML_KILL_TRIALS=%q", v)
		}
		trials = n
	}
	k := &killLoop{t: t, bin: sbumlCommand(t), book: newScrapbook(t).Dir, other: newScrapbook(t).Dir,
		src: t.TempDir(), rng: rand.New(rand.NewPCG(200, 1)), typical: map[string]time.Duration{}}
	writeRandomFile(t, filepath.Join(k.src, "base.bin"), 8*mib, 1)
	ops := []string{"import", "gc", "push"}
	for _, op := range ops {
		k.prepare(op)
		if msg := k.again(op); msg != "" {
			t.Fatal(msg)
		}
	}
	var failures []string
	counts := map[string]int{}
	for trial := range trials {
		op := ops[trial%len(ops)]
		k.prepare(op)
		killed, delay := k.killed(op)
		counts[fmt.Sprintf("%s killed=%v", op, killed)]++
		when := fmt.Sprintf("trial %d: %s killed after %v", trial, op, delay.Round(time.Millisecond))
		if msg := k.again(op); msg != "" {
			failures = append(failures, when+": "+msg)
		}
		for _, p := range k.whole() {
			failures = append(failures, when+": fsck: "+p)
		}
	}
	t.Logf("%d trials: %v; %d failures", trials, counts, len(failures))
	for _, f := range failures {
		t.Error(f)
	}
}
