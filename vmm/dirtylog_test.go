package vmm

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDirtyLog checks the log against the truth: RAM copied while the
// guest was frozen, compared page by page with RAM at the next freeze.
// Every page that differs must be among the pages the log reports, in
// rounds where the guest writes memory and its disk, and idles.
func TestDirtyLog(t *testing.T) {
	t.Parallel()
	if err := CheckDirtyLog(); err != nil {
		t.Skipf("this host keeps no dirty-page log: %v", err)
	}
	m, _ := bootGuest(t)
	ctx := testContext(t, 3*time.Minute)
	if _, err := m.OpenDirtyLog(); err != ErrNoDirtyLog {
		t.Fatalf("a new machine's log: %v, want ErrNoDirtyLog", err)
	}
	if err := m.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	d, err := m.StartDirtyLog()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	copyRAM := readAll(t, m.RAMFile())
	for round, cmd := range []string{
		"dd if=/dev/urandom of=/tmp/f bs=1M count=8 2>/dev/null; echo do\"\"ne-0",
		"echo do\"\"ne-1",
		"rm /tmp/f; dd if=/dev/zero of=/mnt/z bs=1M count=4 2>/dev/null; sync; echo do\"\"ne-2",
	} {
		if err := m.Continue(ctx); err != nil {
			t.Fatal(err)
		}
		if err := m.SendLine(ctx, cmd); err != nil {
			t.Fatal(err)
		}
		if err := m.WaitConsole(ctx, "done-"+string(rune('0'+round))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		if err := m.Freeze(ctx); err != nil {
			t.Fatal(err)
		}
		// Opened again, as the next commit (another process) would.
		d2, err := m.OpenDirtyLog()
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if d2.ID() != d.ID() {
			t.Errorf("round %d: log %q, started as %q", round, d2.ID(), d.ID())
		}
		written, err := d2.Written(true)
		d2.Close()
		if err != nil {
			t.Fatal(err)
		}
		now := readAll(t, m.RAMFile())
		changed, missed := 0, 0
		for off := 0; off < len(now); off += 4096 {
			if bytes.Equal(now[off:off+4096], copyRAM[off:off+4096]) {
				continue
			}
			changed++
			if !covered(written, int64(off)) {
				missed++
			}
		}
		var reported int64
		for _, r := range written {
			reported += (r[1] - r[0]) / 4096
		}
		t.Logf("round %d: %d pages changed, %d reported in %d ranges", round, changed, reported, len(written))
		if missed > 0 || changed == 0 || round == 0 && changed < 2048 {
			t.Errorf("round %d: %d of %d changed pages not reported", round, missed, changed)
		}
		copyRAM = now
	}
	if err := m.Continue(ctx); err != nil {
		t.Fatal(err)
	}
	requireLogTakenOver(t, m, d)
}

// requireLogTakenOver checks that a log whose record was lost (its maker
// killed before writing it) is taken over, under a new ID, rather than
// made twice.
func requireLogTakenOver(t *testing.T, m *Machine, d *DirtyLog) {
	t.Helper()
	if err := os.Remove(filepath.Join(m.Dir(), DirtyLogFile)); err != nil {
		t.Fatal(err)
	}
	d3, err := m.StartDirtyLog()
	if err != nil {
		t.Fatalf("take over a log without its record: %v", err)
	}
	defer d3.Close()
	old, now := strings.Fields(d.ID()), strings.Fields(d3.ID())
	if d3.ID() == d.ID() || old[2] != now[2] {
		t.Errorf("log taken over as %q, was %q: want the same descriptor under a new ID", d3.ID(), d.ID())
	}
	if _, err := d3.Written(true); err != nil {
		t.Error(err)
	}
}

func covered(rs [][2]int64, off int64) bool {
	for _, r := range rs {
		if off >= r[0] && off < r[1] {
			return true
		}
	}
	return false
}

func readAll(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
