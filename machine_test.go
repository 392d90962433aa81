package sbuml_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/vmm"
	"golang.org/x/sys/unix"
)

// cliMachine is what the tests need of one line of 'sbuml ps --json'.
type cliMachine struct {
	Name  string    `json:"name"`
	State vmm.State `json:"state"`
	PID   int       `json:"pid"`
}

// psJSON runs 'sbuml ps --json'.
func psJSON(t testing.TB, s *sbuml.Scrapbook) map[string]cliMachine {
	t.Helper()
	var list []cliMachine
	if err := json.Unmarshal([]byte(mustCLI(t, s, "ps", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	out := map[string]cliMachine{}
	for _, m := range list {
		out[m.Name] = m
	}
	return out
}

// machineDirOf returns the directory of a machine: a name's under
// machines/, or the path itself.
func machineDirOf(s *sbuml.Scrapbook, name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(s.MachinesDir(), name)
}

// ramFileOf returns the RAM file of a machine, from its configuration.
func ramFileOf(t testing.TB, s *sbuml.Scrapbook, name string) string {
	t.Helper()
	cfg, err := readMachineConfig(machineDirOf(s, name))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.RAMFile
}

// requireGone checks that a halted machine left no QEMU process, no RAM
// file and no machine directory (a directory of the user's choosing
// stays, without the machine in it).
func requireGone(t testing.TB, s *sbuml.Scrapbook, name string, pid int, ram string) {
	t.Helper()
	if processAlive(pid) {
		t.Errorf("%s halted, but its QEMU (pid %d) is still alive", name, pid)
	}
	if _, err := os.Stat(ram); !os.IsNotExist(err) {
		t.Errorf("%s halted, but its RAM file %s is still there (%v)", name, ram, err)
	}
	if filepath.IsAbs(name) {
		if _, err := os.Stat(filepath.Join(name, vmm.ConfigFile)); !os.IsNotExist(err) {
			t.Errorf("%s halted, but its machine configuration is still there (%v)", name, err)
		}
	} else if _, err := os.Stat(filepath.Join(s.MachinesDir(), name)); !os.IsNotExist(err) {
		t.Errorf("%s halted, but its directory is still there (%v)", name, err)
	}
}

// TestMachineCLI drives machines through the sbuml command as a user
// would: boot, the console (with a pipe as input), freeze and continue
// with a counter running, ps for a QEMU killed with SIGKILL, halt and
// halt --all.
//
// It is long because one booted guest serves all these checks: each guest
// costs seconds to boot under TCG.
func TestMachineCLI(t *testing.T) {
	t.Parallel()
	s := guestScrapbook(t, 2)

	out := mustCLI(t, s, "boot", "m1", "--accel", guestAccel, "--memory", "256M")
	if !strings.HasPrefix(out, "m1 running: 256.0 MiB RAM, 1 CPU, tcg") {
		t.Errorf("sbuml boot m1 printed %q", out)
	}
	if log := mustCLI(t, s, "console", "m1", "--tail"); !strings.Contains(log, "SBUML-READY") {
		t.Fatalf("sbuml console m1 --tail after boot:\n%s", log)
	}
	g := &guest{t: t, s: s, name: "m1"}

	// Typing through 'sbuml console' with a pipe as input: all of the
	// line reaches the guest even though the input ends at once.
	r := sbumlCLI(t, s, strings.NewReader("echo piped-$((6*7)); echo second-command-$((40+2))\n"), "console", "m1")
	if r.err != nil {
		t.Fatalf("sbuml console m1 < pipe: %v\n%s", r.err, r.stderr)
	}
	// and what the command printed comes back before console returns.
	if !strings.Contains(r.stdout, "piped-42") {
		t.Errorf("sbuml console m1 < pipe printed %q, want the command's output", r.stdout)
	}
	deadline := time.Now().Add(10 * time.Second)
	for log := ""; !strings.Contains(log, "second-command-42"); log = mustCLI(t, s, "console", "m1", "--tail") {
		if time.Now().After(deadline) {
			t.Errorf("a command typed through sbuml console with a pipe as input did not run (input cut short?):\n%s", tail(log, 500))
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	g.run("true") // whatever was cut short is a command of its own

	// A counter stops while the machine is frozen and resumes after
	// continue without restarting.
	g.startCounter()
	g.waitTicks(5)
	if out := mustCLI(t, s, "freeze", "m1"); out != "m1 frozen\n" {
		t.Errorf("sbuml freeze m1 printed %q", out)
	}
	if st := psJSON(t, s)["m1"].State; st != vmm.StateFrozen {
		t.Errorf("ps says m1 is %s after freeze", st)
	}
	// Typing from a pipe into a frozen machine is refused at once, and
	// leaves nothing to run into the next command.
	start := time.Now()
	r = sbumlCLI(t, s, strings.NewReader("echo 01$((1+1))\n"), "console", "m1")
	if r.err == nil || !strings.Contains(r.stderr, "frozen") || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
		t.Errorf("sbuml console m1 < pipe, m1 frozen: %v, stderr %q", r.err, r.stderr)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("sbuml console m1 < pipe, m1 frozen, took %v", d)
	}
	time.Sleep(3 * counterPeriod) // output already under way comes out
	frozenAt := g.lastTick()
	time.Sleep(10 * counterPeriod)
	if now := g.lastTick(); now != frozenAt {
		t.Errorf("counter went on from %d to %d while frozen", frozenAt, now)
	}
	if out := mustCLI(t, s, "continue", "m1"); out != "m1 running\n" {
		t.Errorf("sbuml continue m1 printed %q", out)
	}
	g.waitTicks(5)
	all := g.ticks()
	for i := 1; i < len(all); i++ {
		if all[i] != all[i-1]+1 {
			t.Fatalf("counter jumped from %d to %d across freeze and continue: %v", all[i-1], all[i], all)
		}
	}
	t.Logf("counter at %d when frozen, at %d after continue", frozenAt, all[len(all)-1])
	// The next command typed runs as itself: nothing of the refused one.
	r = sbumlCLI(t, s, strings.NewReader("echo after-$((1+1))\n"), "console", "m1")
	if r.err != nil || !strings.Contains(r.stdout, "after-2") {
		t.Errorf("sbuml console m1 < pipe after continue: %v, %q", r.err, r.stdout)
	}
	if log := mustCLI(t, s, "console", "m1", "--tail"); strings.Contains(log, "012") {
		t.Errorf("the line refused while frozen reached the guest:\n%s", tail(log, 500))
	}

	// ps reports a QEMU killed with SIGKILL as crashed.
	mustCLI(t, s, "boot", "m2", "--accel", guestAccel, "--memory", "256M")
	m2 := psJSON(t, s)["m2"]
	m2RAM := ramFileOf(t, s, "m2")
	if err := syscall.Kill(m2.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitState(t, &guest{t: t, s: s, name: "m2"}, vmm.StateCrashed)
	var line string
	for _, l := range strings.Split(mustCLI(t, s, "ps"), "\n") {
		if strings.HasPrefix(l, "m2 ") {
			line = l
		}
	}
	if f := strings.Fields(line); len(f) < 2 || f[1] != "crashed" {
		t.Errorf("sbuml ps line for m2 killed with SIGKILL: %q", line)
	}

	// With a console attached, the machine can still be frozen,
	// continued and halted from elsewhere; the console then ends.
	attachedIn, keepOpen, err := os.Pipe() // input that does not end
	if err != nil {
		t.Fatal(err)
	}
	defer keepOpen.Close()
	attached := exec.Command(sbumlCommand(t), "--scrapbook", s.Dir, "console", "m1")
	attached.Stdin = attachedIn
	var attachedErr strings.Builder
	attached.Stderr = &attachedErr
	if err := attached.Start(); err != nil {
		t.Fatal(err)
	}
	attachedIn.Close()
	waitAttached(t, filepath.Join(s.MachinesDir(), "m1"))
	if out := mustCLI(t, s, "freeze", "m1"); out != "m1 frozen\n" {
		t.Errorf("sbuml freeze m1 with a console attached printed %q", out)
	}
	mustCLI(t, s, "continue", "m1")
	// QEMU serves one console client: a second console is refused.
	requireCLIError(t, s, []string{"console", "m1"}, "console is attached in another sbuml process", "pid ")

	// halt leaves neither QEMU nor the RAM file.
	m1 := psJSON(t, s)["m1"]
	m1RAM := ramFileOf(t, s, "m1")
	if out := mustCLI(t, s, "halt", "m1"); out != "m1 halted\n" {
		t.Errorf("sbuml halt m1 printed %q", out)
	}
	requireGone(t, s, "m1", m1.PID, m1RAM)
	consoleDone := make(chan error, 1)
	go func() { consoleDone <- attached.Wait() }()
	select {
	case err := <-consoleDone:
		if err != nil || !strings.Contains(attachedErr.String(), "closed") {
			t.Errorf("sbuml console of a machine halted meanwhile: %v, %q", err, attachedErr.String())
		}
	case <-time.After(10 * time.Second):
		attached.Process.Kill()
		t.Errorf("sbuml console did not end when its machine was halted")
	}

	// halt --all halts the crashed m2 and a running m3, kept in a
	// directory of the user's choosing, which ps lists by its path.
	m3Dir := filepath.Join(t.TempDir(), "m3")
	mustCLI(t, s, "boot", m3Dir, "--accel", guestAccel, "--memory", "256M")
	m3, ok := psJSON(t, s)[m3Dir]
	if !ok || m3.State != vmm.StateRunning {
		t.Errorf("sbuml ps --json does not list %s as running: %v", m3Dir, psJSON(t, s))
	}
	m3RAM := ramFileOf(t, s, m3Dir)
	out = mustCLI(t, s, "halt", "--all")
	if !strings.Contains(out, "m2 halted") || !strings.Contains(out, m3Dir+" halted") {
		t.Errorf("sbuml halt --all printed %q", out)
	}
	requireGone(t, s, "m2", 0, m2RAM)
	requireGone(t, s, m3Dir, m3.PID, m3RAM)
	if left := psJSON(t, s); len(left) != 0 {
		t.Errorf("machines left after halt --all: %v", left)
	}
}

// TestMachineCLIErrors checks the one-line errors of bad machine names
// and of a guest RAM size that does not fit on the RAM file system.
func TestMachineCLIErrors(t *testing.T) {
	t.Parallel()
	s := guestScrapbook(t, 0)
	requireCLIError(t, s, []string{"boot", "bad name", "--accel", guestAccel}, "bad machine name", `"bad name"`)
	requireCLIError(t, s, []string{"boot", "bad,name", "--accel", guestAccel}, "bad machine name", `"bad,name"`)
	requireCLIError(t, s, []string{"halt", "nosuch"}, "no machine nosuch")
	requireCLIError(t, s, []string{"console", "nosuch"}, "no machine nosuch")
	requireCLIError(t, s, []string{"commit", "nosuch"}, "no machine nosuch")

	// More RAM than the RAM file system has free, twice: the first
	// failure must leave the name free.
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Dir(vmm.DefaultRAMRoot), &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	tooMuch := fmt.Sprintf("%dG", free>>30+2)
	// The RAM root is shared by every scrapbook on the host: a name of
	// this test's own, so that other machines' RAM is not counted.
	big := fmt.Sprintf("big%d", os.Getpid())
	for range 2 {
		msg := requireCLIError(t, s, []string{"boot", big, "--accel", guestAccel, "--memory", tooMuch}, big, "not enough space", filepath.Dir(vmm.DefaultRAMRoot))
		t.Log(msg)
	}
	if _, err := os.Stat(filepath.Join(s.MachinesDir(), big)); !os.IsNotExist(err) {
		t.Errorf("failed boot left its machine directory (%v)", err)
	}
	if left, _ := filepath.Glob(filepath.Join(vmm.DefaultRAMRoot, big+"-*")); len(left) > 0 {
		t.Errorf("failed boot left RAM directories %v", left)
	}
}

// waitAttached waits until a console command shows the console of the
// machine in dir and has let go of the machine itself (vmm ShareConsole):
// the console lock is held and the machine lock is not.
func waitAttached(t *testing.T, dir string) {
	t.Helper()
	held := func(name string) bool {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return false
		}
		defer f.Close()
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			return true
		}
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		return false
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if held(vmm.ConsoleLock) && !held(vmm.LockFile) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the console of %s was not attached within 30 s", dir)
		}
	}
}
