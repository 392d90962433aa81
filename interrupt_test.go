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

// TestInterruptImportExportGc sends SIGINT to import, export and gc at
// random moments: each ends with one line, or finishes, and leaves no
// unfinished file: the scrapbook passes fsck, an interrupted import moves
// no branch, an interrupted export leaves no directory behind.
func TestInterruptImportExportGc(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the sbuml command 20 times")
	}
	const trials = 6
	sbumlCommand(t) // built before anything is timed
	s := newScrapbook(t)
	src := t.TempDir()
	rng := rand.New(rand.NewPCG(14, 1))
	change := func(trial int) {
		for i := range 4 {
			writeFile(t, filepath.Join(src, fmt.Sprintf("d%d", i), "f.bin"), randomBytes(uint64(100*trial+i), 6*mib), 0o644)
		}
	}
	timed := func(args ...string) time.Duration {
		t0 := time.Now()
		if out, err := exec.Command(sbumlCommand(t), args...).CombinedOutput(); err != nil {
			t.Fatalf("sbuml %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return time.Since(t0)
	}
	// between picks a moment within a run of typical length; a command
	// that finished first tells how long a run takes now.
	between := func(typical time.Duration) time.Duration {
		return typical/10 + time.Duration(rng.Int64N(int64(typical)*8/10))
	}
	learn := func(typical *time.Duration, how string, took time.Duration) {
		if how == "done" {
			*typical = took
		}
	}
	book := []string{"--scrapbook", s.Dir}
	change(-1)
	typical := timed(append(book, "import", src)...)
	counts := map[string]int{}
	for trial := range trials {
		change(trial)
		before, _ := s.Refs.Get("refs/heads/main")
		how, took := interrupted(t, between(typical), append(book, "import", src)...)
		learn(&typical, how, took)
		counts["import "+how]++
		s := reopen(t, s)
		requireWhole(t, s, fmt.Sprintf("import trial %d (%s)", trial, how))
		requireNoTemporaries(t, s, fmt.Sprintf("import trial %d (%s)", trial, how))
		if after, _ := s.Refs.Get("refs/heads/main"); how != "done" && after != before {
			t.Errorf("import trial %d: interrupted, but main moved", trial)
		}
	}

	out := filepath.Join(t.TempDir(), "out")
	typical = timed(append(book, "export", "main", out)...)
	for trial := range trials {
		os.RemoveAll(out)
		how, took := interrupted(t, between(typical), append(book, "export", "main", out)...)
		learn(&typical, how, took)
		counts["export "+how]++
		if _, err := os.Stat(out); how != "done" && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("export trial %d: interrupted, but %s is there (%v)", trial, out, err)
		}
	}

	for trial := range trials {
		// Garbage for gc to remove: a branch of its own, deleted.
		change(100 + trial)
		res := mustImport(t, reopen(t, s), src, sbuml.SnapshotOptions{Branch: "tmp"})
		if err := s.Refs.Update("refs/heads/tmp", res.ID, objects.Zero, "test"); err != nil {
			t.Fatal(err)
		}
		if trial == 0 {
			typical = timed(append(book, "gc", "--dry-run")...) * 2
		}
		how, took := interrupted(t, between(typical), append(book, "gc")...)
		learn(&typical, how, took)
		counts["gc "+how]++
		s := reopen(t, s)
		requireWhole(t, s, fmt.Sprintf("gc trial %d (%s)", trial, how))
		requireNoTemporaries(t, s, fmt.Sprintf("gc trial %d (%s)", trial, how))
	}
	t.Logf("how the commands ended: %v", counts)
	if counts["import clean"] == 0 || counts["export clean"] == 0 || counts["gc clean"] == 0 {
		t.Errorf("not every command was interrupted at least once: %v", counts)
	}
	requireFsckClean(t, reopen(t, s))
}
