package sbuml_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/sbuml/sbuml"
)

// BenchmarkCheckout commits a guest once and checks the snapshot out
// b.N times, one machine at a time, reporting checkout-to-running and
// checkout-to-answering (the guest's shell echoing a command): for a
// 512 MiB guest with 100 MiB written to its tmpfs, and a 4 GiB guest
// with 3 GiB written (fillBigTmpfs). The 4 GiB case takes minutes to set up;
// select it alone with -bench 'BenchmarkCheckout/4GiB'.
//
//	go test -run '^$' -bench 'BenchmarkCheckout/512MiB' -benchtime 5x .
func BenchmarkCheckout(b *testing.B) {
	if testing.Short() {
		b.Skip("boots a guest; skipped with -short")
	}
	fill100 := func(g *guest) {
		requireOutput(g, "dd if=/dev/urandom of=/tmp/fill bs=1M count=100 2>/dev/null; wc -c < /tmp/fill", "104857600")
	}
	cases := []struct {
		name   string
		memory int64
		fill   func(g *guest)
	}{
		{"512MiB", 512 << 20, fill100},
		{"4GiB", 4 << 30, fillBigTmpfs(3)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			s := guestScrapbook(b, 2)
			g := bootGuestWith(b, s, "orig", sbuml.BootOptions{Memory: c.memory, DiskSize: 256 << 20, Accel: guestAccel})
			c.fill(g)
			g.commit(sbuml.CommitOptions{Message: "filled"})
			g.halt()
			b.ResetTimer()
			var running, answer float64
			for i := 0; i < b.N; i++ {
				start := time.Now()
				r, res := checkoutGuest(b, s, "orig", fmt.Sprintf("copy%d", i), sbuml.CheckoutOptions{Continue: true})
				if out := r.run("echo back-$((2+3))"); out != "back-5" {
					b.Fatalf("restored guest answered %q", out)
				}
				ans := time.Since(start)
				b.Logf("checkout to running %.0f ms, to answering %.0f ms",
					float64(res.Duration)/float64(time.Millisecond), float64(ans)/float64(time.Millisecond))
				running += float64(res.Duration) / float64(time.Millisecond)
				answer += float64(ans) / float64(time.Millisecond)
				r.halt()
			}
			b.ReportMetric(running/float64(b.N), "checkout-ms")
			b.ReportMetric(answer/float64(b.N), "checkout-answer-ms")
		})
	}
}

// fillBigTmpfs writes n GiB to a tmpfs in the guest: 256 MiB of random data,
// copied n*4 times (the copies' pages repeat, so the scrapbook stores
// 256 MiB, but every page is touched and must be put back on checkout).
func fillBigTmpfs(n int) func(g *guest) {
	return func(g *guest) {
		g.run(fmt.Sprintf("mkdir -p /big; mount -t tmpfs -o size=%dm tmpfs /big", n<<10+64))
		requireOutput(g, "dd if=/dev/urandom of=/big/seed bs=1M count=256 2>/dev/null; wc -c < /big/seed", "268435456")
		for i := 1; i < n*4; i++ {
			g.run(fmt.Sprintf("cat /big/seed > /big/copy%d", i))
		}
		requireOutput(g, "du -sm /big | cut -f1", fmt.Sprint(n<<10))
	}
}
