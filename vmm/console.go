package vmm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// EscapeChar starts an escape sequence in Attach: Ctrl-] (0x1d). Ctrl-]
// followed by 'q' or '.' detaches; Ctrl-] typed twice sends one Ctrl-] to
// the guest.
const EscapeChar = 0x1d

// After the end of its input, Attach copies guest output until the guest
// has been quiet for AttachQuiet, for at most AttachLinger.
const (
	AttachQuiet  = time.Second
	AttachLinger = 5 * time.Second
)

// lineKill is the character that erases the line being typed (Ctrl-U).
const lineKill = 0x15

// ErrConsoleClosed is returned by Attach when QEMU closes the console,
// which it does when it exits.
var ErrConsoleClosed = errors.New("console closed")

// console is this process's connection to the machine's serial console.
// QEMU serves one console client at a time; the connection is kept open
// while the Machine is, and whatever the guest prints is read continuously
// (and dropped unless someone is attached), so the guest never blocks on a
// full socket. console.log records everything regardless.
type console struct {
	conn *net.UnixConn
	mu   sync.Mutex
	out  io.Writer
	done chan struct{}
	// lastOutput is when the guest last printed (UnixNano).
	lastOutput atomic.Int64
}

func (m *Machine) console(ctx context.Context) (*console, error) {
	m.mu.Lock()
	if m.con != nil {
		select {
		case <-m.con.done:
			m.con = nil
		default:
			defer m.mu.Unlock()
			return m.con, nil
		}
	}
	shared := m.conLock != nil
	m.mu.Unlock()
	if shared {
		// The lock was given up for the console (ShareConsole), which
		// has closed: QEMU exited.
		return nil, fmt.Errorf("console of %s: %w", m.cfg.Name, ErrConsoleClosed)
	}
	// Check QEMU first; this also fails cleanly on a halted machine.
	if _, err := m.QMP(ctx); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.con != nil {
		return m.con, nil
	}
	ctx, cancel := withDefaultTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := dialUnix(ctx, filepath.Join(m.dir, ConsoleSocket))
	if err != nil {
		return nil, fmt.Errorf("connect console of %s: %w", m.cfg.Name, err)
	}
	c := &console{conn: conn, out: io.Discard, done: make(chan struct{})}
	go c.readLoop()
	m.con = c
	return c, nil
}

