package sbuml_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/internal/s3test"
	"github.com/sbuml/sbuml/objects"
)

// The sbuml command, built once for the tests that run it.
var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	// Machines the tests boot get keepers: this test binary run again.
	sbuml.KeeperMain()
	// The S3 tests reach their server as AWS tools do, through the
	// environment (the endpoint they give themselves): never the EC2
	// metadata service.
	for _, kv := range (&s3test.Server{}).Env() {
		if k, v, _ := strings.Cut(kv, "="); k != "AWS_ENDPOINT_URL" {
			os.Setenv(k, v)
		}
	}
	code := m.Run()
	s3test.StopShared()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// sbumlCommand returns the path of the sbuml command built from
// ./cmd/sbuml, building it on first use.
func sbumlCommand(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		binDir, buildErr = os.MkdirTemp("", "sbuml-test-bin-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "sbuml")
		out, err := exec.Command(goTool, "build", "-o", binPath, "./cmd/sbuml").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/sbuml: %v\n%s", err, out)
			return
		}
		// The images the command builds carry the agent it finds beside it.
		agent := exec.Command(goTool, "build", "-ldflags", "-s -w", "-o", filepath.Join(binDir, "sbuml-guest"), "./cmd/sbuml-guest")
		agent.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := agent.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/sbuml-guest: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// TestImportKilled kills `sbuml import` with SIGKILL at random moments,
// over and over, in one scrapbook: after every kill the scrapbook must
// pass fsck and every ref must name a present snapshot, and a final
// import must succeed.
//
// It is long because the kill loop and the checks after every kill are one
// unit, run over one scrapbook.
func TestImportKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the sbuml command 60 times")
	}
	const trials = 60
	bin := sbumlCommand(t)
	ctx := context.Background()
	sbDir := filepath.Join(t.TempDir(), "scrapbook")
	s, err := sbuml.Init(sbDir)
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	rng := rand.New(rand.NewPCG(60, 1))
	// change gives the directory new work for the next import: big.bin,
	// 16-24 MiB, gets a new size and 4 MiB of new random bytes at a new
	// place (the rest repeats, which keeps the scrapbook and with it each
	// fsck small), and a small file changes.
	base := randomBytes(60, 24*mib)
	change := func(trial int) {
		size := (16 + rng.IntN(9)) * mib
		big := filepath.Join(src, "big.bin")
		writeFile(t, big, base[:size], 0o644)
		f, err := os.OpenFile(big, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(randomBytes(uint64(1000+trial), 4*mib), int64(rng.IntN(size-4*mib)&^4095)); err != nil {
			t.Fatal(err)
		}
		f.Close()
		writeFile(t, filepath.Join(src, "notes", "trial.txt"), []byte(fmt.Sprintf("trial %d\n", trial)), 0o644)
	}
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "import", "-m", "crash test", src)
		cmd.Env = append(os.Environ(), "SBUML_DIR="+sbDir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}

	// Unkilled runs store the repeating part and measure how long an
	// import of a change takes.
	var typical time.Duration
	for i := -2; i < 0; i++ {
		change(i)
		t0 := time.Now()
		if out, err := exec.Command(bin, "--scrapbook", sbDir, "import", src).CombinedOutput(); err != nil {
			t.Fatalf("sbuml import: %v\n%s", err, out)
		}
		typical = time.Since(t0)
	}
	t.Logf("an unkilled import takes %v", typical)

	var killed, finished, staleLocks int
	for trial := 0; trial < trials; trial++ {
		change(trial)
		delay := time.Duration(rng.Int64N(int64(typical) * 6 / 5))
		cmd := start()
		time.Sleep(delay)
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		var exit *exec.ExitError
		switch {
		case err == nil:
			finished++
		case errors.As(err, &exit) && exit.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL:
			killed++
		default:
			t.Fatalf("trial %d: sbuml import failed by itself: %v", trial, err)
		}

		requireWhole(t, s, fmt.Sprintf("trial %d (killed after %v)", trial, delay))

		// A ref update killed between creating and renaming its lock
		// file leaves the lock behind. Nobody holds it any more, so the
		// next import removes it and goes on at once (docs/refs.md).
		lock := filepath.Join(sbDir, "refs", "heads", "main.lock")
		if _, err := os.Stat(lock); err == nil {
			staleLocks++
			if _, err := s.Import(ctx, src, sbuml.SnapshotOptions{}); err != nil {
				t.Errorf("trial %d: import right after a writer was killed holding %s: %v", trial, lock, err)
			}
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	t.Logf("%d trials: %d imports killed, %d finished first, %d stale ref locks", trials, killed, finished, staleLocks)
	if killed < trials/6 {
		t.Errorf("only %d of %d imports were killed: the delays do not cover the import", killed, trials)
	}

	// An import left alone succeeds, and its snapshot is main's tip.
	change(trials)
	cmd := exec.Command(bin, "--scrapbook", sbDir, "import", "--json", src)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sbuml import: %v\n%s", err, out)
	}
	var res sbuml.Result
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("sbuml import --json: %v\n%s", err, out)
	}
	if tip, err := s.Resolve(ctx, "main"); err != nil || tip != res.ID {
		t.Errorf("main is at %v (%v), want the last import's %s", tip, err, res.ID)
	}
	requireFsckClean(t, s)
	requireRefsNameSnapshots(t, s)
	requireSameTree(t, src, mustExport(t, s, "main"))
	leftovers := 0
	filepath.WalkDir(filepath.Join(sbDir, "objects"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".tmp-") {
			leftovers++
		}
		return nil
	})
	t.Logf("%d temporary object files left by killed imports", leftovers)
}

