package sbuml

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sbuml/sbuml/agent"
	"github.com/sbuml/sbuml/vmm"
)

// SSHCommand returns the ssh command line that logs into a running
// machine as root through the host port forwarded to its port 22, with
// the scrapbook's own key (see SSHKey), followed by cmd if given. Through
// the guest's agent, the key is added to root's authorized keys (a
// machine may come from an image another scrapbook built) and the
// guest's host keys are read and pinned, so there is no prompt and no
// entry in ~/.ssh/known_hosts. A machine without an agent must have the
// key already, and is reached without checking its host key, as Vagrant
// does for the machines it makes (the connection goes to this host's
// loopback only).
func (s *Scrapbook) SSHCommand(ctx context.Context, machine string, cmd []string) ([]string, error) {
	argv, err := s.sshCommand(ctx, machine, cmd)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", machine, err)
	}
	return argv, nil
}

func (s *Scrapbook) sshCommand(ctx context.Context, machine string, cmd []string) ([]string, error) {
	sshPath, err := exec.LookPath("ssh")
	if err != nil {
		return nil, fmt.Errorf("ssh not found: apt-get install openssh-client")
	}
	dir, err := s.existingMachineDir(machine)
	if err != nil {
		return nil, err
	}
	cfg, err := vmm.LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	host, port, err := sshForward(cfg)
	if err != nil {
		return nil, err
	}
	key, pub, err := s.SSHKey()
	if err != nil {
		return nil, err
	}
	argv := []string{sshPath, "-i", key, "-p", strconv.Itoa(port),
		"-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
		"-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15"}
	if known, err := s.prepareGuestSSH(ctx, machine, dir, pub, host, port); err == nil {
		argv = append(argv, "-o", "UserKnownHostsFile="+known, "-o", "StrictHostKeyChecking=yes")
	} else {
		argv = append(argv, "-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no")
	}
	argv = append(argv, "root@"+host)
	return append(argv, cmd...), nil
}

// sshForward finds the host address and port forwarded to the guest's
// port 22.
func sshForward(cfg *vmm.Config) (string, int, error) {
	if cfg.Net == nil {
		return "", 0, fmt.Errorf("the machine has no network card: boot it with --net user --forward 0:22")
	}
	for _, f := range cfg.Net.Forwards {
		if f.GuestPort == 22 && f.HostPort != 0 {
			host := f.HostAddr
			if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
				host = "127.0.0.1"
			}
			return host, f.HostPort, nil
		}
	}
	return "", 0, fmt.Errorf("no host port is forwarded to the machine's port 22: boot or check it out with --forward 0:22")
}

// sshKnownHosts, in a machine directory, pins the guest's ssh host keys.
const sshKnownHosts = "ssh_known_hosts"

// prepareGuestSSH adds the scrapbook's public key to root's authorized
// keys in the guest, through its agent, reads the guest's ssh host keys,
// and writes a known_hosts file for [host]:port in the machine directory.
func (s *Scrapbook) prepareGuestSSH(ctx context.Context, machine, dir, pub, host string, port int) (string, error) {
	g, err := s.Guest(ctx, machine)
	if err != nil {
		return "", err
	}
	defer g.Close()
	const script = `umask 077; mkdir -p /root/.ssh
grep -qxF "$1" /root/.ssh/authorized_keys 2>/dev/null || echo "$1" >> /root/.ssh/authorized_keys
cat /etc/ssh/ssh_host_*_key.pub`
	var out bytes.Buffer
	code, err := agent.Run(ctx, g, agent.ExecRequest{Argv: []string{"sh", "-c", script, "sh", strings.TrimSpace(pub)}}, nil, &out, io.Discard)
	if err != nil || code != 0 {
		return "", fmt.Errorf("no host keys read")
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if f := strings.Fields(l); len(f) >= 2 {
			lines = append(lines, fmt.Sprintf("[%s]:%d %s %s", host, port, f[0], f[1]))
		}
	}
	if len(lines) == 0 {
		return "", fmt.Errorf("no host keys read")
	}
	known := filepath.Join(dir, sshKnownHosts)
	return known, os.WriteFile(known, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}
