package testimage

import (
	"bytes"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbuml/sbuml/image"
)

// CommandTimeout bounds how long one shell command may take in a guest.
const CommandTimeout = 20 * time.Second

// A Console is a guest QEMU runs straight from an image, without package
// vmm, its serial console on pipes: the tests of package image boot the
// images it builds so. It is the one guest-boot helper for them.
type Console struct {
	t     testing.TB
	cmd   *exec.Cmd
	stdin io.WriteCloser

	mu     sync.Mutex
	out    bytes.Buffer  // everything the console printed
	update chan struct{} // closed and replaced when out grows or QEMU exits
	done   bool          // QEMU's output has ended
	seq    int           // numbers command end markers
}

// BootConsole starts QEMU under TCG on QEMU's default machine on img (by
// its kernel; its disk, if any, on virtio), with args added (the machine,
// memory, a network card...), and waits
// up to timeout for img.ReadyMarker. QEMU is killed when the test ends;
// if it failed, the console output is logged.
func BootConsole(t testing.TB, img *image.Image, timeout time.Duration, args ...string) *Console {
	t.Helper()
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("qemu-system-x86_64 is needed to boot the image (apt-get install qemu-system-x86): %v", err)
	}
	base := []string{
		"-accel", "tcg", "-nodefaults", "-display", "none", "-no-reboot",
		"-serial", "stdio", "-monitor", "none",
		"-kernel", img.Kernel, "-initrd", img.Initrd, "-append", img.Cmdline,
	}
	if img.Disk != "" {
		base = append(base, "-drive", "file="+img.Disk+",format=raw,if=virtio")
	}
	c := &Console{t: t, update: make(chan struct{})}
	c.cmd = exec.Command(qemu, append(base, args...)...)
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.cmd.Stderr = c.cmd.Stdout
	start := time.Now()
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", qemu, err)
	}
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		c.cmd.Wait()
		if t.Failed() {
			t.Logf("console output:\n%s", c.Output())
		}
	})
	go c.read(stdout)
	if !c.WaitFor(img.ReadyMarker, timeout) {
		t.Fatalf("no ready marker %q within %v", img.ReadyMarker, timeout)
	}
	t.Logf("ready marker after %v", time.Since(start).Round(time.Millisecond))
	return c
}

// read copies QEMU's output into c.out until it ends.
func (c *Console) read(r io.Reader) {
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		c.mu.Lock()
		c.out.Write(buf[:n])
		if err != nil {
			c.done = true
		}
		close(c.update)
		c.update = make(chan struct{})
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Output returns everything the console printed so far.
func (c *Console) Output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

// waitFrom waits until the console output after offset from contains s,
// and returns the offset just after it.
func (c *Console) waitFrom(from int, s string, timeout time.Duration) (int, bool) {
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		if i := strings.Index(c.out.String()[from:], s); i >= 0 {
			c.mu.Unlock()
			return from + i + len(s), true
		}
		done, update := c.done, c.update
		c.mu.Unlock()
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

// WaitFor waits up to timeout until the console has printed s.
func (c *Console) WaitFor(s string, timeout time.Duration) bool {
	_, ok := c.waitFrom(0, s, timeout)
	return ok
}

// Run types a shell command line into the console and returns what the
// console printed until the command finished. The end marker is computed
// by the shell, so the echo of the typed line cannot match it.
func (c *Console) Run(command string) string {
	c.t.Helper()
	c.seq++
	n := 1000 + c.seq
	end := fmt.Sprintf("END-%d-END", n+1)
	c.mu.Lock()
	from := c.out.Len()
	c.mu.Unlock()
	line := fmt.Sprintf("%s; echo END-$((%d+1))-END\n", command, n)
	if _, err := io.WriteString(c.stdin, line); err != nil {
		c.t.Fatalf("type %q: %v", command, err)
	}
	to, ok := c.waitFrom(from, end, CommandTimeout)
	if !ok {
		c.t.Fatalf("command %q did not finish within %v", command, CommandTimeout)
	}
	return c.Output()[from:to]
}

// PowerOff shuts the guest down from its shell and waits for QEMU to
// exit, which proves its init handles poweroff and unmounts its disk.
func (c *Console) PowerOff() {
	c.t.Helper()
	if _, err := io.WriteString(c.stdin, "poweroff\n"); err != nil {
		c.t.Fatalf("type poweroff: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- c.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			c.t.Errorf("QEMU exited with %v after poweroff", err)
		}
	case <-time.After(CommandTimeout):
		c.t.Errorf("QEMU still running %v after poweroff", CommandTimeout)
	}
}
