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
