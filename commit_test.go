package sbuml_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/stream"
	"github.com/sbuml/sbuml/vmm"
)

// timeline is what a test knew about a running guest when it committed it.
type timeline struct {
	id objects.ID
	// lo and hi are the last counter values printed before the commit
	// started and after it returned: the snapshot's value is in between.
	lo, hi int
	// uptime is the guest's uptime read just before the commit, at
	// wall-clock time at.
	uptime float64
	at     time.Time
	// bootID is the guest kernel's random boot ID, new at every boot.
	bootID string
}

// commitTimeline commits g, which runs a counter, and records the counter
// values and uptime around the commit.
func commitTimeline(g *guest, opts sbuml.CommitOptions) timeline {
	g.t.Helper()
	var tl timeline
	tl.bootID = g.bootID()
	tl.uptime, tl.at = g.uptime(), time.Now()
	tl.lo = g.lastTick()
	tl.id = g.commit(opts).ID
	tl.hi = g.lastTick()
	return tl
}

// requireResumed checks that g, just checked out from tl's snapshot and
// continued, carries on from it: the counter goes on from its value at
// commit time and the uptime keeps growing from the snapshot's (no
// reboot).
func requireResumed(g *guest, tl timeline) {
	g.t.Helper()
	g.requireCounterContinues(tl.lo, tl.hi)
	if id := g.bootID(); id != tl.bootID {
		g.t.Fatalf("%s: boot ID %s after checkout, %s at commit time: the guest rebooted", g.name, id, tl.bootID)
	}
	up := g.uptime()
	// The snapshot's uptime is at least the one read before the commit;
	// since then, the guest ran at most the wall-clock time that passed.
	if max := tl.uptime + time.Since(tl.at).Seconds() + 1; up < tl.uptime || up > max {
		g.t.Fatalf("%s: uptime %.2f s after checkout; the snapshot was taken at %.2f s and at most %.2f s can have passed for the guest", g.name, up, tl.uptime, max)
	}
	g.t.Logf("%s: counter %d..%d around the commit, %v after checkout; uptime %.2f s before the commit, %.2f s after checkout",
		g.name, tl.lo, tl.hi, g.ticks()[:3], tl.uptime, up)
}

// bootID returns the guest kernel's boot ID.
func (g *guest) bootID() string {
	g.t.Helper()
	id := strings.TrimSpace(g.run("cat /proc/sys/kernel/random/boot_id"))
	if len(id) != 36 {
		g.t.Fatalf("%s: boot_id %q", g.name, id)
	}
	return id
}

// requireFiles checks that each path in the guest holds its content, or is
// absent where the content is "".
func requireFiles(g *guest, want map[string]string) {
	g.t.Helper()
	for path, content := range want {
		got := g.run("cat " + path + " 2>/dev/null || echo ABSENT")
		if content == "" {
			content = "ABSENT"
		}
		if strings.TrimSpace(got) != content {
			g.t.Errorf("%s: %s holds %q, want %q", g.name, path, got, content)
		}
	}
}

