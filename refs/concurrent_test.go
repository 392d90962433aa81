package refs

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/go-git/go-billy/v5/osfs"

	"github.com/sbuml/sbuml/objects"
)

// TestConcurrentAdvance has several writers, each with its own Store as if
// in its own process, advance one counter ref by compare-and-swap until
// each has succeeded a fixed number of times. A lost update would leave
// the counter short or break the chain of reflog entries.
//
// It is long because it is one scenario: each step starts from what the
// steps before it left.
func TestConcurrentAdvance(t *testing.T) {
	const (
		writers = 8
		each    = 12
		name    = "refs/heads/counter"
	)
	total := writers * each
	dir := t.TempDir()
	counter := map[objects.ID]int{}
	for n := 0; n <= total; n++ {
		counter[id(n)] = n
	}
	mustUpdate(t, New(osfs.New(dir)), name, objects.Zero, id(0), "start")

	var wg sync.WaitGroup
	start := make(chan struct{})
	conflicts := make([]int, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := New(osfs.New(dir))
			<-start
			for done := 0; done < each; {
				cur, err := s.Get(name)
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				err = s.Update(name, cur, id(counter[cur]+1), fmt.Sprintf("writer %d", w))
				switch {
				case err == nil:
					done++
				case errors.Is(err, ErrConflict):
					conflicts[w]++
					runtime.Gosched()
				default:
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		return
	}

	s := New(osfs.New(dir))
	got, err := s.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	if counter[got] != total {
		t.Errorf("counter = %d after %d successful updates: updates were lost", counter[got], total)
	}
	log, err := s.Reflog(name)
	if err != nil {
		t.Fatal(err)
	}
	if len(log) != total+1 {
		t.Fatalf("reflog has %d entries, want %d", len(log), total+1)
	}
	perWriter := map[string]int{}
	for i, e := range log[1:] {
		if e.Old != id(i) || e.New != id(i+1) {
			t.Fatalf("reflog entry %d goes %d -> %d, want %d -> %d", i+1, counter[e.Old], counter[e.New], i, i+1)
		}
		perWriter[e.Why]++
	}
	for w := 0; w < writers; w++ {
		if n := perWriter[fmt.Sprintf("writer %d", w)]; n != each {
			t.Errorf("writer %d has %d reflog entries, want %d", w, n, each)
		}
	}
	noLockFiles(t, osfs.New(dir))
	sum := 0
	for _, c := range conflicts {
		sum += c
	}
	t.Logf("%d updates by %d writers met %d conflicts", total, writers, sum)
}

// TestConcurrentSameOld starts many writers at once, all expecting the same
// old value; in every round exactly one of them must win.
func TestConcurrentSameOld(t *testing.T) {
	const (
		writers = 16
		rounds  = 10
		name    = "refs/heads/race"
	)
	dir := t.TempDir()
	stores := make([]*Store, writers)
	for w := range stores {
		stores[w] = New(osfs.New(dir))
	}
	old := objects.Zero // round 0 races to create the ref
	for round := 0; round < rounds; round++ {
		errs := make([]error, writers)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[w] = stores[w].Update(name, old, id(1000*round+w), "")
			}()
		}
		close(start)
		wg.Wait()

		winner := -1
		for w, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("round %d: writers %d and %d both succeeded", round, winner, w)
			case err == nil:
				winner = w
			case !errors.Is(err, ErrConflict):
				t.Fatalf("round %d: writer %d: %v", round, w, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no writer succeeded", round)
		}
		got, err := stores[0].Get(name)
		if err != nil || got != id(1000*round+winner) {
			t.Fatalf("round %d: ref = %v, %v; want the winner's %v", round, got, err, id(1000*round+winner))
		}
		old = got
	}
	log, err := stores[0].Reflog(name)
	if err != nil {
		t.Fatal(err)
	}
	if len(log) != rounds {
		t.Errorf("reflog has %d entries, want one per round (%d)", len(log), rounds)
	}
	noLockFiles(t, osfs.New(dir))
}
