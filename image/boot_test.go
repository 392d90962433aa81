package image_test

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbuml/sbuml/image"
	"github.com/sbuml/sbuml/internal/testimage"
)

// bootTimeout bounds how long a guest may take to print the ready marker
// under TCG on a loaded machine.
const bootTimeout = 60 * time.Second

// commandTimeout bounds how long one shell command may take in the guest.
const commandTimeout = 20 * time.Second

// guest is a QEMU process whose serial console is wired to pipes.
type guest struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser

	mu     sync.Mutex
	out    bytes.Buffer  // everything the console printed
	update chan struct{} // closed and replaced when out grows or QEMU exits
	done   bool          // QEMU's output has ended
	seq    int           // numbers command end markers
}

// boot starts QEMU on img with extra arguments and waits for the ready
// marker.
func boot(t *testing.T, img *image.Image, extra ...string) *guest {
	t.Helper()
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("qemu-system-x86_64 is needed to boot the image (apt-get install qemu-system-x86): %v", err)
	}
	args := []string{
		"-accel", "tcg", "-nodefaults", "-display", "none", "-no-reboot",
		"-serial", "stdio", "-monitor", "none",
		"-kernel", img.Kernel, "-initrd", img.Initrd, "-append", img.Cmdline,
		"-nic", "user,model=virtio-net-pci",
		"-device", "virtio-serial-pci",
	}
	if img.Disk != "" {
		args = append(args, "-drive", "file="+img.Disk+",format=raw,if=virtio")
	}
	g := &guest{t: t, update: make(chan struct{})}
	g.cmd = exec.Command(qemu, append(args, extra...)...)
	if g.stdin, err = g.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := g.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	g.cmd.Stderr = g.cmd.Stdout
	start := time.Now()
	if err := g.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", qemu, err)
	}
	t.Cleanup(func() {
		g.cmd.Process.Kill()
		g.cmd.Wait()
		if t.Failed() {
			t.Logf("console output:\n%s", g.output())
		}
	})
	go g.read(stdout)
	if !g.waitFor(img.ReadyMarker, bootTimeout) {
		t.Fatalf("no ready marker %q within %v", img.ReadyMarker, bootTimeout)
	}
	t.Logf("ready marker after %v", time.Since(start).Round(time.Millisecond))
	return g
}

// read copies QEMU's output into g.out until it ends.
func (g *guest) read(r io.Reader) {
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		g.mu.Lock()
		g.out.Write(buf[:n])
		if err != nil {
			g.done = true
		}
		close(g.update)
		g.update = make(chan struct{})
		g.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (g *guest) output() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.out.String()
}

// waitFor waits until the console output after offset from contains s.
func (g *guest) waitForFrom(from int, s string, timeout time.Duration) (int, bool) {
	deadline := time.After(timeout)
	for {
		g.mu.Lock()
		if i := strings.Index(g.out.String()[from:], s); i >= 0 {
			g.mu.Unlock()
			return from + i + len(s), true
		}
		done, update := g.done, g.update
		g.mu.Unlock()
		if done {
			return 0, false
		}
		select {
		case <-update:
		case <-deadline:
			return 0, false
		}
	}
}

func (g *guest) waitFor(s string, timeout time.Duration) bool {
	_, ok := g.waitForFrom(0, s, timeout)
	return ok
}

// run types a shell command line into the console and returns what the
// console printed until the command finished. The end marker is computed
// by the shell, so the echo of the typed line cannot match it.
func (g *guest) run(command string) string {
	g.t.Helper()
	g.seq++
	n := 1000 + g.seq
	end := fmt.Sprintf("END-%d-END", n+1)
	g.mu.Lock()
	from := g.out.Len()
	g.mu.Unlock()
	line := fmt.Sprintf("%s; echo END-$((%d+1))-END\n", command, n)
	if _, err := io.WriteString(g.stdin, line); err != nil {
		g.t.Fatalf("type %q: %v", command, err)
	}
	to, ok := g.waitForFrom(from, end, commandTimeout)
	if !ok {
		g.t.Fatalf("command %q did not finish within %v", command, commandTimeout)
	}
	return g.output()[from:to]
}

