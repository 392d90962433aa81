package sbuml_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/internal/testimage"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/vmm"
)

// Helpers for tests that run real guests: the test image booted under TCG
// (KVM is not relied on; Accel "tcg" also skips the accelerator probe).

// guestAccel is the accelerator every test guest runs under.
const guestAccel = "tcg"

// guestTimeout bounds one guest operation (boot, a console command, a
// commit, a checkout) so that a hung QEMU fails the test, not the suite.
const guestTimeout = 3 * time.Minute

// commandTimeout bounds a command typed on a guest's console.
const commandTimeout = time.Minute

// guestContext returns a context bounded by guestTimeout that ends with
// the test.
func guestContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), guestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// maxGuests bounds how many test guests run at once: TCG guests share the
// host's cores (two on the reference machine).
const maxGuests = 3

// guestSlots counts the guests that tests have reserved.
var guestSlots = struct {
	sync.Mutex
	cond sync.Cond
	used int
}{}

func init() { guestSlots.cond.L = &guestSlots.Mutex }

// reserveGuests waits until n more guests may run and reserves them until
// the test ends.
func reserveGuests(t testing.TB, n int) {
	n = min(n, maxGuests)
	guestSlots.Lock()
	for guestSlots.used+n > maxGuests {
		guestSlots.cond.Wait()
	}
	guestSlots.used += n
	guestSlots.Unlock()
	t.Cleanup(func() {
		guestSlots.Lock()
		guestSlots.used -= n
		guestSlots.cond.Broadcast()
		guestSlots.Unlock()
	})
}