// TestCommitCheckoutCarriesOn commits a guest running a counter three
// times, with files on its disk (/mnt) and tmpfs (/tmp) changing in
// between, halts it, and checks out the last snapshot and the first
// (m1~2): each carries on from the instant of its commit, without
// rebooting, with exactly the files it had then.
func TestCommitCheckoutCarriesOn(t *testing.T) {
	t.Parallel()
	s := guestScrapbook(t, 2)
	g := bootGuest(t, s, "m1", 0)
	g.startCounter()

	g.run("echo disk-1 > /mnt/one; echo tmp-1 > /tmp/one")
	first := commitTimeline(g, sbuml.CommitOptions{Message: "one"})
	g.run("echo disk-2 > /mnt/two; echo tmp-2 > /tmp/two; echo disk-1b > /mnt/one")
	second := commitTimeline(g, sbuml.CommitOptions{Message: "two"})
	g.run("echo disk-3 > /mnt/three; echo tmp-3 > /tmp/three; rm /mnt/two /tmp/one")
	third := commitTimeline(g, sbuml.CommitOptions{Message: "three"})
	if second.id == first.id || third.id == second.id {
		t.Fatal("commits of a changed guest gave the same snapshot")
	}
	// The second and third commits hashed only the pages that changed:
	// the third's RAM is the stream hashing all of its pages gives.
	requireRAMCopyStored(g, third.id)
	g.halt()

	// The machine comes back under its own name, from its branch's tip.
	m1, res := checkoutGuest(t, s, "m1", "m1", sbuml.CheckoutOptions{Continue: true})
	if res.Snapshot != third.id || !res.Running {
		t.Fatalf("checkout m1: %+v, want snapshot %s running", res, third.id.Short())
	}
	requireResumed(m1, third)
	requireFiles(m1, map[string]string{
		"/mnt/one": "disk-1b", "/mnt/two": "", "/mnt/three": "disk-3",
		"/tmp/one": "", "/tmp/two": "tmp-2", "/tmp/three": "tmp-3",
	})

	// The grandparent, without the two later commits' changes.
	old, res := checkoutGuest(t, s, "m1~2", "old", sbuml.CheckoutOptions{Continue: true})
	if res.Snapshot != first.id {
		t.Fatalf("checkout m1~2 gave %s, want the first commit %s", res.Snapshot.Short(), first.id.Short())
	}
	requireResumed(old, first)
	requireFiles(old, map[string]string{
		"/mnt/one": "disk-1", "/mnt/two": "", "/mnt/three": "",
		"/tmp/one": "tmp-1", "/tmp/two": "", "/tmp/three": "",
	})
}

// requireRAMCopyStored checks that the copy of RAM the last commit of g
// left beside its RAM file (see lastram.go), stored from scratch with
// SaveStreamFrom on the RAM of the snapshot's parent, is the RAM stream
// of snapshot id: the commit, which hashed only the pages that changed,
// stored the same index nodes, patch and chunks.
func requireRAMCopyStored(g *guest, id objects.ID) {
	g.t.Helper()
	m := g.open()
	path := filepath.Join(m.RAMFile()+vmm.RAMSidecarSuffix, "ram")
	m.Close()
	requireStoredAs(g, id, path, "ram", sbuml.RAMParams)
}

// requireStoredAs checks that file, stored from scratch with
// SaveStreamFrom on the entry at entryPath of the snapshot's parent, is
// the stream at entryPath of snapshot id.
func requireStoredAs(g *guest, id objects.ID, file, entryPath string, p stream.Params) {
	g.t.Helper()
	ctx := guestContext(g.t)
	f, err := os.Open(file)
	if err != nil {
		g.t.Fatal(err)
	}
	defer f.Close()
	sn, err := objects.LoadSnapshot(ctx, g.s.Objects, id)
	if err != nil {
		g.t.Fatal(err)
	}
	base := objects.Zero
	if len(sn.Parents) > 0 {
		base = snapshotEntry(g, sn.Parents[0], entryPath)
	}
	saver := stream.NewSaver(g.s.Objects, 0)
	defer saver.Close()
	want, _, err := saver.SaveStreamFrom(ctx, f, p, base)
	if err != nil {
		g.t.Fatal(err)
	}
	if got := snapshotEntry(g, id, entryPath); got != want {
		g.t.Fatalf("%s: snapshot %s's %s %s is not the stream of %s (%s)", g.name, id.Short(), entryPath, got.Short(), file, want.Short())
	}
}

