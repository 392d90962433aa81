package sbuml_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/retention"
)

// TestAutosnap runs thinkback on a guest that writes to its disk: the
// keeper takes automatic snapshots at the interval, keeps exactly what
// the retention rules keep, gc frees the rest, an idle guest is not
// snapshot again, and NAME@{DATE} finds the automatic snapshots. With
// SBUML_LONG=1 it runs the full scenario: every 30 s for 10
// minutes, --keep-last 5 --keep-hourly 1.
//
// It is long because one booted guest serves all these checks: each guest
// costs seconds to boot under TCG.
func TestAutosnap(t *testing.T) {
	t.Parallel()
	every, run := 2*time.Second, 24*time.Second
	if os.Getenv("SBUML_LONG") != "" {
		every, run = 30*time.Second, 10*time.Minute
	}
	policy := retention.Policy{Last: 5, Hourly: 1}
	s := guestScrapbook(t, 1)
	bootGuest(t, s, "m1", 0)
	ctx := context.Background()
	sh(t, s, "m1", "setsid sh -c 'echo $$ > /tmp/writer; while true; do date >> /mnt/log; sync; sleep 1; done' </dev/null >/dev/null 2>&1 &")
	if err := s.SetAutosnap(ctx, "m1", sbuml.AutosnapConfig{Every: every, Keep: policy}); err != nil {
		t.Fatal(err)
	}
	// Watch the index while thinkback runs: every automatic snapshot
	// ever taken.
	seen := map[objects.ID]time.Time{}
	deadline := time.Now().Add(run)
	for time.Now().Before(deadline) {
		for _, d := range autosnaps(t, s) {
			seen[d.ID] = d.Time
		}
		time.Sleep(every / 2)
	}
	// Idle now: stop writing and flush what the writer left dirty (the
	// guest's writeback would write it later, and that is activity). The
	// kill and the sync are activity too: wait until the keeper has
	// judged an interval after them idle (a snapshot they cause may take
	// seconds on a busy host), then look again after a few intervals.
	sh(t, s, "m1", "kill $(cat /tmp/writer); sync")
	killed := autosnapState(t, s)
	before := waitAutosnapSkip(t, s, killed.Skipped, 10*every)
	time.Sleep(3 * every)
	after := autosnapState(t, s)
	if after.Taken != before.Taken || after.Skipped < before.Skipped+1 {
		log, _ := os.ReadFile(filepath.Join(s.MachinesDir(), "m1", "keeper.log"))
		t.Errorf("idle guest: taken %d -> %d, skipped %d -> %d; want no snapshot and skips; keeper.log:\n%s", before.Taken, after.Taken, before.Skipped, after.Skipped, log)
	}
	if err := s.StopAutosnap(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	for _, d := range autosnaps(t, s) {
		seen[d.ID] = d.Time
	}
	log, _ := os.ReadFile(filepath.Join(s.MachinesDir(), "m1", "keeper.log"))
	t.Logf("%d automatic snapshots taken, %d seen; keeper.log:\n%s", after.Taken, len(seen), log)
	if len(seen) < 6 {
		t.Fatalf("only %d automatic snapshots in %v at %v intervals", len(seen), run, every)
	}

	// Exactly what the rules keep, of all that were taken.
	var items []retention.Item
	for id, tm := range seen {
		items = append(items, retention.Item{ID: id.String(), Time: tm})
	}
	want := map[string]bool{}
	for _, d := range retention.Apply(items, policy, nil) {
		if d.Keep {
			want[d.ID] = true
		}
	}
	kept := autosnaps(t, s)
	if len(kept) != len(want) {
		t.Errorf("kept %d automatic snapshots, the rules keep %d", len(kept), len(want))
	}
	for _, d := range kept {
		if !want[d.ID.String()] {
			t.Errorf("kept %s, which the rules drop", d.ID.Short())
		}
	}

	// m1@{now} is the newest; the oldest kept one is m1@{its time}.
	newest, err := s.Resolve(ctx, "m1@{now}")
	if err != nil {
		t.Fatal(err)
	}
	if newest != kept[0].ID {
		t.Errorf("m1@{now} = %s, want the newest automatic snapshot %s", newest.Short(), kept[0].ID.Short())
	}
	entries, err := s.Log(ctx, sbuml.LogOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	autos := 0
	for _, e := range entries {
		if e.Auto {
			autos++
		}
	}
	if autos != len(kept) {
		t.Errorf("log --all marks %d snapshots automatic, want %d", autos, len(kept))
	}

	// gc frees the dropped ones, except the one the machine continues
	// from (its newest) and those kept.
	if _, err := s.Gc(ctx, sbuml.GcOptions{}); err != nil {
		t.Fatal(err)
	}
	for id := range seen {
		has, err := s.Objects.Has(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if has != want[id.String()] {
			t.Errorf("after gc, automatic snapshot %s present: %v, kept by the rules: %v", id.Short(), has, want[id.String()])
		}
	}
}

func autosnaps(t testing.TB, s *sbuml.Scrapbook) []sbuml.AutosnapDecision {
	t.Helper()
	ds, err := s.ExpireAutosnaps(context.Background(), "m1", retention.Policy{}, true)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// waitAutosnapSkip waits until m1's keeper has skipped more than skipped
// intervals as idle, and returns its state then.
func waitAutosnapSkip(t testing.TB, s *sbuml.Scrapbook, skipped int, limit time.Duration) *sbuml.AutosnapState {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		st := autosnapState(t, s)
		if st.Skipped > skipped && st.LastSkip == "guest idle" {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("the keeper judged no interval idle in %v after the writer stopped: %+v", limit, st)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func autosnapState(t testing.TB, s *sbuml.Scrapbook) *sbuml.AutosnapState {
	t.Helper()
	st, err := s.Autosnap(context.Background(), "m1")
	if err != nil {
		t.Fatal(err)
	}
	return st
}