// guestScrapbook returns a new scrapbook in t.TempDir() holding the test
// image as the default base image, once the test may run the given number
// of guests at once (see maxGuests). Every machine under it is halted when
// the test ends, and the test fails if one of them leaves QEMU or its RAM
// file behind.
func guestScrapbook(t testing.TB, guests int) *sbuml.Scrapbook {
	t.Helper()
	reserveGuests(t, guests)
	img := testimage.Get(t)
	s, err := sbuml.Init(filepath.Join(t.TempDir(), "scrapbook"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddImage(guestContext(t), sbuml.DefaultImage, filepath.Dir(img.Kernel)); err != nil {
		t.Fatal(err)
	}
	haltAllOnCleanup(t, s)
	return s
}

// haltAllOnCleanup halts every machine of s when the test ends and checks
// that no QEMU process and no RAM file of theirs survive.
func haltAllOnCleanup(t testing.TB, s *sbuml.Scrapbook) {
	t.Cleanup(func() {
		ctx := context.Background()
		infos, _ := s.Machines(ctx)
		type leftover struct {
			name string
			pid  int
			ram  string
		}
		var machines []leftover
		for _, in := range infos {
			l := leftover{name: in.Name, pid: in.PID}
			if cfg, err := readMachineConfig(in.Dir); err == nil {
				l.ram = cfg.RAMFile
			}
			machines = append(machines, l)
		}
		if _, err := s.HaltAll(ctx); err != nil {
			t.Errorf("cleanup: halt all: %v", err)
		}
		for _, l := range machines {
			if l.pid != 0 && processAlive(l.pid) {
				t.Errorf("cleanup: QEMU of %s (pid %d) still alive after HaltAll", l.name, l.pid)
			}
			if l.ram != "" && filepath.IsAbs(l.ram) {
				if _, err := os.Stat(l.ram); err == nil {
					t.Errorf("cleanup: RAM file %s of %s still exists after HaltAll", l.ram, l.name)
				}
			}
		}
	})
}

// readMachineConfig reads a machine directory's vmm configuration.
func readMachineConfig(dir string) (*vmm.Config, error) {
	m, err := vmm.Open(dir)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	cfg := m.Config()
	return &cfg, nil
}

// processAlive reports whether pid is a live process (not a zombie).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// guest is a machine of a scrapbook, driven through its serial console.
// It does not keep the machine open between calls, so that the code under
// test (Commit, Checkout, the sbuml command) can lock it.
type guest struct {
	t    testing.TB
	s    *sbuml.Scrapbook
	name string
	seq  int
	// off is where the next console read starts in console.log.
	off int64
}

// bootGuest boots machine name from the test image with the given RAM
// size (0: 256 MiB) and returns it once its shell is ready.
func bootGuest(t testing.TB, s *sbuml.Scrapbook, name string, memory int64) *guest {
	t.Helper()
	if memory == 0 {
		memory = 256 << 20
	}
	return bootGuestWith(t, s, name, sbuml.BootOptions{Memory: memory, Accel: guestAccel})
}

// bootGuestWith boots machine name with opts and waits for its shell.
func bootGuestWith(t testing.TB, s *sbuml.Scrapbook, name string, opts sbuml.BootOptions) *guest {
	t.Helper()
	start := time.Now()
	m, err := s.Boot(guestContext(t), name, opts)
	if m != nil {
		m.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s booted in %v", name, time.Since(start).Round(time.Millisecond))
	g := &guest{t: t, s: s, name: name}
	// Let the shell finish starting before typing to it.
	g.run("true")
	return g
}

// checkoutGuest checks rev out as machine name and returns it.
func checkoutGuest(t testing.TB, s *sbuml.Scrapbook, rev, name string, opts sbuml.CheckoutOptions) (*guest, *sbuml.CheckoutResult) {
	t.Helper()
	if opts.Accel == "" {
		opts.Accel = guestAccel
	}
	res, err := s.Checkout(guestContext(t), rev, name, opts)
	if err != nil {
		t.Fatal(err)
	}
	return &guest{t: t, s: s, name: name}, res
}

// dir returns the machine directory.
func (g *guest) dir() string { return filepath.Join(g.s.MachinesDir(), g.name) }

// consoleLog returns what the machine's console has shown so far.
func (g *guest) consoleLog() string {
	g.t.Helper()
	b, err := os.ReadFile(filepath.Join(g.dir(), vmm.ConsoleLog))
	if err != nil {
		g.t.Fatal(err)
	}
	return string(b)
}

// open opens the machine, failing the test on error; the caller closes it.
func (g *guest) open() *vmm.Machine {
	g.t.Helper()
	m, err := g.s.OpenMachine(g.name)
	if err != nil {
		g.t.Fatal(err)
	}
	return m
}

// run types cmd on the guest's shell and returns its output (lines
// separated by "\n", counter ticks left out). The output is framed by
// markers the shell prints around it; the typed command line does not
// contain them literally, so its echo is never mistaken for them.
func (g *guest) run(cmd string) string {
	g.t.Helper()
	out, err := g.tryRun(cmd)
	if err != nil {
		g.t.Fatalf("%s: %q: %v\nconsole:\n%s", g.name, cmd, err, tail(g.consoleLog(), 2000))
	}
	return out
}

// tryRun is run returning its error.
func (g *guest) tryRun(cmd string) (string, error) {
	g.seq++
	begin, end := fmt.Sprintf("@@begin-%d@@", g.seq), fmt.Sprintf("@@end-%d@@", g.seq)
	quote := func(marker string) string { return `"` + marker[:2] + `""` + marker[2:] + `"` }
	sep := ";"
	if strings.HasSuffix(cmd, "&") {
		sep = ""
	}
	line := fmt.Sprintf("echo %s; %s%s echo %s", quote(begin), cmd, sep, quote(end))
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	m, err := g.s.OpenMachine(g.name)
	if err != nil {
		return "", err
	}
	defer m.Close()
	if err := m.SendLine(ctx, line); err != nil {
		return "", err
	}
	off, err := m.WaitConsoleAfter(ctx, g.off, end)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(m.ConsoleLog())
	if err != nil {
		return "", err
	}
	text := string(b[g.off:off])
	g.off = off
	var out []string
	in := false
	for _, l := range strings.Split(strings.ReplaceAll(text, "\r", ""), "\n") {
		switch {
		case strings.Contains(l, begin):
			in = true
		case strings.Contains(l, end):
			in = false
		case in && !tickRE.MatchString(l):
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n"), nil
}

// waitFor waits until the console, from where the last command's output
// ended, shows a line containing text.
func (g *guest) waitFor(text string) {
	g.t.Helper()
	m := g.open()
	defer m.Close()
	off, err := m.WaitConsoleAfter(guestContext(g.t), g.off, text)
	if err != nil {
		g.t.Fatalf("%s: %v\nconsole:\n%s", g.name, err, tail(g.consoleLog(), 2000))
	}
	g.off = off
}

// counterPeriod is how often the guest counter prints.
const counterPeriod = 100 * time.Millisecond

// startCounter starts a background program in the guest that prints
// tick-1, tick-2, ... on the console every counterPeriod, and waits for
// its first ticks.
func (g *guest) startCounter() {
	g.t.Helper()
	g.run(fmt.Sprintf("(i=0; while true; do i=$((i+1)); echo tick-$i; sleep %g; done) &", counterPeriod.Seconds()))
	g.waitFor("tick-3\r")
}

// tickRE matches a counter line. A tick may follow the echo of a command
// being typed on the same line, never precede it.
var tickRE = regexp.MustCompile(`tick-(\d+)$`)

// ticks returns the counter values on the console, in order.
func (g *guest) ticks() []int {
	g.t.Helper()
	var n []int
	for _, l := range strings.Split(strings.ReplaceAll(g.consoleLog(), "\r", ""), "\n") {
		if m := tickRE.FindStringSubmatch(l); m != nil {
			v, _ := strconv.Atoi(m[1])
			n = append(n, v)
		}
	}
	return n
}

// lastTick returns the last counter value on the console, 0 if none.
func (g *guest) lastTick() int {
	g.t.Helper()
	n := g.ticks()
	if len(n) == 0 {
		return 0
	}
	return n[len(n)-1]
}

// waitTicks waits until the counter has printed n more values than it
// had when called, and returns the last value.
func (g *guest) waitTicks(n int) int {
	g.t.Helper()
	from := len(g.ticks())
	deadline := time.Now().Add(commandTimeout)
	for time.Now().Before(deadline) {
		if got := g.ticks(); len(got) >= from+n {
			return got[len(got)-1]
		}
		time.Sleep(20 * time.Millisecond)
	}
	g.t.Fatalf("%s: counter stuck at %d\nconsole:\n%s", g.name, g.lastTick(), tail(g.consoleLog(), 2000))
	return 0
}

// requireCounterContinues checks that the counter on g's console started
// after a restore from a state in which it was between lo and hi (the last
// values printed before and after the snapshot was taken), and then
// counted on by one.
func (g *guest) requireCounterContinues(lo, hi int) {
	g.t.Helper()
	g.waitTicks(3)
	got := g.ticks()
	if first := got[0]; first < lo || first > hi+1 {
		g.t.Fatalf("%s: counter resumed at %d, want between %d and %d (the values around the snapshot): %v", g.name, first, lo, hi+1, got)
	}
	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]+1 {
			g.t.Fatalf("%s: counter jumped from %d to %d: %v", g.name, got[i-1], got[i], got)
		}
	}
}

// uptime returns the guest's /proc/uptime in seconds.
func (g *guest) uptime() float64 {
	g.t.Helper()
	out := g.run("cat /proc/uptime")
	f := strings.Fields(out)
	if len(f) == 0 {
		g.t.Fatalf("%s: /proc/uptime: %q", g.name, out)
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		g.t.Fatalf("%s: /proc/uptime: %q", g.name, out)
	}
	return v
}

// commit commits the machine and fails the test on error.
func (g *guest) commit(opts sbuml.CommitOptions) *sbuml.CommitResult {
	g.t.Helper()
	res, err := g.s.Commit(guestContext(g.t), g.name, opts)
	if err != nil {
		g.t.Fatal(err)
	}
	g.t.Logf("commit %s: %s, downtime %v, %.2f MiB new in %d objects, %v in all",
		g.name, res.ID.Short(), res.Downtime.Round(time.Millisecond), float64(res.Stats.NewBytes)/(1<<20), res.Stats.NewObjects, res.Duration.Round(time.Millisecond))
	return res
}

// halt halts the machine and fails the test on error.
func (g *guest) halt() {
	g.t.Helper()
	if err := g.s.Halt(guestContext(g.t), g.name); err != nil {
		g.t.Fatal(err)
	}
}

// state returns the machine's state as sbuml ps reports it.
func (g *guest) state() vmm.State {
	g.t.Helper()
	infos, err := g.s.Machines(guestContext(g.t))
	if err != nil {
		g.t.Fatal(err)
	}
	for _, in := range infos {
		if in.Name == g.name {
			return in.State
		}
	}
	return vmm.StateHalted
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// addedPart is what one file of a snapshot, or its trees and snapshot
// object, added to the scrapbook: objects that the parent snapshot does
// not reach, by kind, with their stored sizes.
type addedPart struct {
	name string
	// chunks holds the chunks' count, stored bytes and uncompressed
	// bytes; indexes and streams the index nodes and stream objects.
	chunks, chunkBytes, chunkData int64
	indexes, indexBytes           int64
	other, otherBytes             int64
}

func (p addedPart) total() int64 { return p.chunkBytes + p.indexBytes + p.otherBytes }

// addedBytes splits what snapshot id added to s over parent (Zero: none)
// by file of the snapshot: guest RAM pages against index nodes against
// device state, disks and metadata.
func addedBytes(t testing.TB, s *sbuml.Scrapbook, parent, id objects.ID) []addedPart {
	t.Helper()
	ctx := guestContext(t)
	sizes := map[objects.ID]int64{}
	if err := s.Objects.List(ctx, func(id objects.ID, size int64) error {
		sizes[id] = size
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	seen := objects.Seen{}
	if !parent.IsZero() {
		root := true
		err := objects.Walk(ctx, s.Objects, objects.Ref{ID: parent, Kind: objects.KindSnapshot}, func(r objects.Ref) (bool, error) {
			if r.Kind == objects.KindSnapshot && !root {
				return false, nil
			}
			root = false
			return seen.Add(r.ID), nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	meta := &addedPart{name: "(trees, snapshot)"}
	parts := []*addedPart{meta}
	count := func(p *addedPart, r objects.Ref) bool {
		if !seen.Add(r.ID) {
			return false
		}
		switch r.Kind {
		case objects.KindChunk:
			p.chunks++
			p.chunkBytes += sizes[r.ID]
			p.chunkData += int64(r.Length)
		case objects.KindIndex:
			p.indexes++
			p.indexBytes += sizes[r.ID]
		default:
			p.other++
			p.otherBytes += sizes[r.ID]
		}
		return true
	}
	count(meta, objects.Ref{ID: id, Kind: objects.KindSnapshot})
	sn, err := objects.LoadSnapshot(ctx, s.Objects, id)
	if err != nil {
		t.Fatal(err)
	}
	var walkTree func(prefix string, tree objects.ID)
	walkTree = func(prefix string, tree objects.ID) {
		count(meta, objects.Ref{ID: tree, Kind: objects.KindTree})
		tr, err := objects.LoadTree(ctx, s.Objects, tree)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range tr.Entries {
			name := path.Join(prefix, e.Name)
			if e.Kind == objects.EntryDir {
				walkTree(name, e.ID)
				continue
			}
			p := &addedPart{name: name}
			parts = append(parts, p)
			err := objects.Walk(ctx, s.Objects, objects.Ref{ID: e.ID, Kind: objects.KindStream, Length: e.Size}, func(r objects.Ref) (bool, error) {
				return count(p, r), nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	walkTree("", sn.Tree)
	out := make([]addedPart, len(parts))
	for i, p := range parts {
		out[i] = *p
	}
	return out
}

// formatAdded prints addedBytes' parts, one line each.
func formatAdded(parts []addedPart) string {
	var b strings.Builder
	var total int64
	for _, p := range parts {
		total += p.total()
		fmt.Fprintf(&b, "  %-18s %8.1f KiB: %5d chunks %8.1f KiB stored (%8.1f KiB data), %4d index nodes %6.1f KiB, %d other %5.1f KiB\n",
			p.name, float64(p.total())/1024, p.chunks, float64(p.chunkBytes)/1024, float64(p.chunkData)/1024,
			p.indexes, float64(p.indexBytes)/1024, p.other, float64(p.otherBytes)/1024)
	}
	fmt.Fprintf(&b, "  %-18s %8.1f KiB", "total", float64(total)/1024)
	return b.String()
}

// cliResult is the outcome of one run of the sbuml command.
type cliResult struct {
	stdout, stderr string
	err            error // nil for exit status 0
}

// sbumlCLI runs the sbuml command built from ./cmd/sbuml on scrapbook s,
// with stdin from in (nil: empty), and returns its output.
func sbumlCLI(t testing.TB, s *sbuml.Scrapbook, in io.Reader, args ...string) cliResult {
	t.Helper()
	cmd := exec.CommandContext(guestContext(t), sbumlCommand(t), append([]string{"--scrapbook", s.Dir}, args...)...)
	cmd.Stdin = in
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return cliResult{stdout.String(), stderr.String(), err}
}

// mustCLI runs the sbuml command and fails the test unless it succeeds.
func mustCLI(t testing.TB, s *sbuml.Scrapbook, args ...string) string {
	t.Helper()
	r := sbumlCLI(t, s, nil, args...)
	if r.err != nil {
		t.Fatalf("sbuml %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.err, r.stdout, r.stderr)
	}
	return r.stdout
}

// requireCLIError runs the sbuml command and checks that it fails with a
// non-zero exit status and one line on stderr that contains each of want.
func requireCLIError(t testing.TB, s *sbuml.Scrapbook, args []string, want ...string) string {
	t.Helper()
	r := sbumlCLI(t, s, nil, args...)
	var exit *exec.ExitError
	if !errors.As(r.err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("sbuml %s: %v, want a non-zero exit status\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.err, r.stdout, r.stderr)
	}
	msg := strings.TrimSuffix(r.stderr, "\n")
	if msg == "" || strings.Contains(msg, "\n") {
		t.Errorf("sbuml %s: stderr is not one line: %q", strings.Join(args, " "), r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("sbuml %s: %q does not say %q", strings.Join(args, " "), msg, w)
		}
	}
	return msg
}