// requireWhole fails the test, saying when, unless fsck finds the
// scrapbook clean and every ref names a snapshot that loads.
func requireWhole(t testing.TB, s *sbuml.Scrapbook, when string) {
	t.Helper()
	r, err := s.Fsck(context.Background())
	if err != nil {
		t.Fatalf("%s: fsck: %v", when, err)
	}
	for _, p := range r.Problems {
		t.Errorf("%s: fsck: %s", when, p)
	}
	requireRefsNameSnapshots(t, s)
}

// requireRefsNameSnapshots fails the test unless every ref names a snapshot
// that loads, and the history of each loads too.
func requireRefsNameSnapshots(t testing.TB, s *sbuml.Scrapbook) {
	t.Helper()
	ctx := context.Background()
	all, err := s.Refs.List("refs/")
	if err != nil {
		t.Fatalf("list refs: %v", err)
	}
	for _, r := range all {
		if _, err := objects.LoadSnapshot(ctx, s.Objects, r.ID); err != nil {
			t.Errorf("ref %s: %v", r.Name, err)
		}
	}
	if _, err := s.Log(ctx, sbuml.LogOptions{All: true}); err != nil {
		t.Errorf("log --all: %v", err)
	}
}

// TestGcKilled kills `sbuml gc` with SIGKILL at random moments while it
// removes the snapshots of deleted branches: after every kill the
// scrapbook must pass fsck, every ref must name a snapshot that loads,
// and what the kept branch holds must export unchanged.
//
// It is long because the kill loop and the checks after every kill are one
// unit, run over one scrapbook.
func TestGcKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the sbuml command 40 times")
	}
	const trials = 20
	bin := sbumlCommand(t)
	ctx := context.Background()
	s := newScrapbook(t)
	kept := t.TempDir()
	writeRandomFile(t, filepath.Join(kept, "f"), 6*mib, 1)
	mustImport(t, s, kept, sbuml.SnapshotOptions{})
	src := t.TempDir()
	rng := rand.New(rand.NewPCG(61, 1))

	// Each trial adds a branch of 12 MiB of its own and deletes it, so
	// gc always has packs to rewrite and objects to remove.
	garbage := func(trial int) {
		writeRandomFile(t, filepath.Join(src, "g"), 12*mib, uint64(100+trial))
		res := mustImport(t, s, src, sbuml.SnapshotOptions{Branch: "tmp"})
		if err := s.Refs.Update("refs/heads/tmp", res.ID, objects.Zero, "test"); err != nil {
			t.Fatal(err)
		}
	}
	gc := func() *exec.Cmd {
		cmd := exec.Command(bin, "--scrapbook", s.Dir, "gc")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	garbage(-1)
	t0 := time.Now()
	if err := gc().Wait(); err != nil {
		t.Fatal(err)
	}
	typical := time.Since(t0)
	t.Logf("an unkilled gc takes %v", typical)

	killed := 0
	files := map[int]int{}
	for trial := 0; trial < trials; trial++ {
		garbage(trial)
		delay := time.Duration(rng.Int64N(int64(typical) * 6 / 5))
		cmd := gc()
		time.Sleep(delay)
		cmd.Process.Signal(syscall.SIGKILL)
		if err := cmd.Wait(); err != nil {
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("trial %d: sbuml gc failed by itself: %v", trial, err)
			}
			killed++
		}
		s, err := sbuml.Open(s.Dir) // as a new process would
		if err != nil {
			t.Fatal(err)
		}
		requireWhole(t, s, fmt.Sprintf("trial %d (killed after %v)", trial, delay))
		if t.Failed() {
			t.FailNow()
		}
		entries, _ := os.ReadDir(filepath.Join(s.Dir, "objects", "pack"))
		files[len(entries)]++

		// A gc left alone then cleans up after the killed one: one
		// pack, holding nothing but the kept branch. It also sets the
		// range of the next kill.
		t0 := time.Now()
		g, err := s.Gc(ctx, sbuml.GcOptions{})
		typical = time.Since(t0) + 10*time.Millisecond // and a process start
		if err != nil {
			t.Fatalf("trial %d: gc after a killed gc: %v", trial, err)
		}
		if g.PacksAfter != 1 || g.KeptBytes > 7*mib {
			t.Errorf("trial %d: gc after a killed gc: %+v", trial, g.RepackStats)
		}
		if entries, _ := os.ReadDir(filepath.Join(s.Dir, "objects", "pack")); len(entries) != 2 {
			t.Errorf("trial %d: pack/ holds %d files after gc, want one pack and its index", trial, len(entries))
		}
		if r := requireFsckClean(t, s); r.Leftovers != 0 {
			t.Errorf("trial %d: fsck after gc finds %d leftover files", trial, r.Leftovers)
		}
	}
	t.Logf("%d trials: %d gc runs killed; files left in pack/ by a kill (count: trials): %v", trials, killed, files)
	if killed < trials/3 {
		t.Errorf("only %d of %d gc runs were killed: the delays do not cover gc", killed, trials)
	}
	s, err := sbuml.Open(s.Dir)
	if err != nil {
		t.Fatal(err)
	}
	requireFsckClean(t, s)
	requireSameTree(t, kept, mustExport(t, s, "main"))
}