func (c *console) readLoop() {
	defer close(c.done)
	buf := make([]byte, 32<<10)
	for {
		n, err := c.conn.Read(buf)
		if n > 0 {
			c.lastOutput.Store(time.Now().UnixNano())
			c.mu.Lock()
			if _, werr := c.out.Write(buf[:n]); werr != nil {
				c.out = io.Discard
			}
			c.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

func (c *console) setOut(w io.Writer) {
	c.mu.Lock()
	c.out = w
	c.mu.Unlock()
}

func (c *console) close() {
	c.conn.Close()
	<-c.done
}

// settle waits until the guest has printed nothing for quiet since settle
// was called, or for at most limit, or until the console closes.
func (c *console) settle(ctx context.Context, quiet, limit time.Duration) error {
	start := time.Now()
	deadline := start.Add(limit)
	for {
		last := time.Unix(0, c.lastOutput.Load())
		if last.Before(start) {
			last = start
		}
		idle := time.Since(last)
		if idle >= quiet || !time.Now().Before(deadline) {
			return nil
		}
		wait := min(quiet-idle, time.Until(deadline))
		select {
		case <-time.After(wait):
		case <-c.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// drain waits until QEMU has read everything written to the console, or
// for at most limit.
func (c *console) drain(ctx context.Context, limit time.Duration) error {
	raw, err := c.conn.SyscallConn()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(limit)
	for {
		var queued int
		var qerr error
		if err := raw.Control(func(fd uintptr) { queued, qerr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil {
			return err
		}
		if qerr != nil || queued == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the guest did not take the typed input within %v (%d bytes left): is it stuck?", limit, queued)
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-c.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *console) write(ctx context.Context, b []byte) error {
	if d, ok := ctx.Deadline(); ok {
		c.conn.SetWriteDeadline(d)
		defer c.conn.SetWriteDeadline(time.Time{})
	}
	_, err := c.conn.Write(b)
	return err
}

// ErrConsoleBusy is wrapped by the error of ShareConsole when another
// process shows the console already: QEMU serves one console client.
var ErrConsoleBusy = errors.New("the console is attached in another sbuml process")

// ShareConsole connects the serial console, then gives up the machine's
// lock and QMP connection and keeps only the console: other processes
// can then halt, freeze, continue or commit the machine while this one
// shows its console, which ends when QEMU exits. A second ShareConsole,
// in another process, fails with ErrConsoleBusy. Afterwards the Machine
// is good for its console only (Attach, SendLine) and Close.
func (m *Machine) ShareConsole(ctx context.Context) error {
	conLock, err := lockFile(m.dir, ConsoleLock, ErrConsoleBusy, lockWait)
	if err != nil {
		return err
	}
	if _, err := m.console(ctx); err != nil {
		conLock.unlock()
		return fmt.Errorf("console of %s: %w", m.cfg.Name, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.qmp != nil {
		m.qmp.Close()
		m.qmp = nil
	}
	m.lock.unlock()
	m.conLock = conLock
	return nil
}

// SendLine types line followed by a newline on the serial console.
func (m *Machine) SendLine(ctx context.Context, line string) error {
	c, err := m.console(ctx)
	if err != nil {
		return fmt.Errorf("send to console: %w", err)
	}
	if err := c.write(ctx, []byte(line+"\n")); err != nil {
		return fmt.Errorf("send to console of %s: %w", m.cfg.Name, err)
	}
	return nil
}

// Attach connects in and out to the serial console until the user types
// the escape sequence (Ctrl-] then q), in ends, ctx is done or QEMU closes
// the console. Guest output goes to out; bytes read from in go to the
// guest. For an interactive terminal, put it in raw mode first (MakeRaw).
//
// Attach returns nil on detach or end of input. At the end of input it
// first waits until the guest has taken every byte, then goes on copying
// what the guest prints until it has been quiet for AttachQuiet (at most
// AttachLinger). Scripts typing commands use Type, which never leaves a
// line half taken. A read from in that is still blocked when Attach
// returns is abandoned; its data is dropped.
func (m *Machine) Attach(ctx context.Context, in io.Reader, out io.Writer) error {
	c, err := m.console(ctx)
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	c.setOut(out)
	defer c.setOut(io.Discard)

	stop := make(chan struct{})
	defer close(stop)
	input := make(chan []byte)
	inErr := make(chan error, 1)
	go func() {
		for {
			buf := make([]byte, 4096)
			n, err := in.Read(buf)
			if n > 0 {
				select {
				case input <- buf[:n]:
				case <-stop:
					return
				}
			}
			if err != nil {
				inErr <- err
				return
			}
		}
	}()

	var esc escaper
	for {
		select {
		case b := <-input:
			send, detach := esc.filter(b)
			if len(send) > 0 {
				if err := c.write(ctx, send); err != nil {
					return fmt.Errorf("attach %s: write console: %w", m.cfg.Name, err)
				}
			}
			if detach {
				return nil
			}
		case err := <-inErr:
			if errors.Is(err, io.EOF) {
				// QEMU takes input only as fast as the guest's UART does,
				// and drops what it has not read when the client goes:
				// wait until the guest has had every byte.
				if err := c.drain(ctx, 30*time.Second); err != nil {
					return err
				}
				return c.settle(ctx, AttachQuiet, AttachLinger)
			}
			return fmt.Errorf("attach %s: read input: %w", m.cfg.Name, err)
		case <-c.done:
			return fmt.Errorf("attach %s: %w", m.cfg.Name, ErrConsoleClosed)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Type types the lines of in on the serial console, as a script would,
// and copies what the guest prints to out until it has been quiet for
// AttachQuiet after the last line (at most AttachLinger). Each line goes
// in two steps: its text, which the guest must take within AttachLinger,
// then its newline. A guest that does not take a line's text (stuck, or
// frozen) gets a line kill (Ctrl-U) after it instead of the newline, so
// the line never runs, neither now nor when the guest takes input again
// (it would otherwise run into what is typed next), and Type fails.
func (m *Machine) Type(ctx context.Context, in io.Reader, out io.Writer) error {
	c, err := m.console(ctx)
	if err != nil {
		return fmt.Errorf("type on the console: %w", err)
	}
	c.setOut(out)
	defer c.setOut(io.Discard)
	lines := make(chan []byte)
	readErr := make(chan error, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			select {
			case lines <- append([]byte(nil), sc.Bytes()...):
			case <-stop:
				return
			}
		}
		readErr <- sc.Err()
		close(lines)
	}()
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				if err := <-readErr; err != nil {
					return fmt.Errorf("type on the console of %s: read input: %w", m.cfg.Name, err)
				}
				return c.settle(ctx, AttachQuiet, AttachLinger)
			}
			if err := c.typeLine(ctx, line); err != nil {
				return fmt.Errorf("type on the console of %s: %w", m.cfg.Name, err)
			}
		case <-c.done:
			return fmt.Errorf("type on the console of %s: %w", m.cfg.Name, ErrConsoleClosed)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// typeLine types one line: its text, then, once the guest has taken it,
// the newline.
func (c *console) typeLine(ctx context.Context, line []byte) error {
	if err := c.write(ctx, line); err != nil {
		return err
	}
	if err := c.drain(ctx, AttachLinger); err != nil {
		c.write(ctx, []byte{lineKill})
		return err
	}
	if err := c.write(ctx, []byte{'\n'}); err != nil {
		return err
	}
	return c.drain(ctx, AttachLinger)
}

// escaper finds the detach sequence in typed input.
type escaper struct{ pending bool }

// filter returns the bytes to pass to the guest and whether the user asked
// to detach.
func (e *escaper) filter(b []byte) (send []byte, detach bool) {
	for _, ch := range b {
		if e.pending {
			e.pending = false
			switch ch {
			case 'q', '.':
				return send, true
			case EscapeChar:
				send = append(send, EscapeChar)
			default:
				send = append(send, EscapeChar, ch)
			}
			continue
		}
		if ch == EscapeChar {
			e.pending = true
			continue
		}
		send = append(send, ch)
	}
	return send, false
}

// WaitConsole waits until a line of console.log contains marker.
func (m *Machine) WaitConsole(ctx context.Context, marker string) error {
	_, err := m.WaitConsoleAfter(ctx, 0, marker)
	return err
}

// WaitConsoleAfter waits until a line of console.log starting at or after
// byte offset off contains marker, and returns the offset just after that
// line (or after the text read so far, if the line is not finished), to
// pass to the next call. It fails early if QEMU exits.
func (m *Machine) WaitConsoleAfter(ctx context.Context, off int64, marker string) (int64, error) {
	if marker == "" {
		return off, errors.New("wait for console: empty marker")
	}
	path := filepath.Join(m.dir, ConsoleLog)
	want := []byte(marker)
	var line []byte // the unfinished line, starting at lineOff
	lineOff := off
	buf := make([]byte, 64<<10)
	for {
		gone := m.PID() == 0 // checked before reading, so no output is missed
		f, err := os.Open(path)
		if err != nil && !os.IsNotExist(err) {
			return off, fmt.Errorf("wait for %q on console: %w", marker, err)
		}
		if f != nil {
			for {
				n, rerr := f.ReadAt(buf, off)
				data := buf[:n]
				off += int64(n)
				for len(data) > 0 {
					i := bytes.IndexByte(data, '\n')
					if i < 0 {
						line = append(line, data...)
						break
					}
					line = append(line, data[:i+1]...)
					data = data[i+1:]
					if bytes.Contains(line, want) {
						f.Close()
						return lineOff + int64(len(line)), nil
					}
					lineOff += int64(len(line))
					line = line[:0]
				}
				if rerr != nil || n == 0 {
					break
				}
			}
			f.Close()
			if bytes.Contains(line, want) {
				return off, nil
			}
		}
		if gone {
			return off, fmt.Errorf("wait for %q on console of %s: %w", marker, m.cfg.Name, m.notRunning(pidOrZero(m.dir)))
		}
		select {
		case <-ctx.Done():
			return off, fmt.Errorf("wait for %q on console of %s: %w", marker, m.cfg.Name, ctx.Err())
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func pidOrZero(dir string) int {
	pid, _, _ := readPID(dir)
	return pid
}

// MakeRaw puts the terminal on fd into raw mode, as Attach wants it, and
// returns a function that restores the previous mode.
func MakeRaw(fd int) (restore func() error, err error) {
	var old syscall.Termios
	if err := ioctlTermios(fd, syscall.TCGETS, &old); err != nil {
		return nil, fmt.Errorf("make terminal raw: %w", err)
	}
	raw := old
	raw.Iflag &^= syscall.IGNBRK | syscall.BRKINT | syscall.PARMRK | syscall.ISTRIP |
		syscall.INLCR | syscall.IGNCR | syscall.ICRNL | syscall.IXON
	raw.Oflag &^= syscall.OPOST
	raw.Lflag &^= syscall.ECHO | syscall.ECHONL | syscall.ICANON | syscall.ISIG | syscall.IEXTEN
	raw.Cflag &^= syscall.CSIZE | syscall.PARENB
	raw.Cflag |= syscall.CS8
	raw.Cc[syscall.VMIN] = 1
	raw.Cc[syscall.VTIME] = 0
	if err := ioctlTermios(fd, syscall.TCSETS, &raw); err != nil {
		return nil, fmt.Errorf("make terminal raw: %w", err)
	}
	return func() error { return ioctlTermios(fd, syscall.TCSETS, &old) }, nil
}

func ioctlTermios(fd int, req uintptr, t *syscall.Termios) error {
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(t))); e != 0 {
		return e
	}
	return nil
}