// snapshotEntry returns the ID of the entry at path (names joined by
// "/") in the tree of snapshot id.
func snapshotEntry(g *guest, id objects.ID, path string) objects.ID {
	g.t.Helper()
	ctx := guestContext(g.t)
	sn, err := objects.LoadSnapshot(ctx, g.s.Objects, id)
	if err != nil {
		g.t.Fatal(err)
	}
	at := sn.Tree
	for _, name := range strings.Split(path, "/") {
		tree, err := objects.LoadTree(ctx, g.s.Objects, at)
		if err != nil {
			g.t.Fatal(err)
		}
		e := tree.Find(name)
		if e == nil {
			g.t.Fatalf("snapshot %s has no %s", id.Short(), path)
		}
		at = e.ID
	}
	return at
}

// TestCommitIdleAddsLittle commits a 512 MiB guest, lets it idle 5 s and
// commits it again: the second snapshot adds under 1 MiB to the
// scrapbook, by the commit's own count and by Du's. Its RAM is the first
// snapshot's RAM tree with a patch node. Then the guest writes 8 MiB to
// its disk: the next commit adds them once, though they are on the disk
// and in the page cache. Fsck passes, and the last snapshot checks out
// into a guest that answers.
func TestCommitIdleAddsLittle(t *testing.T) {
	t.Parallel()
	s := guestScrapbook(t, 1)
	g := bootGuest(t, s, "idle", 512<<20)
	first := g.commit(sbuml.CommitOptions{Message: "first"})
	time.Sleep(5 * time.Second)
	res := g.commit(sbuml.CommitOptions{Message: "after 5 s idle"})
	checkRAMPatched(t, s, first.ID, res.ID)
	du, err := s.Du(guestContext(t))
	if err != nil {
		t.Fatal(err)
	}
	var added int64 = -1
	for _, sn := range du.Snapshots {
		if sn.ID == res.ID {
			added = sn.AddedBytes
		}
	}
	const limit = 1 << 20
	if res.Stats.NewBytes >= limit || added < 0 || added >= limit {
		t.Errorf("second commit of an idle guest: %d bytes new (Stats.NewBytes), %d bytes added (Du); want both under %d\n%s",
			res.Stats.NewBytes, added, limit, formatAdded(addedBytes(t, s, res.Parent, res.ID)))
	}
	if res.Stats.DeltaChunks == 0 {
		t.Errorf("second commit of an idle guest stored no page as a delta on its previous version (%d tried)", res.Stats.DeltaTries)
	}
	t.Logf("second commit after 5 s idle: %d bytes new (%d pages as deltas), Du: %d bytes added\n%s", res.Stats.NewBytes, res.Stats.DeltaChunks, added, formatAdded(addedBytes(t, s, res.Parent, res.ID)))
	requireOutput(g, "dd if=/dev/urandom of=/mnt/data bs=1M count=8 2>/dev/null; sync; wc -c < /mnt/data", "8388608")
	res = g.commit(sbuml.CommitOptions{Message: "8 MiB written"})
	if res.Stats.NewBytes > 10<<20 {
		t.Errorf("commit after writing 8 MiB to the disk added %d bytes, want them once (at most 10 MiB)\n%s",
			res.Stats.NewBytes, formatAdded(addedBytes(t, s, res.Parent, res.ID)))
	}
	g.halt()
	c, _ := checkoutGuest(t, s, res.ID.String(), "back", sbuml.CheckoutOptions{Continue: true})
	if out := c.run("echo back-$((2+3))"); out != "back-5" {
		t.Errorf("the checked-out guest answered %q", out)
	}
	requireOutput(c, "wc -c < /mnt/data", "8388608")
	c.halt()
	if r, err := s.Fsck(guestContext(t)); err != nil || !r.OK() {
		t.Errorf("fsck: %v, %+v", err, r)
	}
}

