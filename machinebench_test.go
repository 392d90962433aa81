package sbuml_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sbuml/sbuml"
)

// snapshotStep is one step of BenchmarkMachineSnapshots: something done
// in the guest, then a commit.
type snapshotStep struct {
	name string
	// do runs in the guest before the commit; nil: nothing.
	do func(g *guest)
}

// requireOutput runs cmd in g and checks its output.
func requireOutput(g *guest, cmd, want string) {
	g.t.Helper()
	if out := strings.TrimSpace(g.run(cmd)); out != want {
		g.t.Fatalf("%s: %q printed %q, want %q", g.name, cmd, out, want)
	}
}

// snapshotSteps are the steps of every series.
var snapshotSteps = []snapshotStep{
	{"boot", nil},
	{"idle", func(g *guest) { time.Sleep(5 * time.Second) }},
	// 20 MiB of new data on the disk; also in the guest's page cache.
	{"write", func(g *guest) {
		requireOutput(g, "dd if=/dev/urandom of=/mnt/data bs=1M count=20 2>/dev/null; sync; wc -c < /mnt/data", "20971520")
	}},
	{"delete", func(g *guest) {
		requireOutput(g, "rm /mnt/data; sync; ls /mnt/data 2>&1", "ls: /mnt/data: No such file or directory")
	}},
	// 100 MiB of random data in guest RAM (tmpfs).
	{"fill", func(g *guest) {
		requireOutput(g, "dd if=/dev/urandom of=/tmp/fill bs=1M count=100 2>/dev/null; wc -c < /tmp/fill", "104857600")
	}},
	{"idle2", func(g *guest) { time.Sleep(5 * time.Second) }},
}

// snapshotGuest is a guest size BenchmarkMachineSnapshots measures, and
// what is written to its memory before the series.
type snapshotGuest struct {
	name   string
	memory int64
	before func(g *guest)
}

// fillGiB writes n GiB to a tmpfs in the guest: a 256 MiB file made of 8
// copies of 32 MiB of random data, copied n*4 times (pages repeat, so
// the scrapbook stores 32 MiB, but every page is touched and compared).
// Random data comes 4 MiB at a time: /dev/urandom is slow under TCG, and
// every command must end within commandTimeout.
func fillGiB(n int) func(g *guest) {
	return func(g *guest) {
		g.run(fmt.Sprintf("mkdir -p /big; mount -t tmpfs -o size=%dm tmpfs /big", n<<10+64))
		for i := range 8 {
			g.run(fmt.Sprintf("dd if=/dev/urandom of=/big/r%d bs=1M count=4 2>/dev/null", i))
		}
		g.run("for i in 1 2 3 4 5 6 7 8; do cat /big/r?; done > /big/seed; rm /big/r?")
		requireOutput(g, "wc -c < /big/seed", "268435456")
		for i := 1; i < n*4; i++ {
			g.run(fmt.Sprintf("cat /big/seed > /big/copy%d", i))
		}
		requireOutput(g, "du -sm /big | cut -f1", fmt.Sprint(n<<10))
	}
}

// BenchmarkMachineSnapshots commits a 512 MiB guest, and a 4 GiB guest
// with 3 GiB of its memory written before the series, after a scripted
// series of steps, and checks the last snapshot out. Per step it reports
// the commit's downtime, its total time, the guest's progress during the
// commit (ticks of a counter printing every 100 ms, against the ticks
// the commit's duration allows) and the bytes it added; then the
// checkout-to-running time of the last snapshot and the time until the
// guest answers on its console, first with QEMU started by the checkout
// (cold), then spareClaims times with a spare QEMU started before the
// timer (see StartSpares; the spares' start time is reported apart), of
// which it reports the median. Each series
// ends with fsck. Guests run under TCG; their disk is 256 MiB. The 4 GiB
// series is slow (minutes): select a size with a sub-benchmark pattern.
//
//	go test -run '^$' -bench BenchmarkMachineSnapshots -benchtime 1x -v .
//	go test -run '^$' -bench 'BenchmarkMachineSnapshots/512MiB' -benchtime 1x -v .
func BenchmarkMachineSnapshots(b *testing.B) {
	if testing.Short() {
		b.Skip("boots a guest; skipped with -short")
	}
	for _, sg := range []snapshotGuest{
		{"512MiB", 512 << 20, nil},
		{"4GiB", 4 << 30, fillGiB(3)},
	} {
		b.Run(sg.name, func(b *testing.B) { benchSnapshots(b, sg) })
	}
}

