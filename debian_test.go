package sbuml_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/internal/testimage"
)

// sshIn runs a command in machine through 'sbuml ssh' (SSHCommand) and
// returns its output.
func sshIn(t testing.TB, s *sbuml.Scrapbook, machine string, cmd ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	argv, err := s.SSHCommand(ctx, machine, cmd)
	if err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	return string(out), err
}

// counterOf reads the counter a test program writes in machine.
func counterOf(t testing.TB, s *sbuml.Scrapbook, machine string) int {
	t.Helper()
	out := strings.TrimSpace(sh(t, s, machine, "cat /dev/shm/counter"))
	n, err := strconv.Atoi(out)
	if err != nil {
		t.Fatalf("%s: counter %q", machine, out)
	}
	return n
}

// TestDebianMachine runs the Debian image as a user would: boot with its
// ssh port forwarded, ssh in, run a program, commit while it runs, check
// the snapshot out twice; both checkouts answer ssh at once on ports of
// their own, and their programs carry on from the committed instant; the
// guests fetch from a server on the host; a checkout made a while after
// the commit has the host's time.
//
// It is long because one booted guest serves all these checks: each guest
// costs seconds to boot under TCG.
func TestDebianMachine(t *testing.T) {
	t.Parallel()
	img := testimage.Debian(t)
	s := guestScrapbook(t, 3)
	ctx := guestContext(t)
	if _, err := s.AddImage(ctx, "debian", filepath.Dir(img.Kernel)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	m, err := s.Boot(ctx, "d1", sbuml.BootOptions{Base: "debian", Memory: 512 << 20, Accel: guestAccel})
	if m != nil {
		m.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("debian booted to its ready marker in %v under TCG", time.Since(start).Round(100*time.Millisecond))
	out, err := sshIn(t, s, "d1", "uname", "-a")
	if err != nil || !strings.Contains(out, "Linux") {
		t.Fatalf("sbuml ssh d1 -- uname -a: %q, %v", out, err)
	}
	// And through the command, as a user types it.
	cmd := exec.Command(sbumlCommand(t), "--scrapbook", s.Dir, "ssh", "d1", "--", "uname", "-a")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "Linux") {
		t.Errorf("sbuml ssh d1 -- uname -a: %q, %v", out, err)
	}
	port := hostServer(t, "from the host\n")
	fetch := fmt.Sprintf("wget -q -T 10 -O - http://10.0.2.2:%d/", port)
	if got := sh(t, s, "d1", fetch); got != "from the host\n" {
		t.Errorf("d1 fetched %q", got)
	}

	sh(t, s, "d1", "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /dev/shm/counter; sleep 0.1; done' </dev/null >/dev/null 2>&1 &")
	time.Sleep(time.Second)
	before := counterOf(t, s, "d1")
	res, err := s.Commit(ctx, "d1", sbuml.CommitOptions{Message: "counting"})
	if err != nil {
		t.Fatal(err)
	}
	after := counterOf(t, s, "d1")
	t.Logf("commit: downtime %v, %d MiB added; counter %d before, %d after", res.Downtime.Round(time.Millisecond), res.Stats.NewBytes>>20, before, after)
	if err := s.Halt(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	if !testing.Short() {
		time.Sleep(60 * time.Second) // the clock check below needs a gap
	}

	ports := map[int]bool{}
	for _, name := range []string{"c1", "c2"} {
		coStart := time.Now()
		_, co := checkoutGuest(t, s, res.ID.String(), name, sbuml.CheckoutOptions{Continue: true})
		if len(co.Forwards) != 1 || co.Forwards[0].GuestPort != 22 || ports[co.Forwards[0].HostPort] {
			t.Fatalf("%s forwards %+v", name, co.Forwards)
		}
		ports[co.Forwards[0].HostPort] = true
		// The program carries on from the committed instant: from a value
		// between the two read around the commit, plus what it counted
		// since the checkout.
		got := counterOf(t, s, name)
		ran := int(time.Since(coStart)/(100*time.Millisecond)) + 1
		if got < before || got > after+ran {
			t.Errorf("%s: counter %d, want it to go on from the commit (%d-%d) by at most %d", name, got, before, after, ran)
		}
		time.Sleep(500 * time.Millisecond)
		if again := counterOf(t, s, name); again <= got {
			t.Errorf("%s: counter stuck at %d", name, got)
		}
		checkClock(t, s, name)
	}
	// Both answer ssh at once.
	var wg sync.WaitGroup
	for _, name := range []string{"c1", "c2"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := sshIn(t, s, name, "cat", "/dev/shm/counter")
			if err != nil || strings.TrimSpace(out) == "" {
				t.Errorf("ssh %s: %q, %v", name, out, err)
			}
		}()
	}
	wg.Wait()
	if got := sh(t, s, "c1", fetch); got != "from the host\n" {
		t.Errorf("c1 fetched %q", got)
	}
}