// checkGuest runs the checks every booted image must pass.
func checkGuest(t *testing.T, g *guest) {
	word := fmt.Sprintf("%08x", rand.Uint32())
	if out := g.run("echo hello-$((6*7))-" + word); !strings.Contains(out, "hello-42-"+word) {
		t.Errorf("echo command printed %q, want hello-42-%s", out, word)
	}

	out := g.run("grep ' /mnt ' /proc/mounts")
	if !strings.Contains(out, "/dev/vda /mnt ext4 rw") {
		t.Errorf("/dev/vda is not mounted read-write on /mnt:\n%s", out)
	}
	out = g.run("echo " + word + " >/mnt/probe && sync && cat /mnt/probe && rm /mnt/probe && echo write-$((2+2))")
	if !strings.Contains(out, "write-4") {
		t.Errorf("cannot write to /mnt:\n%s", out)
	}
	out = g.run("cat /mnt/README | head -1; cat /mnt/etc/hostname; hostname")
	if !strings.Contains(out, "This is the disk of an sbuml machine.") || strings.Count(out, "sbuml\r\n") < 2 {
		t.Errorf("disk contents or host name wrong:\n%s", out)
	}
	out = g.run("echo tmp > /tmp/probe && grep ' /tmp ' /proc/mounts")
	if !strings.Contains(out, "tmpfs /tmp tmpfs rw") {
		t.Errorf("/tmp is not a writable tmpfs:\n%s", out)
	}

	for _, m := range image.DefaultModules {
		out := g.run("test -d /sys/module/" + m + " && echo loaded-$((1))-" + m)
		if !strings.Contains(out, "loaded-1-"+m) {
			t.Errorf("module %s not loaded:\n%s", m, out)
		}
	}
	out = g.run("ls /sys/bus/virtio/drivers")
	for _, d := range []string{"virtio_blk", "virtio_console", "virtio_net"} {
		if !strings.Contains(out, d) {
			t.Errorf("virtio driver %s not registered:\n%s", d, out)
		}
	}
	// The network card got its address, route and DNS server by DHCP
	// from QEMU's user-mode network.
	out = g.run("ip -4 addr show eth0; ip route; cat /etc/resolv.conf")
	for _, want := range []string{"inet 10.0.2.15/24", "default via 10.0.2.2 dev eth0", "nameserver 10.0.2.3"} {
		if !strings.Contains(out, want) {
			t.Errorf("network not configured: no %q in\n%s", want, out)
		}
	}
	// Without a display adapter, init keeps no shell on tty1.
	if out := g.run("grep -c tty1 /etc/inittab"); !strings.Contains(out, "\n0\r") {
		t.Errorf("/etc/inittab has a tty1 line without a display:\n%s", out)
	}
	// Job control needs the console as controlling terminal (cttyhack).
	out = g.run("sleep 30 & jobs; kill %1")
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
	before, _, _ := strings.Cut(g.output(), img.ReadyMarker)
	if !strings.Contains(before, "rc-hook-9 sbuml") {
		t.Errorf("rc.d script on the disk did not run before the ready marker:\n%s", before)
	}
	checkGuest(t, g)
	g.poweroff()

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
	if out := g.output(); !strings.Contains(out, "sbuml-init: no disk /dev/vda") {
		t.Errorf("no message about the missing disk:\n%s", out)
	}
	if out := g.run("echo up-$((1+1))"); !strings.Contains(out, "up-2") {
		t.Errorf("shell does not answer:\n%s", out)
	}
	g.poweroff()
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
	out := g.run("free -m | grep Mem")
	var total int
	if _, err := fmt.Sscanf(strings.TrimSpace(out[strings.Index(out, "Mem:"):]), "Mem: %d", &total); err != nil || total < 400 {
		t.Errorf("guest sees %d MiB of RAM, want about 512 (%v):\n%s", total, err, out)
	}
	g.poweroff()
}

// poweroff shuts the guest down from its shell and waits for QEMU to exit,
// which proves busybox init handles poweroff and the disk unmounts.
func (g *guest) poweroff() {
	g.t.Helper()
	if _, err := io.WriteString(g.stdin, "poweroff\n"); err != nil {
		g.t.Fatalf("type poweroff: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- g.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			g.t.Errorf("QEMU exited with %v after poweroff", err)
		}
	case <-time.After(commandTimeout):
		g.t.Errorf("QEMU still running %v after poweroff", commandTimeout)
	}
}
