package sbuml_test

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/vmm"
)

// TestCommitDirtyLog commits a guest that rewrites memory and its disk as
// fast as it can, leaving it frozen after each commit: then RAM must
// equal, byte for byte, the copy of RAM the commit stored (a page the
// dirty-page log missed would differ), and that copy must be the stored
// RAM stream. Every commit, the first too, compares only the pages the
// log reports while frozen. The last snapshot checks out, and its first
// commit is checked the same way; it carries on from its instant. Guest
// RAM on tmpfs (the default) and in the machine directory (on the file
// system of the test's temporary directory) are both logged.
func TestCommitDirtyLog(t *testing.T) {
	t.Parallel()
	if err := vmm.CheckDirtyLog(); err != nil {
		t.Skipf("this host keeps no dirty-page log (commits compare all of RAM): %v", err)
	}
	for _, tc := range []struct {
		name     string
		ramInDir bool
	}{{"tmpfs", false}, {"ram-in-dir", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			commitDirtyLog(t, tc.ramInDir)
		})
	}
}

// commitDirtyLog is TestCommitDirtyLog for one place of guest RAM.
func commitDirtyLog(t *testing.T, ramInDir bool) {
	s := guestScrapbook(t, 2)
	g := bootGuestWith(t, s, "m1", sbuml.BootOptions{Memory: 256 << 20, Accel: guestAccel, RAMInDir: ramInDir})
	g.startCounter()
	g.run("(while true; do dd if=/dev/urandom of=/tmp/churn bs=64k count=64 conv=notrunc 2>/dev/null; done) >/dev/null 2>&1 &")
	g.run("(while true; do dd if=/dev/urandom of=/mnt/churn bs=64k count=16 conv=notrunc 2>/dev/null; sync; done) >/dev/null 2>&1 &")
	ctx := guestContext(t)
	for i := range 4 {
		time.Sleep(500 * time.Millisecond)
		res := g.commit(sbuml.CommitOptions{Freeze: true, Message: "churn"})
		if !res.DirtyLog {
			t.Errorf("commit %d compared all of RAM frozen, not the pages the dirty-page log reports", i+1)
		}
		t.Logf("commit %d: %d pages hashed, frozen %+v", i+1, res.HashedRAMPages, res.Frozen)
		requireCopyIsRAM(g)
		requireRAMCopyStored(g, res.ID)
		requireDiskStored(g, res.ID)
		if err := s.Continue(ctx, "m1"); err != nil {
			t.Fatal(err)
		}
	}
	tl := commitTimeline(g, sbuml.CommitOptions{Message: "last"})
	g.halt()
	m2, _ := checkoutGuest(t, s, "m1", "m2", sbuml.CheckoutOptions{Continue: true, RAMInDir: ramInDir})
	requireResumed(m2, tl)
	res := m2.commit(sbuml.CommitOptions{Freeze: true, Message: "after checkout"})
	if !res.DirtyLog {
		t.Errorf("the first commit after checkout compared all of RAM frozen")
	}
	requireCopyIsRAM(m2)
	requireRAMCopyStored(m2, res.ID)
}

// requireDiskStored checks that the disk of the frozen machine, stored
// from scratch on the disk of the snapshot's parent, is the disk of
// snapshot id: the commit caught the disk at its instant.
func requireDiskStored(g *guest, id objects.ID) {
	g.t.Helper()
	requireStoredAs(g, id, filepath.Join(g.dir(), "disk.img"), "disks/disk.img", sbuml.DiskParams)
}

// requireCopyIsRAM checks that the frozen machine's RAM is its copy of
// the RAM of its last snapshot, byte for byte.
func requireCopyIsRAM(g *guest) {
	g.t.Helper()
	m := g.open()
	ram := m.RAMFile()
	m.Close()
	a, err := os.Open(ram)
	if err != nil {
		g.t.Fatal(err)
	}
	defer a.Close()
	b, err := os.Open(filepath.Join(ram+vmm.RAMSidecarSuffix, "ram"))
	if err != nil {
		g.t.Fatal(err)
	}
	defer b.Close()
	pa, pb := make([]byte, 1<<20), make([]byte, 1<<20)
	var diff []int64
	for off := int64(0); ; off += int64(len(pa)) {
		na, erra := io.ReadFull(a, pa)
		nb, _ := io.ReadFull(b, pb)
		for p := 0; p < na; p += 4096 {
			if p >= nb || !bytes.Equal(pa[p:min(p+4096, na)], pb[p:min(p+4096, nb)]) {
				diff = append(diff, (off+int64(p))/4096)
			}
		}
		if erra != nil {
			break
		}
	}
	if len(diff) > 0 {
		g.t.Fatalf("%s: %d pages of RAM differ from the copy the commit stored, first %v", g.name, len(diff), diff[:min(len(diff), 8)])
	}
}
