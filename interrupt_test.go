package sbuml_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/objects"
)

// interrupted runs the sbuml command with args, sends it SIGINT after
// delay, and reports how it ended: "done" if it finished first, "clean"
// if it stopped with exit 1 and one line on stderr saying it was
// interrupted; anything else fails the test. A process that gets the
// signal before it set up its handling dies of it, having written
// nothing: that is "early". It also returns how long the command ran.
func interrupted(t *testing.T, delay time.Duration, args ...string) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	cmd := exec.Command(sbumlCommand(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(delay)
	cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("sbuml %s did not end within 60 s of SIGINT", strings.Join(args, " "))
	}
	took := time.Since(start)
	var exit *exec.ExitError
	switch {
	case err == nil:
		return "done", took
	case errors.As(err, &exit) && exit.Sys().(syscall.WaitStatus).Signal() == syscall.SIGINT:
		return "early", took
	case errors.As(err, &exit) && exit.ExitCode() == 1 && strings.Count(stderr.String(), "\n") == 1 &&
		strings.HasPrefix(stderr.String(), "sbuml: ") && strings.Contains(stderr.String(), "interrupted"):
		return "clean", took
	}
	t.Fatalf("sbuml %s interrupted after %v: %v, stderr %q; want exit 1 and one line saying it was interrupted", strings.Join(args, " "), delay, err, stderr.String())
	return "", 0
}

// requireNoTemporaries fails the test if the store holds files a writer
// had not finished.
func requireNoTemporaries(t *testing.T, s *sbuml.Scrapbook, when string) {
	t.Helper()
	filepath.WalkDir(filepath.Join(s.Dir, "objects"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".tmp-") {
			t.Errorf("%s: %s left behind", when, p)
		}
		return nil
	})
}

// interrupter sends SIGINT to sbuml commands on one scrapbook at random
// moments of a run of typical length, and counts how they ended.
type interrupter struct {
	t       *testing.T
	s       *sbuml.Scrapbook
	src     string
	rng     *rand.Rand
	typical time.Duration
	counts  map[string]int
}

// change writes new data into the directory imported.
func (in *interrupter) change(trial int) {
	for i := range 4 {
		writeFile(in.t, filepath.Join(in.src, fmt.Sprintf("d%d", i), "f.bin"), randomBytes(uint64(100*trial+i), 6*mib), 0o644)
	}
}

// timed runs the command to its end and sets typical to how long it took.
func (in *interrupter) timed(args ...string) {
	in.t.Helper()
	t0 := time.Now()
	if out, err := exec.Command(sbumlCommand(in.t), append([]string{"--scrapbook", in.s.Dir}, args...)...).CombinedOutput(); err != nil {
		in.t.Fatalf("sbuml %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	in.typical = time.Since(t0)
}

// interrupt runs the command, interrupts it at a random moment within a
// run of typical length and returns how it ended; a command that
// finished first tells how long a run takes now.
func (in *interrupter) interrupt(args ...string) string {
	in.t.Helper()
	delay := in.typical/10 + time.Duration(in.rng.Int64N(int64(in.typical)*8/10))
	how, took := interrupted(in.t, delay, append([]string{"--scrapbook", in.s.Dir}, args...)...)
	if how == "done" {
		in.typical = took
	}
	in.counts[args[0]+" "+how]++
	return how
}

// TestInterruptImportExportGc sends SIGINT to import, export and gc at
// random moments: each ends with one line, or finishes, and leaves no
// unfinished file: the scrapbook passes fsck, an interrupted import moves
// no branch, an interrupted export leaves no directory behind.
func TestInterruptImportExportGc(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the sbuml command 20 times")
	}
	sbumlCommand(t) // built before anything is timed
	in := &interrupter{t: t, s: newScrapbook(t), src: t.TempDir(), rng: rand.New(rand.NewPCG(14, 1)), counts: map[string]int{}}
	in.change(-1)
	in.timed("import", in.src)
	interruptImports(in)
	interruptExports(in)
	interruptGcs(in)
	t.Logf("how the commands ended: %v", in.counts)
	if in.counts["import clean"] == 0 || in.counts["export clean"] == 0 || in.counts["gc clean"] == 0 {
		t.Errorf("not every command was interrupted at least once: %v", in.counts)
	}
	requireFsckClean(t, reopen(t, in.s))
}

// interruptTrials is how many times each command is interrupted.
const interruptTrials = 6

func interruptImports(in *interrupter) {
	for trial := range interruptTrials {
		in.change(trial)
		before, _ := in.s.Refs.Get("refs/heads/main")
		how := in.interrupt("import", in.src)
		s := reopen(in.t, in.s)
		requireWhole(in.t, s, fmt.Sprintf("import trial %d (%s)", trial, how))
		requireNoTemporaries(in.t, s, fmt.Sprintf("import trial %d (%s)", trial, how))
		if after, _ := s.Refs.Get("refs/heads/main"); how != "done" && after != before {
			in.t.Errorf("import trial %d: interrupted, but main moved", trial)
		}
	}
}

func interruptExports(in *interrupter) {
	out := filepath.Join(in.t.TempDir(), "out")
	in.timed("export", "main", out)
	for trial := range interruptTrials {
		os.RemoveAll(out)
		how := in.interrupt("export", "main", out)
		if _, err := os.Stat(out); how != "done" && !errors.Is(err, fs.ErrNotExist) {
			in.t.Errorf("export trial %d: interrupted, but %s is there (%v)", trial, out, err)
		}
	}
}

func interruptGcs(in *interrupter) {
	for trial := range interruptTrials {
		// Garbage for gc to remove: a branch of its own, deleted.
		in.change(100 + trial)
		res := mustImport(in.t, reopen(in.t, in.s), in.src, sbuml.SnapshotOptions{Branch: "tmp"})
		if err := in.s.Refs.Update("refs/heads/tmp", res.ID, objects.Zero, "test"); err != nil {
			in.t.Fatal(err)
		}
		if trial == 0 {
			in.timed("gc", "--dry-run")
			in.typical *= 2
		}
		how := in.interrupt("gc")
		s := reopen(in.t, in.s)
		requireWhole(in.t, s, fmt.Sprintf("gc trial %d (%s)", trial, how))
		requireNoTemporaries(in.t, s, fmt.Sprintf("gc trial %d (%s)", trial, how))
	}
}