// checkRAMPatched checks that the RAM of snapshot second is stored as the
// tree of the RAM of snapshot first with a patch node.
func checkRAMPatched(t *testing.T, s *sbuml.Scrapbook, first, second objects.ID) {
	t.Helper()
	ram := func(id objects.ID) *objects.Stream {
		ids := streamObjects(t, s, id, "ram", objects.KindStream)
		st, err := objects.LoadStream(guestContext(t), s.Objects, ids[0])
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	a, b := ram(first), ram(second)
	if b.Patch.IsZero() || b.Root != a.Root {
		t.Errorf("second RAM stream %v, want the first's root %s with a patch", b, a.Root.Short())
	}
}

// TestCommitRefusesStoppedMachine commits a machine whose QEMU was killed,
// then one halted with its files left, then one halted by sbuml: each is
// refused with one line saying why, and the branch stays where it was.
func TestCommitRefusesStoppedMachine(t *testing.T) {
	t.Parallel()
	s := guestScrapbook(t, 1)
	g := bootGuest(t, s, "m1", 0)
	first := g.commit(sbuml.CommitOptions{})

	refused := func(why string, want ...string) {
		t.Helper()
		res, err := s.Commit(guestContext(t), "m1", sbuml.CommitOptions{})
		if err == nil {
			t.Fatalf("commit of a %s machine succeeded: %s", why, res.ID)
		}
		requireOneLine(t, err, append([]string{"m1"}, want...)...)
		if tip, err := s.Resolve(guestContext(t), "m1"); err != nil || tip != first.ID {
			t.Fatalf("after the refused commit of a %s machine branch m1 is at %v (%v), want %s", why, tip, err, first.ID.Short())
		}
		t.Logf("%s: %v", why, err)
	}

	// Crashed: QEMU killed behind sbuml's back.
	pid := machinePID(t, s, "m1")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitState(t, g, vmm.StateCrashed)
	refused("crashed", "crashed", "not running")

	// Halted, with its directory and files still there.
	m := g.open()
	if err := m.Halt(guestContext(t)); err != nil {
		t.Fatal(err)
	}
	m.Close()
	refused("halted", "halted", "not running")

	// Halted by sbuml: the machine is gone.
	g.halt()
	refused("removed", "no machine")
}

// machinePID returns the QEMU pid of a running machine.
func machinePID(t testing.TB, s *sbuml.Scrapbook, name string) int {
	t.Helper()
	infos, err := s.Machines(guestContext(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		if in.Name == name && in.PID != 0 {
			return in.PID
		}
	}
	t.Fatalf("machine %s has no QEMU: %+v", name, infos)
	return 0
}

// waitState waits until g's state is want.
func waitState(t testing.TB, g *guest, want vmm.State) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for g.state() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s is %s, want %s", g.name, g.state(), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// requireOneLine checks that err is one line that contains each of want.
func requireOneLine(t testing.TB, err error, want ...string) {
	t.Helper()
	msg := err.Error()
	if strings.Contains(strings.TrimSpace(msg), "\n") {
		t.Errorf("error is not one line: %q", msg)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q does not say %q", msg, w)
		}
	}
}

// TestCommitCLI drives commit, log and checkout through the sbuml
// command: commit -f leaves the machine frozen, -f -c continues it, log
// --json lists the snapshots with their machine label, and checkout
// prints the checkout-to-running time, for a snapshot and for a directory
// made by export.
//
// It is long because one booted guest serves all these checks: each guest
// costs seconds to boot under TCG.
func TestCommitCLI(t *testing.T) {
	t.Parallel()
	s := guestScrapbook(t, 2)
	g := bootGuest(t, s, "m1", 0)
	g.startCounter()

	commitLine := regexp.MustCompile(`^([0-9a-f]{64}) (\w+)\n  (downtime \d+ ms|left frozen|continued), .* logical, .* added \(\d+ new objects\), [0-9.]+s in all\n$`)
	commitMachine := func(name string, args ...string) string {
		t.Helper()
		out := mustCLI(t, s, append([]string{"commit", name}, args...)...)
		m := commitLine.FindStringSubmatch(out)
		if m == nil || m[2] != name {
			t.Fatalf("sbuml commit %s %s printed %q", name, strings.Join(args, " "), out)
		}
		// -f alone leaves the machine frozen: no downtime to speak of.
		frozen := slices.Contains(args, "-f") && !slices.Contains(args, "-c")
		if frozen != (m[3] == "left frozen") {
			t.Errorf("sbuml commit %s %s printed %q", name, strings.Join(args, " "), m[3])
		}
		return m[1]
	}
	commit := func(args ...string) string { return commitMachine("m1", args...) }
	requireState := func(name string, want vmm.State) {
		t.Helper()
		if st := psJSON(t, s)[name].State; st != want {
			t.Fatalf("%s is %s, want %s", name, st, want)
		}
	}
	requireCounting := func(g *guest, want bool) {
		t.Helper()
		time.Sleep(3 * counterPeriod)
		before := g.lastTick()
		time.Sleep(10 * counterPeriod)
		if counting := g.lastTick() != before; counting != want {
			t.Fatalf("%s: counter counting: %v, want %v (at %d)", g.name, counting, want, before)
		}
	}

	ids := []string{commit("-f", "-m", "frozen")}
	requireState("m1", vmm.StateFrozen)
	requireCounting(g, false)
	mustCLI(t, s, "continue", "m1")
	requireCounting(g, true)
	ids = append(ids, commit("-f", "-c", "-m", "continued"))
	requireState("m1", vmm.StateRunning)
	requireCounting(g, true)
	lo := g.lastTick()
	ids = append(ids, commit("-m", "plain"))
	hi := g.lastTick()
	requireState("m1", vmm.StateRunning)

	var log []struct {
		ID      string            `json:"id"`
		Message string            `json:"message"`
		Labels  map[string]string `json:"labels"`
	}
	if err := json.Unmarshal([]byte(mustCLI(t, s, "log", "--json", "m1")), &log); err != nil {
		t.Fatal(err)
	}
	if len(log) != 3 {
		t.Fatalf("sbuml log --json m1 lists %d snapshots, want 3: %+v", len(log), log)
	}
	for i, e := range log {
		want := ids[len(ids)-1-i]
		if e.ID != want || e.Labels["machine"] != "m1" || e.Labels["kind"] != "machine" {
			t.Errorf("log entry %d: %+v, want snapshot %s labelled machine m1", i, e, want)
		}
	}

	checkoutLine := regexp.MustCompile(`^(\w+) (running|frozen \(sbuml continue \w+ starts it\)) from (\S+|exported snapshot), checkout(?: to running)? (\d+) ms\n$`)
	checkout := func(rev, name string, args ...string) []string {
		t.Helper()
		out := mustCLI(t, s, append([]string{"checkout", rev, name, "--accel", guestAccel}, args...)...)
		m := checkoutLine.FindStringSubmatch(out)
		if m == nil || m[1] != name {
			t.Fatalf("sbuml checkout %s %s printed %q", rev, name, out)
		}
		t.Logf("sbuml checkout %s %s: %s", rev, name, strings.TrimSpace(out))
		return m
	}
	m := checkout("m1", "m2", "-c")
	if m[2] != "running" || m[3] != ids[2][:12] {
		t.Errorf("checkout m1 m2 -c: %q", m[0])
	}
	requireState("m2", vmm.StateRunning)
	(&guest{t: t, s: s, name: "m2"}).requireCounterContinues(lo, hi)
	mustCLI(t, s, "halt", "m2")

	// Without -c the machine waits, frozen.
	m = checkout("m1~2", "m3")
	if !strings.HasPrefix(m[2], "frozen") || m[3] != ids[0][:12] {
		t.Errorf("checkout m1~2 m3: %q", m[0])
	}
	requireState("m3", vmm.StateFrozen)
	// A machine waiting, frozen, after checkout can be committed.
	commitMachine("m3", "-f")
	requireState("m3", vmm.StateFrozen)
	mustCLI(t, s, "continue", "m3")
	requireState("m3", vmm.StateRunning)
	mustCLI(t, s, "halt", "m3")

	// From a directory made by export.
	dir := filepath.Join(t.TempDir(), "exported")
	mustCLI(t, s, "export", "m1", dir)
	m = checkout(dir, "m4", "-c")
	if m[2] != "running" || m[3] != "exported snapshot" {
		t.Errorf("checkout DIR m4 -c: %q", m[0])
	}
	(&guest{t: t, s: s, name: "m4"}).requireCounterContinues(lo, hi)
}

// TestCommitFrozenTwice commits a machine with Freeze, which leaves it
// frozen, and commits it again: a frozen machine can be committed like a
// running one, and Continue then lets it run.
func TestCommitFrozenTwice(t *testing.T) {
	t.Parallel()
	s := guestScrapbook(t, 1)
	g := bootGuest(t, s, "m1", 0)
	first := g.commit(sbuml.CommitOptions{Freeze: true})
	if st := g.state(); st != vmm.StateFrozen {
		t.Fatalf("after commit with Freeze m1 is %s", st)
	}
	res, err := s.Commit(guestContext(t), "m1", sbuml.CommitOptions{Freeze: true, Continue: true})
	if err != nil {
		t.Fatalf("second commit of the frozen machine: %v (m1 is now %s)", err, g.state())
	}
	if res.Parent != first.ID {
		t.Errorf("second commit's parent is %s, want %s", res.Parent.Short(), first.ID.Short())
	}
	if st := g.state(); st != vmm.StateRunning {
		t.Fatalf("after commit with Freeze and Continue m1 is %s", st)
	}
	if out := g.run("echo after-$((1+2))"); out != "after-3" {
		t.Errorf("m1 after the second commit: %q", out)
	}
}

// TestCommitAfterInterruptedFrozenCommit interrupts a commit with Freeze
// after QEMU saved the device state but before the snapshot was recorded,
// which leaves the machine frozen with the device state of no snapshot.
// The next commit must not pair the last snapshot's (older) device state
// with the current RAM: it is refused, or it makes a snapshot that
// restores to a working guest in the current state.
func TestCommitAfterInterruptedFrozenCommit(t *testing.T) {
	t.Parallel()
	s := guestScrapbook(t, 1)
	g := bootGuest(t, s, "m1", 0)
	g.startCounter()
	g.commit(sbuml.CommitOptions{})
	// Enough new RAM that storing it outlasts the first progress report,
	// and disk I/O, which moves the disk's virtio ring in RAM away from
	// the device state of the first snapshot.
	g.run("dd if=/dev/urandom of=/tmp/fill bs=1M count=100 2>/dev/null; echo later > /tmp/marker; echo later > /mnt/marker; sync")
	lo := g.lastTick()

	ctx, cancel := context.WithCancel(guestContext(t))
	_, err := s.Commit(ctx, "m1", sbuml.CommitOptions{Freeze: true, OnProgress: func(sbuml.StoreProgress) { cancel() }})
	cancel()
	if err == nil {
		t.Skip("the commit stored everything before its first progress report; nothing to interrupt")
	}
	t.Logf("interrupted commit: %v", err)
	if st := g.state(); st != vmm.StateFrozen {
		t.Fatalf("after an interrupted commit with Freeze m1 is %s, want frozen", st)
	}
	res, err := s.Commit(guestContext(t), "m1", sbuml.CommitOptions{Continue: true})
	if err != nil {
		t.Logf("commit after the interrupted one refused: %v", err)
		requireOneLine(t, err, "m1")
		return
	}
	g.halt()
	c, _ := checkoutGuest(t, s, res.ID.String(), "c", sbuml.CheckoutOptions{Continue: true})
	if out, err := c.tryRun("cat /tmp/marker /mnt/marker"); err != nil || out != "later\nlater" {
		t.Fatalf("snapshot %s, committed after the interrupted commit, restores to a guest that does not work: %q, %v\nconsole:\n%s",
			res.ID.Short(), out, err, tail(c.consoleLog(), 1000))
	}
	c.requireCounterContinues(lo, lo+100)
}
