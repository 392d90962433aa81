package ui_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/ui"
)

// BenchmarkPageInteractive measures how long the page takes, in headless
// Chromium, to become interactive on a scrapbook of 2,000 snapshots in 21
// lines of history. Each load is on a new Server, whose first answer lists
// the history (sbuml log --all) anew; the browser has shown one page
// before, as a user's has. It reports
//
//   - ms/interactive: by the page's own clock, from the start of the
//     navigation until every snapshot is in the list and the graph is drawn
//     (the mark sbuml-graph-drawn), plus the time the page takes to show a
//     snapshot's details when one is clicked in the list;
//   - ms/load: by the benchmark's clock, from asking for the page until a
//     click on the second snapshot of the list (through the DevTools
//     protocol, whose queries of a large page take time of their own) shows
//     its details.
//
// docs/ui.md reports the figures.
func BenchmarkPageInteractive(b *testing.B) {
	const snapshots = 2000
	s := syntheticHistory(b, snapshots, 100)
	ctx := browser(b, 30*time.Minute)
	load := func(base string) float64 {
		err := chromedp.Do(ctx,
			chromedp.Navigate(base),
			pollJS(fmt.Sprintf(`document.querySelectorAll("#snapshot-list > li").length === %d && performance.getEntriesByName("sbuml-graph-drawn").length > 0`, snapshots)),
			chromedp.Click(`#snapshot-list > li:nth-child(2) button`),
			pollJS(`(document.querySelector("#details .full-id") || {}).textContent === document.querySelector("#snapshot-list > li:nth-child(2)").dataset.id`),
		)
		if err != nil {
			b.Fatal(err)
		}
		ms, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`(() => {
			const drawn = performance.getEntriesByName("sbuml-graph-drawn")[0].startTime;
			const t0 = performance.now();
			document.querySelector("#snapshot-list > li:nth-child(3) button").click();
			const ok = document.querySelector("#details .full-id").textContent === document.querySelector("#snapshot-list > li:nth-child(3)").dataset.id;
			return ok ? drawn + performance.now() - t0 : -1;
		})()`))
		if err != nil || ms < 0 {
			b.Fatalf("the page did not show the details of the snapshot clicked: %v", err)
		}
		return ms
	}
	load(serve(b, s.Dir, "", ui.Options{}))
	var wall time.Duration
	var page float64
	for b.Loop() {
		base := serve(b, s.Dir, "", ui.Options{})
		start := time.Now()
		page += load(base)
		wall += time.Since(start)
	}
	b.ReportMetric(page/float64(b.N), "ms/interactive")
	b.ReportMetric(float64(wall.Milliseconds())/float64(b.N), "ms/load")
}

// pollJS waits until a JavaScript expression is true.
func pollJS(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Poll[bool](expr, chromedp.WithPollingInterval(5*time.Millisecond))(ctx, t)
		return err
	})
}

// syntheticHistory makes a scrapbook of n snapshots of one small tree: a
// line of history on main, and every fork snapshots a new branch that
// forks from a snapshot fork/2 back, with a tag every 250 snapshots.
// Snapshots are written as objects directly, as many commits would leave
// them, which is much faster than committing.
func syntheticHistory(b *testing.B, n, fork int) *sbuml.Scrapbook {
	b.Helper()
	s, err := sbuml.Init(filepath.Join(b.TempDir(), "scrapbook"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	ctx := context.Background()
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("content"), 0o644); err != nil {
		b.Fatal(err)
	}
	first, err := s.Import(ctx, dir, sbuml.SnapshotOptions{Branch: "main", Message: "snapshot 0"})
	if err != nil {
		b.Fatal(err)
	}
	root, err := objects.LoadSnapshot(ctx, s.Objects, first.ID)
	if err != nil {
		b.Fatal(err)
	}
	ids := []objects.ID{first.ID}
	tips := map[string]objects.ID{"main": first.ID}
	branch := "main"
	t0 := root.Time // later snapshots are newer, a minute apart
	for i := 1; i < n; i++ {
		parent := tips[branch]
		if i%fork == 0 {
			branch = fmt.Sprintf("line-%d", i/fork)
			parent = ids[i-fork/2]
		}
		sn := &objects.Snapshot{Tree: root.Tree, Parents: []objects.ID{parent}, Time: t0.Add(time.Duration(i) * time.Minute),
			Author: "bench", Host: "bench", Message: fmt.Sprintf("snapshot %d on %s: a message as long as people write them", i, branch)}
		id, _, err := objects.Save(ctx, s.Objects, sn.Encode())
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, id)
		tips[branch] = id
	}
	if err := s.Objects.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	for name, id := range tips {
		if err := s.Refs.Update("refs/heads/"+name, refOld(s, "refs/heads/"+name), id, "bench"); err != nil {
			b.Fatal(err)
		}
	}
	for i := 250; i < n; i += 250 {
		if err := s.Refs.Update(fmt.Sprintf("refs/tags/t%d", i), objects.Zero, ids[i], "bench"); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// refOld returns what a ref names now, Zero if nothing.
func refOld(s *sbuml.Scrapbook, name string) objects.ID {
	id, err := s.Refs.Get(name)
	if err != nil {
		return objects.Zero
	}
	return id
}
