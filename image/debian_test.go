package image_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sbuml/sbuml/image"
	"github.com/sbuml/sbuml/internal/testimage"
)

// debianBootTimeout bounds how long the Debian guest may take to print the
// ready marker: about 20 s on an idle host under TCG, more when other
// guests share the two cores.
const debianBootTimeout = 3 * time.Minute

// freePort returns a TCP port on 127.0.0.1 that nothing listens on right
// now, for a QEMU host forward.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// bootDebian boots img by its kernel with the console on pipes, a virtio
// network card on QEMU's user network with host port sshPort forwarded
// to the guest's port 22, and waits for the ready marker.
func bootDebian(t *testing.T, img *image.Image, sshPort int) *guest {
	t.Helper()
	return testimage.BootConsole(t, img, debianBootTimeout,
		"-machine", "q35", "-cpu", "qemu64,-svm", "-m", "512M",
		"-nic", fmt.Sprintf("user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:%d-:22", sshPort))
}

// sshRun runs a command in the guest over ssh as root with the test key.
func sshRun(t *testing.T, port int, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	base := []string{"-i", testimage.DebianKey(t), "-p", strconv.Itoa(port),
		"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "LogLevel=ERROR", "-o", "ConnectTimeout=50"}
	out, err := exec.CommandContext(ctx, "ssh", append(base, args...)...).CombinedOutput()
	return string(out), err
}

// TestDebianBoot builds (once per host) and boots the Debian image under
// TCG: root's shell on the serial console, systemd with no failed unit,
// DHCP on eth0, the host reachable from the guest, ssh by key only, and a
// clean file system after poweroff.
func TestDebianBoot(t *testing.T) {
	t.Parallel()
	img := testimage.Debian(t)
	if !img.Net || !img.SSH || !img.Agent || img.Boot != image.BootKernel {
		t.Errorf("Debian image flags: boot %q, net %v, ssh %v, agent %v", img.Boot, img.Net, img.SSH, img.Agent)
	}
	port := freePort(t)
	g := bootDebian(t, img, port)

	if out := g.Run("uname -a; id -u"); !strings.Contains(out, "Linux sbuml "+img.KernelVersion) || !strings.Contains(out, "\n0\r") {
		t.Errorf("uname -a; id -u on the console printed:\n%s", out)
	}
	// Boot ends (is-system-running stops waiting) once DHCP is done.
	if out := g.Run("echo state-$(systemctl is-system-running --wait)"); !strings.Contains(out, "state-running") {
		t.Errorf("systemd is not running cleanly:\n%s%s", out, g.Run("systemctl --failed"))
	}
	checks := []struct{ command, want string }{
		{"findmnt -no SOURCE,FSTYPE,OPTIONS / | tr -s ' '", "/dev/vda ext4 rw,noatime"},
		{"ip -4 -o addr show eth0", "inet 10.0.2.15/24"},
		{"systemctl is-enabled apt-daily.timer networking.service getty-static.service", "disabled\r\ndisabled\r\nmasked"},
		{"test -s /etc/ssh/ssh_host_ed25519_key && echo host-key-$((1+1))", "host-key-2"},
	}
	for _, c := range checks {
		if out := g.Run(c.command); !strings.Contains(out, c.want) {
			t.Errorf("%s printed %q, want %q", c.command, out, c.want)
		}
	}
	checkDebianNetwork(t, g, port)
	g.PowerOff()
	if out, err := exec.Command("e2fsck", "-f", "-n", img.Disk).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn after poweroff: %v\n%s", err, out)
	}
}

// checkDebianNetwork fetches a page from a server on the host's
// loopback through QEMU's user network, and logs in by ssh with the test
// key (and not with a password).
func checkDebianNetwork(t *testing.T, g *guest, sshPort int) {
	word := fmt.Sprintf("%08x", rand.Uint32())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "page-"+word) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	url := fmt.Sprintf("http://10.0.2.2:%d/", ln.Addr().(*net.TCPAddr).Port)
	if out := g.Run("wget -qO- " + url); !strings.Contains(out, "page-"+word) {
		t.Errorf("the guest did not fetch %s from the host:\n%s", url, out)
	}

	start := time.Now()
	out, err := sshRun(t, sshPort, "root@127.0.0.1", "echo ssh-$((6*7)); hostname")
	if err != nil || !strings.Contains(out, "ssh-42\nsbuml\n") {
		t.Errorf("ssh with the test key: %v\n%s", err, out)
	}
	t.Logf("ssh login and command took %v", time.Since(start).Round(100*time.Millisecond))
	out, err = sshRun(t, sshPort, "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive", "root@127.0.0.1", "true")
	if err == nil || !strings.Contains(out, "Permission denied (publickey)") {
		t.Errorf("ssh without a key: %v, want Permission denied (publickey):\n%s", err, out)
	}
}
