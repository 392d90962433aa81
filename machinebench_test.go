package sbuml_test

import (
	"fmt"
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

// BenchmarkMachineSnapshots commits a 512 MiB guest with a 256 MiB disk
// after a scripted series of steps and checks the last snapshot out. Per
// step it reports the commit's downtime (target: under 100 ms), its total
// time (target: under 1.2 s) and the bytes it added to the scrapbook; and
// the checkout-to-running time of the last snapshot (target: under 1 s).
// Guests run under TCG.
//
//	go test -run '^$' -bench BenchmarkMachineSnapshots -benchtime 1x .
func BenchmarkMachineSnapshots(b *testing.B) {
	if testing.Short() {
		b.Skip("boots a guest; skipped with -short")
	}
	idle := func(g *guest) { time.Sleep(5 * time.Second) }
	steps := []snapshotStep{
		{"boot", nil},
		{"idle", idle},
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
		{"idle2", idle},
	}
	type sums struct{ downtime, total, added float64 }
	per := make([]sums, len(steps))
	var checkout, answer float64
	reserveGuests(b, 2)
	for i := 0; i < b.N; i++ {
		s := guestScrapbook(b, 0)
		name := fmt.Sprintf("bench%d", i)
		g := bootGuestWith(b, s, name, sbuml.BootOptions{Memory: 512 << 20, DiskSize: 256 << 20, Accel: guestAccel})
		for k, st := range steps {
			if st.do != nil {
				st.do(g)
			}
			res := g.commit(sbuml.CommitOptions{Message: st.name})
			p := &per[k]
			p.downtime += float64(res.Downtime) / float64(time.Millisecond)
			p.total += res.Duration.Seconds()
			p.added += float64(res.Stats.NewBytes) / (1 << 20)
			b.Logf("%-6s downtime %4.0f ms, commit %.2f s, %7.2f MiB added (%d objects), device state %d KiB\n%s",
				st.name, float64(res.Downtime)/float64(time.Millisecond), res.Duration.Seconds(),
				float64(res.Stats.NewBytes)/(1<<20), res.Stats.NewObjects, res.DeviceStateBytes>>10,
				formatAdded(addedBytes(b, s, res.Parent, res.ID)))
		}
		g.halt()
		start := time.Now()
		c, res := checkoutGuest(b, s, name, "restored", sbuml.CheckoutOptions{Continue: true})
		if out := c.run("echo back-$((2+3))"); out != "back-5" {
			b.Fatalf("restored guest answered %q", out)
		}
		checkout += float64(res.Duration) / float64(time.Millisecond)
		answer += float64(time.Since(start)) / float64(time.Millisecond)
		b.Logf("checkout to running %.0f ms, to the guest answering on its console %.0f ms",
			float64(res.Duration)/float64(time.Millisecond), float64(time.Since(start))/float64(time.Millisecond))
		c.halt()
	}
	n := float64(b.N)
	var summary strings.Builder
	for k, st := range steps {
		p := per[k]
		b.ReportMetric(p.downtime/n, st.name+"-downtime-ms")
		b.ReportMetric(p.total/n, st.name+"-commit-s")
		b.ReportMetric(p.added/n, st.name+"-added-MiB")
		fmt.Fprintf(&summary, "%-6s downtime %4.0f ms, commit %.2f s, added %7.2f MiB\n", st.name, p.downtime/n, p.total/n, p.added/n)
	}
	b.ReportMetric(checkout/n, "checkout-ms")
	b.ReportMetric(answer/n, "checkout-answer-ms")
	b.Logf("per step (mean of %d):\n%scheckout to running %.0f ms (guest answering: %.0f ms)", b.N, summary.String(), checkout/n, answer/n)
}
