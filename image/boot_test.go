package image_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbuml/sbuml/image"
	"github.com/sbuml/sbuml/internal/testimage"
)

// bootTimeout bounds how long a guest may take to print the ready marker
// under TCG on a loaded machine.
const bootTimeout = 60 * time.Second

// guest is a QEMU process whose serial console is wired to pipes.
type guest = testimage.Console

// boot starts QEMU on img with a network card, a virtio-serial bus and
// extra arguments, and waits for the ready marker.
func boot(t *testing.T, img *image.Image, extra ...string) *guest {
	t.Helper()
	args := append([]string{"-nic", "user,model=virtio-net-pci", "-device", "virtio-serial-pci"}, extra...)
	return testimage.BootConsole(t, img, bootTimeout, args...)
}

// checkGuest runs the checks every booted image must pass.
func checkGuest(t *testing.T, g *guest) {
	word := fmt.Sprintf("%08x", rand.Uint32())
	if out := g.Run("echo hello-$((6*7))-" + word); !strings.Contains(out, "hello-42-"+word) {
		t.Errorf("echo command printed %q, want hello-42-%s", out, word)
	}

	out := g.Run("grep ' /mnt ' /proc/mounts")
	if !strings.Contains(out, "/dev/vda /mnt ext4 rw") {
		t.Errorf("/dev/vda is not mounted read-write on /mnt:\n%s", out)
	}
	out = g.Run("echo " + word + " >/mnt/probe && sync && cat /mnt/probe && rm /mnt/probe && echo write-$((2+2))")
	if !strings.Contains(out, "write-4") {
		t.Errorf("cannot write to /mnt:\n%s", out)
	}
	out = g.Run("cat /mnt/README | head -1; cat /mnt/etc/hostname; hostname")
	if !strings.Contains(out, "This is the disk of an sbuml machine.") || strings.Count(out, "sbuml\r\n") < 2 {
		t.Errorf("disk contents or host name wrong:\n%s", out)
	}
	out = g.Run("echo tmp > /tmp/probe && grep ' /tmp ' /proc/mounts")
	if !strings.Contains(out, "tmpfs /tmp tmpfs rw") {
		t.Errorf("/tmp is not a writable tmpfs:\n%s", out)
	}

	for _, m := range image.DefaultModules {
		out := g.Run("test -d /sys/module/" + m + " && echo loaded-$((1))-" + m)
		if !strings.Contains(out, "loaded-1-"+m) {
			t.Errorf("module %s not loaded:\n%s", m, out)
		}
	}
	out = g.Run("ls /sys/bus/virtio/drivers")
	for _, d := range []string{"virtio_blk", "virtio_console", "virtio_net"} {
		if !strings.Contains(out, d) {
			t.Errorf("virtio driver %s not registered:\n%s", d, out)
		}
	}
	// The network card got its address, route and DNS server by DHCP
	// from QEMU's user-mode network.
	out = g.Run("ip -4 addr show eth0; ip route; cat /etc/resolv.conf")
	for _, want := range []string{"inet 10.0.2.15/24", "default via 10.0.2.2 dev eth0", "nameserver 10.0.2.3"} {
		if !strings.Contains(out, want) {
			t.Errorf("network not configured: no %q in\n%s", want, out)
		}
	}
	// Without a display adapter, init keeps no shell on tty1.
	if out := g.Run("grep -c tty1 /etc/inittab"); !strings.Contains(out, "\n0\r") {
		t.Errorf("/etc/inittab has a tty1 line without a display:\n%s", out)
	}
	// Job control needs the console as controlling terminal (cttyhack).
	out = g.Run("sleep 30 & jobs; kill %1")
	if !strings.Contains(out, "Running") {
		t.Errorf("shell has no job control:\n%s", out)
	}
}

// TestBoot boots the image the way the tests of vmm do: TCG, the default
// machine, the console on the first serial port. A script in the disk's
// /etc/sbuml/rc.d must run before the ready marker.
func TestBoot(t *testing.T) {
	t.Parallel()
	img := testimage.Get(t)
	script := filepath.Join(t.TempDir(), "probe")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho rc-hook-$((3*3)) $(cat /mnt/etc/hostname)\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	debugfs := "write " + script + " /etc/sbuml/rc.d/10-probe\nset_inode_field /etc/sbuml/rc.d/10-probe mode 0100755\n"
	cmd := exec.Command("debugfs", "-w", "-f", "-", img.Disk)
	cmd.Stdin = strings.NewReader(debugfs)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("debugfs: %v\n%s", err, out)
	}

	g := boot(t, img, "-m", "256M")
	before, _, _ := strings.Cut(g.Output(), img.ReadyMarker)
	if !strings.Contains(before, "rc-hook-9 sbuml") {
		t.Errorf("rc.d script on the disk did not run before the ready marker:\n%s", before)
	}
	checkGuest(t, g)
	g.PowerOff()

	// poweroff unmounted the disk: its journal needs no recovery.
	out, err := exec.Command("dumpe2fs", "-h", img.Disk).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Filesystem features:") || strings.Contains(string(out), "needs_recovery") {
		t.Errorf("disk not cleanly unmounted after poweroff (%v):\n%s", err, out)
	}
	if out, err := exec.Command("e2fsck", "-f", "-n", img.Disk).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn after poweroff: %v\n%s", err, out)
	}
}

// TestBootWithoutDisk boots with no disk: /init must say so and still
// reach the ready marker and a shell.
func TestBootWithoutDisk(t *testing.T) {
	t.Parallel()
	img := *testimage.Get(t)
	img.Disk = ""
	g := boot(t, &img, "-m", "256M")
	if out := g.Output(); !strings.Contains(out, "sbuml-init: no disk /dev/vda") {
		t.Errorf("no message about the missing disk:\n%s", out)
	}
	if out := g.Run("echo up-$((1+1))"); !strings.Contains(out, "up-2") {
		t.Errorf("shell does not answer:\n%s", out)
	}
	g.PowerOff()
}

// TestBootSharedMemoryFile boots with guest RAM in a shared file, as
// snapshots need, on a q35 machine.
func TestBootSharedMemoryFile(t *testing.T) {
	t.Parallel()
	ram := filepath.Join(t.TempDir(), "ram")
	g := boot(t, testimage.Get(t),
		"-machine", "q35,memory-backend=ram0", "-m", "512M",
		"-object", "memory-backend-file,id=ram0,size=512M,mem-path="+ram+",share=on")
	checkGuest(t, g)
	out := g.Run("free -m | grep Mem")
	var total int
	if _, err := fmt.Sscanf(strings.TrimSpace(out[strings.Index(out, "Mem:"):]), "Mem: %d", &total); err != nil || total < 400 {
		t.Errorf("guest sees %d MiB of RAM, want about 512 (%v):\n%s", total, err, out)
	}
	g.PowerOff()
}
