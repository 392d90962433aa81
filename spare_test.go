package sbuml_test

import (
	"context"
	"encoding/json"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/vmm"
)

// TestCheckoutSpare checks out one snapshot twice at once with one spare
// waiting: one checkout claims it, the other starts QEMU, both carry on
// from the snapshot and commit again. A spare started for the first
// snapshot serves a checkout of a later one, with that one's disk. Then
// a spare whose QEMU was killed is skipped and removed by the next
// checkout, and 'sbuml spare --stop' stops the rest, QEMU and RAM.
func TestCheckoutSpare(t *testing.T) {
	t.Parallel()
	s := guestScrapbook(t, 2)
	g := bootGuest(t, s, "m1", 0)
	g.startCounter()
	g.run("echo base > /mnt/base")
	tl := commitTimeline(g, sbuml.CommitOptions{})
	g.halt()
	id := tl.id.String()
	mustCLI(t, s, "spare", id, "--count", "1", "--accel", guestAccel)
	if spares := cliSpares(t, s); len(spares) != 1 || !spares[0].Alive {
		t.Fatalf("spare --list: %+v, want one waiting", spares)
	}
	if ms, err := s.Machines(guestContext(t)); err != nil || len(ms) != 0 {
		t.Errorf("machines with a spare waiting: %+v, %v; want none (m1 is halted, spares are no machines)", ms, err)
	}

	guests, claimed := checkoutAtOnce(t, s, id, "a", "b")
	if claimed != 1 {
		t.Fatalf("%d of two checkouts claimed the one spare", claimed)
	}
	var later string // a snapshot of a, its disk changed
	for _, in := range guests {
		requireResumed(in, tl)
		in.run("echo " + in.name + " > /mnt/own; sync")
		requireFiles(in, map[string]string{"/mnt/base": "base", "/mnt/own": in.name})
		c := in.commit(sbuml.CommitOptions{})
		if c.Parent != tl.id {
			t.Errorf("commit of %s has parent %s, want %s", in.name, c.Parent.Short(), tl.id.Short())
		}
		if in.name == "a" {
			later = c.ID.String()
		}
		in.halt()
	}

	// A spare holds the disk of the snapshot it was started for; a
	// checkout of another snapshot of the shape writes its own.
	startSpares(t, s, id, 1)
	e, res := checkoutGuest(t, s, later, "e", sbuml.CheckoutOptions{Continue: true})
	if !res.Spare {
		t.Errorf("checkout of a later snapshot of the same shape did not claim the spare")
	}
	requireFiles(e, map[string]string{"/mnt/base": "base", "/mnt/own": "a"})
	e.halt()

	dead := startSpares(t, s, id, 2)
	if err := syscall.Kill(dead[0].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitProcessGone(t, dead[0].PID)
	c, res := checkoutGuest(t, s, id, "c", sbuml.CheckoutOptions{Continue: true})
	if !res.Spare {
		t.Errorf("checkout with a dead and a live spare waiting did not claim the live one")
	}
	requireResumed(c, tl)
	if _, err := os.Stat(dead[0].Dir); !os.IsNotExist(err) {
		t.Errorf("dead spare %s left after a checkout: %v", dead[0].Dir, err)
	}

	left := startSpares(t, s, id, 1)
	mustCLI(t, s, "spare", "--stop", "--all")
	if spares, err := s.Spares(); err != nil || len(spares) != 0 {
		t.Errorf("spares after --stop --all: %+v, %v", spares, err)
	}
	waitProcessGone(t, left[0].PID)
}

// cliSpares returns what 'sbuml spare --list --json' prints.
func cliSpares(t *testing.T, s *sbuml.Scrapbook) []vmm.SpareInfo {
	t.Helper()
	var spares []vmm.SpareInfo
	if err := json.Unmarshal([]byte(mustCLI(t, s, "spare", "--list", "--json")), &spares); err != nil {
		t.Fatal(err)
	}
	return spares
}

// startSpares starts n spares for rev; the scrapbook's cleanup (HaltAll)
// stops those left.
func startSpares(t *testing.T, s *sbuml.Scrapbook, rev string, n int) []vmm.SpareInfo {
	t.Helper()
	infos, err := s.StartSpares(guestContext(t), rev, n, sbuml.SpareOptions{Accel: guestAccel})
	if err != nil {
		t.Fatal(err)
	}
	return infos
}

// checkoutAtOnce checks rev out as each of names at the same time and
// returns the guests and how many checkouts claimed a spare.
func checkoutAtOnce(t *testing.T, s *sbuml.Scrapbook, rev string, names ...string) ([]*guest, int) {
	t.Helper()
	var wg sync.WaitGroup
	results := make([]*sbuml.CheckoutResult, len(names))
	errs := make([]error, len(names))
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = s.Checkout(guestContext(t), rev, name, sbuml.CheckoutOptions{Continue: true, Accel: guestAccel})
		}()
	}
	wg.Wait()
	var guests []*guest
	claimed := 0
	for i, name := range names {
		if errs[i] != nil {
			t.Fatalf("checkout %s: %v", name, errs[i])
		}
		if results[i].Spare {
			claimed++
		}
		guests = append(guests, &guest{t: t, s: s, name: name})
	}
	return guests, claimed
}

// waitProcessGone waits up to 10 s for process pid to be gone.
func waitProcessGone(t *testing.T, pid int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for processAlive(pid) {
		select {
		case <-ctx.Done():
			t.Fatalf("process %d still alive", pid)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
