package vmm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
)

// NetUser is the Net.Mode of QEMU's user-mode network stack (slirp): the
// guest gets 10.0.2.15 by DHCP, reaches the host's loopback as 10.0.2.2
// and a DNS forwarder at 10.0.2.3, and the host reaches the guest only
// through Forwards. It needs no privileges.
const NetUser = "user"

// DefaultForwardAddr is the host address a Forward listens on when its
// HostAddr is empty: only the host itself can connect.
const DefaultForwardAddr = "127.0.0.1"

// netdevID names the user-mode network backend on QEMU's command line and
// in set_link.
const netdevID = "net0"

// Net is a machine's network card and how QEMU connects it to the host.
// The card is a virtio-net PCI device.
type Net struct {
	// Mode is how the card reaches the outside: NetUser is the only mode.
	Mode string `json:"mode"`
	// MAC is the card's address, e.g. "52:54:00:12:34:56". Boot makes up
	// a locally administered one when it is empty. The guest's driver
	// holds it in its saved state, so a restored machine keeps it.
	MAC string `json:"mac"`
	// Forwards are TCP ports of the host forwarded to ports of the guest.
	Forwards []Forward `json:"forwards,omitempty"`
}

// Forward forwards connections to a TCP port of the host to a TCP port of
// the guest.
type Forward struct {
	HostAddr  string `json:"host_addr"`  // IP address to listen on; default DefaultForwardAddr
	HostPort  int    `json:"host_port"`  // 0: any free port, chosen at boot and recorded
	GuestPort int    `json:"guest_port"` // 1 to 65535
}

// String returns f in the form ParseForward reads, e.g. "127.0.0.1:8080:80".
func (f Forward) String() string {
	addr := f.HostAddr
	if strings.Contains(addr, ":") {
		addr = "[" + addr + "]"
	}
	return addr + ":" + strconv.Itoa(f.HostPort) + ":" + strconv.Itoa(f.GuestPort)
}

// ParseForward reads a forward written "[HOSTADDR:]HOSTPORT:GUESTPORT", as
// in "8080:80", "127.0.0.1:0:22" or "[::1]:8080:80". HOSTADDR is an IPv4
// address or an IPv6 address in brackets, DefaultForwardAddr if left out;
// HOSTPORT 0 means any free port.
func ParseForward(s string) (Forward, error) {
	f, err := parseForward(s)
	if err != nil {
		return Forward{}, fmt.Errorf("port forward %q: %v; want [HOSTADDR:]HOSTPORT:GUESTPORT, e.g. 8080:80 or 127.0.0.1:0:22", s, err)
	}
	return f, nil
}

func parseForward(s string) (Forward, error) {
	f := Forward{HostAddr: DefaultForwardAddr}
	rest := s
	if strings.HasPrefix(s, "[") {
		addr, after, ok := strings.Cut(s[1:], "]:")
		if !ok {
			return f, errors.New("an IPv6 address in brackets must be followed by :HOSTPORT")
		}
		f.HostAddr, rest = addr, after
	}
	parts := strings.Split(rest, ":")
	switch {
	case len(parts) == 3 && rest == s:
		f.HostAddr, parts = parts[0], parts[1:]
	case len(parts) == 2:
	case rest == s && (len(parts) > 4 || strings.Contains(s, "::")):
		return f, errors.New("an IPv6 host address goes in brackets")
	case len(parts) < 2:
		return f, errors.New("too few parts")
	default:
		return f, errors.New("too many parts")
	}
	var err error
	if f.HostPort, err = parsePort(parts[0]); err != nil {
		return f, fmt.Errorf("host port: %v", err)
	}
	if f.GuestPort, err = parsePort(parts[1]); err != nil {
		return f, fmt.Errorf("guest port: %v", err)
	}
	return f, f.check(rest != s)
}

func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || s[0] == '+' || s[0] == '-' {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	return n, nil
}

// check validates a forward; bracketed says whether its address was
// written in brackets, which IPv6 addresses need and IPv4 ones must not
// have.
func (f Forward) check(bracketed bool) error {
	a, err := netip.ParseAddr(f.HostAddr)
	switch {
	case err != nil || a.Zone() != "":
		return fmt.Errorf("host address %q is not an IP address", f.HostAddr)
	case bracketed && !a.Is6():
		return fmt.Errorf("host address %q in brackets is not IPv6", f.HostAddr)
	case f.HostPort < 0 || f.HostPort > 65535:
		return fmt.Errorf("host port %d is out of range 0-65535", f.HostPort)
	case f.GuestPort < 1 || f.GuestPort > 65535:
		return fmt.Errorf("guest port %d is out of range 1-65535", f.GuestPort)
	}
	return nil
}

// clone returns a deep copy, so that Boot and Config never share forwards
// with their caller.
func (n *Net) clone() *Net {
	if n == nil {
		return nil
	}
	c := *n
	c.Forwards = append([]Forward(nil), n.Forwards...)
	return &c
}

// setDefaults makes up a MAC address and fills in forward addresses.
func (n *Net) setDefaults() {
	if n.MAC == "" {
		n.MAC = fmt.Sprintf("52:54:00:%02x:%02x:%02x", rand.IntN(256), rand.IntN(256), rand.IntN(256))
	}
	for i := range n.Forwards {
		if n.Forwards[i].HostAddr == "" {
			n.Forwards[i].HostAddr = DefaultForwardAddr
		}
	}
}

