package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// PortName is the name QEMU gives the agent's virtio-serial port
// (vmm.AgentPortName).
const PortName = "org.sbuml.agent.0"

// FindPort returns the device of the virtio-serial port named name, such
// as /dev/vport1p1, from /sys/class/virtio-ports/*/name.
func FindPort(name string) (string, error) {
	names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err == nil && strings.TrimSpace(string(b)) == name {
			return "/dev/" + filepath.Base(filepath.Dir(n)), nil
		}
	}
	return "", fmt.Errorf("no virtio-serial port named %s (is the virtio_console module loaded, and the machine booted with its agent port?)", name)
}

// Port is the guest end of the agent's virtio-serial port. While no host
// program is connected to the socket QEMU serves it on, reads return
// io.EOF and writes block; Port turns each connected period into a link.
type Port struct {
	f *os.File
}

// OpenPort opens the port device. It is opened non-blocking, so that the
// runtime's poller can interrupt its reads and writes when a link ends.
func OpenPort(dev string) (*Port, error) {
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open agent port %s: %w", dev, err)
	}
	return &Port{f: os.NewFile(uintptr(fd), dev)}, nil
}

// Close closes the device.
func (p *Port) Close() error { return p.f.Close() }

// hostPoll is how often WaitHost looks for a host: the port gives no
// event when one connects, only POLLHUP until then.
const hostPoll = 50 * time.Millisecond

// WaitHost waits until a host program is connected to the port.
func (p *Port) WaitHost(ctx context.Context) error {
	for {
		var revents int16
		err := control(p.f, func(fd int) error {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			_, err := unix.Poll(fds, 0)
			revents = fds[0].Revents
			return err
		})
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll agent port %s: %w", p.f.Name(), err)
		}
		if err == nil && revents&unix.POLLHUP == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(hostPoll):
		}
	}
}

// link returns the port as a link for Daemon.Serve: closing it makes
// blocked reads and writes return, without closing the device.
func (p *Port) link() (io.ReadWriteCloser, error) {
	if err := p.f.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("agent port %s: %w", p.f.Name(), err)
	}
	return portLink{p.f}, nil
}

type portLink struct{ f *os.File }

func (l portLink) Read(b []byte) (int, error)  { return l.f.Read(b) }
func (l portLink) Write(b []byte) (int, error) { return l.f.Write(b) }
func (l portLink) Close() error                { return l.f.SetDeadline(time.Now()) }

// Run serves the host over the port, one link per connected period,
// until ctx ends.
func (d *Daemon) Run(ctx context.Context, p *Port) error {
	for {
		if err := p.WaitHost(ctx); err != nil {
			return err
		}
		l, err := p.link()
		if err != nil {
			return err
		}
		start := time.Now()
		err = d.Serve(ctx, l)
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if err != io.EOF {
			d.logf("link to the host ended: %v", err)
		}
		// A link that fails at once must not spin.
		if time.Since(start) < time.Second {
			select {
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-time.After(time.Second):
			}
		}
	}
}
