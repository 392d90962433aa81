package image_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbuml/sbuml/image"
	"github.com/sbuml/sbuml/internal/testimage"
	"github.com/sbuml/sbuml/vmm"
)

// biosGuest is a machine booted by vmm from a disk alone: no -kernel,
// the firmware runs the disk's boot loader.
type biosGuest struct {
	t   *testing.T
	m   *vmm.Machine
	seq int
}

// bootBIOS boots disk with vmm under TCG, without a kernel, waits up to
// timeout for marker and halts the machine when the test ends.
func bootBIOS(t *testing.T, disk, marker string, timeout time.Duration) *biosGuest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	m, err := vmm.Boot(ctx, filepath.Join(t.TempDir(), "m"), vmm.Config{Memory: 512 << 20, Accel: "tcg", Disks: []string{disk}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(m.ConsoleLog())
			t.Logf("console output:\n%s", log)
		}
		if err := m.Halt(context.Background()); err != nil {
			t.Errorf("halt: %v", err)
		}
		m.Close()
	})
	if err := m.WaitConsole(ctx, marker); err != nil {
		t.Fatalf("booting %s by BIOS: %v", disk, err)
	}
	t.Logf("BIOS boot: ready marker %v after QEMU started", time.Since(start).Round(100*time.Millisecond))
	return &biosGuest{t: t, m: m}
}

// run types a command line into the console and returns what the console
// printed until it finished; the end marker is computed by the shell, so
// the echo of the typed line cannot match it.
func (g *biosGuest) run(command string) string {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testimage.CommandTimeout)
	defer cancel()
	g.seq++
	n := 2000 + g.seq
	fi, err := os.Stat(g.m.ConsoleLog())
	if err != nil {
		g.t.Fatal(err)
	}
	if err := g.m.SendLine(ctx, fmt.Sprintf("%s; echo END-$((%d+1))-END", command, n)); err != nil {
		g.t.Fatal(err)
	}
	end, err := g.m.WaitConsoleAfter(ctx, fi.Size(), fmt.Sprintf("END-%d-END", n+1))
	if err != nil {
		g.t.Fatalf("command %q: %v", command, err)
	}
	data, err := os.ReadFile(g.m.ConsoleLog())
	if err != nil {
		g.t.Fatal(err)
	}
	return string(data[fi.Size():min(end, int64(len(data)))])
}

// sfdiskLayout is what the tests need of sfdisk --json.
type sfdiskLayout struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		Partitions []struct {
			Start    int64  `json:"start"`
			Size     int64  `json:"size"`
			Type     string `json:"type"`
			Bootable bool   `json:"bootable"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

// checkLayout checks the partition table of a bootable disk: an active
// FAT16 partition, then the root partition of rootSize bytes at its end.
func checkLayout(t *testing.T, disk string, rootSize int64) {
	t.Helper()
	out, err := exec.Command("sfdisk", "--json", disk).Output()
	if err != nil {
		t.Fatalf("sfdisk --json %s: %v", disk, err)
	}
	var l sfdiskLayout
	if err := json.Unmarshal(out, &l); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(disk)
	if err != nil {
		t.Fatal(err)
	}
	p := l.PartitionTable.Partitions
	if l.PartitionTable.Label != "dos" || len(p) != 2 || !p[0].Bootable || p[1].Bootable || p[0].Type != "e" || p[1].Type != "83" ||
		p[0].Start != 2048 || p[1].Start != p[0].Start+p[0].Size || p[1].Size*512 != rootSize || (p[1].Start+p[1].Size)*512 != fi.Size() {
		t.Errorf("partition table of %s (%d bytes), want root %d bytes:\n%s", disk, fi.Size(), rootSize, out)
	}
}

// TestBootableDiskTiny turns the tiny image into a disk with its own boot
// loader, with a root partition larger than the image's disk, and boots
// it by BIOS: /init must mount the partition root= names, grown.
func TestBootableDiskTiny(t *testing.T) {
	t.Parallel()
	img := testimage.Get(t)
	disk := filepath.Join(t.TempDir(), "boot.raw")
	const rootSize = 300 << 20
	if err := image.MakeBootableDisk(context.Background(), img, disk, image.BootDiskOptions{RootSize: rootSize}); err != nil {
		t.Fatal(err)
	}
	checkLayout(t, disk, rootSize)
	if used := allocated(t, disk); used > 40<<20 {
		t.Errorf("bootable disk takes %d KiB on the host; want it sparse", used>>10)
	}

	g := bootBIOS(t, disk, img.ReadyMarker, bootTimeout)
	checks := []struct{ command, want string }{
		{"cat /proc/cmdline", "root=" + image.BootDiskRoot},
		{"grep ' /mnt ' /proc/mounts", image.BootDiskRoot + " /mnt ext4 rw"},
		{"cat /mnt/README | head -1", "This is the disk of an sbuml machine."},
	}
	for _, c := range checks {
		if out := g.run(c.command); !strings.Contains(out, c.want) {
			t.Errorf("%s printed %q, want %q", c.command, out, c.want)
		}
	}
	out := g.run("echo size-$(df -k /mnt | awk 'NR==2 {print $2}')")
	var kib int64
	if i := strings.LastIndex(out, "size-"); i >= 0 {
		fmt.Sscan(out[i+len("size-"):], &kib)
	}
	if kib < 250<<10 {
		t.Errorf("root file system has %d KiB, want it grown to about %d MiB:\n%s", kib, rootSize>>20, out)
	}
}

// TestBootableDiskDebian boots the Debian image from a bootable disk by
// BIOS (the one Debian boot besides TestDebianBoot): the root file system
// is partition 2, found through /etc/fstab's UUID.
func TestBootableDiskDebian(t *testing.T) {
	t.Parallel()
	img := testimage.Debian(t)
	disk := filepath.Join(t.TempDir(), "debian.raw")
	if err := image.MakeBootableDisk(context.Background(), img, disk, image.BootDiskOptions{}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(img.Disk)
	if err != nil {
		t.Fatal(err)
	}
	checkLayout(t, disk, fi.Size())
	g := bootBIOS(t, disk, img.ReadyMarker, debianBootTimeout)
	if out := g.run("uname -r; findmnt -no SOURCE,OPTIONS / | tr -s ' '; echo state-$(systemctl is-system-running --wait)"); !strings.Contains(out, img.KernelVersion) ||
		!strings.Contains(out, image.BootDiskRoot+" rw,noatime") || !strings.Contains(out, "state-running") {
		t.Errorf("Debian booted from the bootable disk:\n%s", out)
	}
}

// allocated returns the bytes a file takes on the host.
func allocated(t *testing.T, name string) int64 {
	t.Helper()
	out, err := exec.Command("du", "-B1", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	fmt.Sscan(string(out), &n)
	return n
}