// spareSettle is how long BenchmarkMachineSnapshots lets a spare wait
// before the checkout that claims it.
const spareSettle = time.Second

// stepSums adds up a step's figures over the series.
type stepSums struct{ downtime, total, progress, added float64 }

func benchSnapshots(b *testing.B, sg snapshotGuest) {
	per := make([]stepSums, len(snapshotSteps))
	var checkout, answer, spareStart, spareCheckout, spareAnswer float64
	reserveGuests(b, 2)
	for i := 0; i < b.N; i++ {
		s := guestScrapbook(b, 0)
		name := fmt.Sprintf("bench%d", i)
		g := bootGuestWith(b, s, name, sbuml.BootOptions{Memory: sg.memory, DiskSize: 256 << 20, Accel: guestAccel})
		if sg.before != nil {
			sg.before(g)
		}
		g.startCounter()
		for k, st := range snapshotSteps {
			if st.do != nil {
				st.do(g)
			}
			benchCommit(b, s, g, st.name, &per[k])
		}
		g.halt()
		co, an := benchCheckout(b, s, name, "restored", false)
		checkout += co
		answer += an
		st, co, an := benchSpareCheckouts(b, s, name)
		spareStart += st
		spareCheckout += co
		spareAnswer += an
		requireFsck(b, s)
	}
	n := float64(b.N)
	var summary strings.Builder
	for k, st := range snapshotSteps {
		p := per[k]
		b.ReportMetric(p.downtime/n, st.name+"-downtime-ms")
		b.ReportMetric(p.total/n, st.name+"-commit-s")
		b.ReportMetric(p.progress/n, st.name+"-progress")
		b.ReportMetric(p.added/n, st.name+"-added-MiB")
		fmt.Fprintf(&summary, "%-6s downtime %4.0f ms, commit %.2f s, progress %.2f, added %7.2f MiB\n", st.name, p.downtime/n, p.total/n, p.progress/n, p.added/n)
	}
	b.ReportMetric(checkout/n, "checkout-ms")
	b.ReportMetric(answer/n, "checkout-answer-ms")
	b.ReportMetric(spareStart/n, "spare-start-ms")
	b.ReportMetric(spareCheckout/n, "checkout-spare-ms")
	b.ReportMetric(spareAnswer/n, "checkout-spare-answer-ms")
	b.Logf("%s, per step (mean of %d):\n%scheckout to running %.0f ms (guest answering: %.0f ms); with a spare ready (started in %.0f ms), median of %d: %.0f ms (%.0f ms)",
		sg.name, b.N, summary.String(), checkout/n, answer/n, spareStart/n, spareClaims, spareCheckout/n, spareAnswer/n)
}

// spareClaims is how many checkouts from a spare each series times.
const spareClaims = 3

