package sbuml_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/agent"
)

// BenchmarkCkpt compares, on one 512 MiB guest, the round trip of a
// ckpt() called in the guest (from the call to its return in the
// original: sbuml-guest ckpt run through the agent, timed by the host)
// with a plain commit of the same machine (Scrapbook.Commit, timed by the
// caller), alternating them. Target: the ckpt() round trip under 1.5
// times the commit. Guests run under TCG.
//
//	go test -run '^$' -bench BenchmarkCkpt -benchtime 5x .
func BenchmarkCkpt(b *testing.B) {
	if testing.Short() {
		b.Skip("boots a guest; skipped with -short")
	}
	s := guestScrapbook(b, 1)
	bootGuestWith(b, s, "m1", sbuml.BootOptions{Memory: 512 << 20, Accel: guestAccel})
	ctx := context.Background()
	g, err := s.Guest(ctx, "m1")
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	// Let the first commit store the guest's memory, as both paths
	// would otherwise pay for it once.
	if _, err := s.Commit(ctx, "m1", sbuml.CommitOptions{}); err != nil {
		b.Fatal(err)
	}
	var ckpt, commit time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := s.Commit(ctx, "m1", sbuml.CommitOptions{Message: "bench commit"}); err != nil {
			b.Fatal(err)
		}
		commit += time.Since(start)

		var out strings.Builder
		start = time.Now()
		code, err := agent.Run(ctx, g, agent.ExecRequest{Argv: []string{"sbuml-guest", "ckpt", "-m", "bench ckpt"}}, nil, &out, &out)
		ckpt += time.Since(start)
		if err != nil || code != 0 || strings.TrimSpace(out.String()) != "0" {
			b.Fatalf("sbuml-guest ckpt: %q, %d, %v", out.String(), code, err)
		}
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(commit.Seconds()*1000/n, "commit-ms")
	b.ReportMetric(ckpt.Seconds()*1000/n, "ckpt-ms")
	b.ReportMetric(ckpt.Seconds()/commit.Seconds(), "ckpt/commit")
}

// BenchmarkAutosnapIdle compares what an automatic snapshot of an idle
// 512 MiB guest adds to the scrapbook (taken with --always, since an idle
// guest is otherwise skipped) with what a plain commit of the same idle
// guest adds, 10 s apart each. They should be the same: an automatic
// snapshot is a commit.
//
//	go test -run '^$' -bench BenchmarkAutosnapIdle -benchtime 3x .
func BenchmarkAutosnapIdle(b *testing.B) {
	if testing.Short() {
		b.Skip("boots a guest; skipped with -short")
	}
	const every = 10 * time.Second
	s := guestScrapbook(b, 1)
	bootGuestWith(b, s, "m1", sbuml.BootOptions{Memory: 512 << 20, Accel: guestAccel})
	ctx := context.Background()
	if _, err := s.Commit(ctx, "m1", sbuml.CommitOptions{}); err != nil {
		b.Fatal(err)
	}
	var commitAdded, autoAdded int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		time.Sleep(every)
		res, err := s.Commit(ctx, "m1", sbuml.CommitOptions{Message: "idle"})
		if err != nil {
			b.Fatal(err)
		}
		commitAdded += res.Stats.NewBytes
	}
	if err := s.SetAutosnap(ctx, "m1", sbuml.AutosnapConfig{Every: every, Always: true}); err != nil {
		b.Fatal(err)
	}
	taken := 0
	for taken < b.N {
		time.Sleep(time.Second)
		st, err := s.Autosnap(ctx, "m1")
		if err != nil {
			b.Fatal(err)
		}
		if st.Taken > taken {
			taken = st.Taken
			autoAdded += st.LastAdded
			b.Logf("autosnap %d: +%d KiB, downtime %v", taken, st.LastAdded>>10, st.LastDowntime.Round(time.Millisecond))
		}
	}
	b.StopTimer()
	if err := s.StopAutosnap(ctx, "m1"); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(commitAdded)/1024/float64(b.N), "idle-commit-KiB")
	b.ReportMetric(float64(autoAdded)/1024/float64(taken), "idle-autosnap-KiB")
}