func (n *Net) validate() error {
	if n.Mode != NetUser {
		return fmt.Errorf("network mode %q: want %q", n.Mode, NetUser)
	}
	mac, err := net.ParseMAC(n.MAC)
	if err != nil || len(mac) != 6 || mac[0]&1 != 0 || mac.String() != strings.ToLower(n.MAC) {
		return fmt.Errorf("MAC address %q: want six hex bytes, e.g. 52:54:00:12:34:56, not a multicast one", n.MAC)
	}
	for _, f := range n.Forwards {
		if err := f.check(false); err != nil {
			return fmt.Errorf("port forward %s: %v", f, err)
		}
	}
	return nil
}

// checkHostPorts fails if a forward's fixed host port cannot be listened
// on, naming the port. QEMU would only say that it could not set up the
// rule, not why.
func (n *Net) checkHostPorts() error {
	for _, f := range n.Forwards {
		if f.HostPort == 0 {
			continue
		}
		addr := net.JoinHostPort(f.HostAddr, strconv.Itoa(f.HostPort))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("port forward %s: host port %s is already in use: choose another, or 0 for any free port", f, addr)
			}
			return fmt.Errorf("port forward %s: cannot listen on %s: %v", f, addr, err)
		}
		ln.Close()
	}
	return nil
}

// args returns QEMU's arguments for the card and its user-mode network.
// The card has no option ROM: machines boot their kernel directly, so its
// network boot code would only take space in every saved device state.
func (n *Net) args() []string {
	netdev := "user,id=" + netdevID
	for _, f := range n.Forwards {
		addr := f.HostAddr
		if strings.Contains(addr, ":") {
			addr = "[" + addr + "]"
		}
		netdev += ",hostfwd=tcp:" + addr + ":" + strconv.Itoa(f.HostPort) + "-:" + strconv.Itoa(f.GuestPort)
	}
	return []string{
		"-netdev", netdev,
		"-device", "virtio-net-pci,netdev=" + netdevID + ",mac=" + n.MAC + ",romfile=",
	}
}

// hostForward is a listening socket of QEMU's user-mode stack, as
// "info usernet" shows it.
type hostForward struct {
	addr      string // "*" for any address
	port      int
	guestPort int
}

// parseUsernet reads the TCP host forwards from the output of the monitor
// command "info usernet":
//
//	Hub -1 (net0):
//	  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ
//	  TCP[HOST_FORWARD]  11       127.0.0.1 43173       10.0.2.15    80     0     0
func parseUsernet(out string) []hostForward {
	var fwds []hostForward
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[0] != "TCP[HOST_FORWARD]" {
			continue
		}
		port, err1 := strconv.Atoi(f[3])
		guest, err2 := strconv.Atoi(f[5])
		if err1 == nil && err2 == nil {
			fwds = append(fwds, hostForward{addr: f[2], port: port, guestPort: guest})
		}
	}
	return fwds
}

// assignPorts replaces the host port 0 of each forward by the port QEMU
// listens on for it. Forwards that differ only in their port 0 are
// interchangeable, so the order QEMU lists them in does not matter.
func (n *Net) assignPorts(listening []hostForward) error {
	matches := func(f Forward, l hostForward) bool {
		addr := f.HostAddr
		if addr == "0.0.0.0" {
			addr = "*"
		}
		return l.addr == addr && l.guestPort == f.GuestPort && (f.HostPort == 0 || l.port == f.HostPort)
	}
	taken := make([]bool, len(listening))
	// Fixed ports first, so a port 0 forward cannot take their socket.
	for _, fixed := range []bool{true, false} {
		for i, f := range n.Forwards {
			if (f.HostPort != 0) != fixed {
				continue
			}
			j := 0
			for j < len(listening) && (taken[j] || !matches(f, listening[j])) {
				j++
			}
			if j == len(listening) {
				return fmt.Errorf("port forward %s: qemu's user network does not listen for it", f)
			}
			taken[j] = true
			n.Forwards[i].HostPort = listening[j].port
		}
	}
	return nil
}

// learnHostPorts asks QEMU which host ports it chose for the forwards with
// host port 0 and records them in the machine's Config and config.json.
func (m *Machine) learnHostPorts(ctx context.Context) error {
	if m.cfg.Net == nil || !anyFreePort(m.cfg.Net.Forwards) {
		return nil
	}
	raw, err := m.qmp.Execute(ctx, "human-monitor-command", map[string]string{"command-line": "info usernet"})
	if err != nil {
		return fmt.Errorf("learn forwarded host ports: %w", err)
	}
	var out string
	if err := json.Unmarshal(raw, &out); err != nil {
		return fmt.Errorf("learn forwarded host ports: info usernet reply %s: %w", raw, err)
	}
	if err := m.cfg.Net.assignPorts(parseUsernet(out)); err != nil {
		return fmt.Errorf("learn forwarded host ports: %w", err)
	}
	return writeConfig(m.dir, &m.cfg)
}

func anyFreePort(fwds []Forward) bool {
	for _, f := range fwds {
		if f.HostPort == 0 {
			return true
		}
	}
	return false
}

// SetLink plugs the network cable in (up) or pulls it out. The guest's
// driver sees the carrier change, as on real hardware.
func (m *Machine) SetLink(ctx context.Context, up bool) error {
	if m.cfg.Net == nil {
		return fmt.Errorf("set link of %s: the machine has no network card", m.cfg.Name)
	}
	q, err := m.QMP(ctx)
	if err != nil {
		return fmt.Errorf("set link: %w", err)
	}
	if _, err := q.Execute(ctx, "set_link", map[string]any{"name": netdevID, "up": up}); err != nil {
		return fmt.Errorf("set link of %s: %w", m.cfg.Name, m.explain(err))
	}
	return nil
}