// benchSpareCheckouts checks machine name's last snapshot out
// spareClaims times, each from a spare started for it beforehand, and
// returns the medians of the spares' starts, of the checkouts to running
// and to the guest answering, in milliseconds.
func benchSpareCheckouts(b *testing.B, s *sbuml.Scrapbook, name string) (start, running, answering float64) {
	var starts, runs, answers []float64
	for k := range spareClaims {
		t0 := time.Now()
		if _, err := s.StartSpares(guestContext(b), name, 1, sbuml.SpareOptions{Accel: guestAccel}); err != nil {
			b.Fatal(err)
		}
		starts = append(starts, millis(time.Since(t0)))
		// Ahead of need: the test process, which just restored and
		// halted a guest, settles first (its garbage collection slowed
		// the claim by 30-100 ms when the checkout came at once).
		time.Sleep(spareSettle)
		co, an := benchCheckout(b, s, name, fmt.Sprintf("from-spare%d", k), true)
		runs = append(runs, co)
		answers = append(answers, an)
	}
	return median(starts), median(runs), median(answers)
}

// median returns the median of v (the mean of the middle two if even).
func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	if n := len(v); n%2 == 0 {
		return (v[n/2-1] + v[n/2]) / 2
	}
	return v[len(v)/2]
}

// benchCommit commits g and adds the commit's figures to p.
func benchCommit(b *testing.B, s *sbuml.Scrapbook, g *guest, step string, p *stepSums) {
	before := g.lastTick()
	res := g.commit(sbuml.CommitOptions{Message: step})
	// The counter prints ticks the console log may show a moment later.
	time.Sleep(2 * counterPeriod)
	ticks := float64(g.lastTick() - before - 2)
	progress := ticks / (res.Duration.Seconds() / counterPeriod.Seconds())
	ms := float64(res.Downtime) / float64(time.Millisecond)
	p.downtime += ms
	p.total += res.Duration.Seconds()
	p.progress += progress
	p.added += float64(res.Stats.NewBytes) / (1 << 20)
	f := res.Frozen
	b.Logf("%-6s downtime %4.0f ms, commit %.2f s, progress %.2f, %7.2f MiB added (%d objects, %d deltas of %d tried), device state %d KiB\n"+
		"       frozen: device state %.0f ms, RAM compared %.0f ms, disks %.0f ms, continue %.0f ms; %d RAM pages hashed\n%s",
		step, ms, res.Duration.Seconds(), progress, float64(res.Stats.NewBytes)/(1<<20), res.Stats.NewObjects,
		res.Stats.DeltaChunks, res.Stats.DeltaTries, res.DeviceStateBytes>>10,
		millis(f.DeviceState), millis(f.RAM), millis(f.Disks), millis(f.Continue), res.HashedRAMPages,
		formatAdded(addedBytes(b, s, res.Parent, res.ID)))
}

func millis(d time.Duration) float64 {
	return float64(d) / float64(time.Millisecond)
}

// benchCheckout checks machine name's last snapshot out as machine as,
// claiming a spare if spare (one must be waiting), and returns the
// milliseconds to running and to the guest answering on its console.
func benchCheckout(b *testing.B, s *sbuml.Scrapbook, name, as string, spare bool) (float64, float64) {
	start := time.Now()
	c, res := checkoutGuest(b, s, name, as, sbuml.CheckoutOptions{Continue: true})
	if out := c.run("echo back-$((2+3))"); out != "back-5" {
		b.Fatalf("restored guest answered %q", out)
	}
	if res.Spare != spare {
		b.Fatalf("checkout claimed a spare: %v, want %v", res.Spare, spare)
	}
	running := float64(res.Duration) / float64(time.Millisecond)
	answering := float64(time.Since(start)) / float64(time.Millisecond)
	b.Logf("checkout (spare %v) to running %.0f ms, to the guest answering on its console %.0f ms", spare, running, answering)
	c.halt()
	return running, answering
}

// requireFsck checks every object and ref of s.
func requireFsck(b *testing.B, s *sbuml.Scrapbook) {
	r, err := s.Fsck(guestContext(b))
	if err != nil {
		b.Fatal(err)
	}
	if len(r.Problems) > 0 {
		b.Fatalf("fsck after the series: %d problems, first %+v", len(r.Problems), r.Problems[0])
	}
	b.Logf("fsck: %d objects, %d bytes, no problem", r.Objects, r.Bytes)
}
