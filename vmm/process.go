package vmm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// dirLock is an exclusive flock on a machine directory's lock file.
type dirLock struct{ f *os.File }

// ErrBusy is wrapped by the error returned when another process is driving
// the machine.
var ErrBusy = errors.New("machine is in use by another sbuml process")

// lockWait is how long a process that means to drive a machine waits for
// its lock. Long enough to outlast the inheritance described at
// flockRetry, which on a host whose cores are all busy was seen to keep a
// released lock held for over 250 ms; a process that really drives the
// machine (a commit, an attached console) holds it far longer, so the
// wait costs only a late error.
const lockWait = 2 * time.Second

// glanceWait is how long Inspect waits: a machine it cannot lock is
// reported busy, and a listing must not stall on every busy machine.
const glanceWait = 250 * time.Millisecond

func lockDir(dir string) (*dirLock, error) {
	return lockFile(dir, LockFile, ErrBusy, lockWait)
}

// lockFile takes the flock on the file name in dir, waiting up to wait,
// or fails with an error wrapping busy that names the holder.
func lockFile(dir, name string, busy error, wait time.Duration) (*dirLock, error) {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock machine %s: %w", dir, err)
	}
	if err := flockRetry(f, wait); err != nil {
		holder, _ := os.ReadFile(f.Name())
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			if h := strings.TrimSpace(string(holder)); h != "" {
				return nil, fmt.Errorf("lock machine %s: %w (pid %s%s)", dir, busy, h, commandOf(h))
			}
			return nil, fmt.Errorf("lock machine %s: %w", dir, busy)
		}
		return nil, fmt.Errorf("lock machine %s: %w", dir, err)
	}
	// Record the holder for the error message above; informative only.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &dirLock{f}, nil
}

// commandOf returns ": " and the command line of process pid, shortened,
// or "" if it cannot be read: "pid 42: sbuml console m1" tells a user
// which window to close.
func commandOf(pid string) string {
	b, err := os.ReadFile(filepath.Join("/proc", pid, "cmdline"))
	if err != nil || len(b) == 0 {
		return ""
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	args[0] = filepath.Base(args[0])
	line := strings.Join(args, " ")
	if len(line) > 60 {
		line = line[:57] + "..."
	}
	return ": " + line
}

// flockRetry takes the lock, retrying for up to wait: a process that
// forks (starting QEMU, for one) hands its open lock descriptions to the
// child until the child execs, so a lock released a moment ago can still
// look held.
func flockRetry(f *os.File, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (l *dirLock) unlock() {
	if l == nil || l.f == nil {
		return
	}
	l.f.Truncate(0)
	l.f.Close() // closing the descriptor drops the flock
	l.f = nil
}

// readPID returns the pid in the machine's pid file and the file's
// modification time (when QEMU started), or pid 0 if there is no pid file.
func readPID(dir string) (int, time.Time, error) {
	p := filepath.Join(dir, PIDFile)
	b, err := os.ReadFile(p)
	if os.IsNotExist(err) {
		return 0, time.Time{}, nil
	}
	if err != nil {
		return 0, time.Time{}, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, time.Time{}, fmt.Errorf("%s: bad pid %q", p, bytes.TrimSpace(b))
	}
	fi, err := os.Stat(p)
	if err != nil {
		return 0, time.Time{}, err
	}
	return pid, fi.ModTime(), nil
}

// qemuAlive reports whether pid is a live (not zombie) process whose
// working directory is dir: the QEMU of this machine rather than an
// unrelated process that reused the pid.
func qemuAlive(pid int, dir string) bool {
	if pid <= 0 {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	if i := bytes.LastIndexByte(stat, ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X' {
		return false
	}
	cwd, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
	if err != nil {
		// Not ours to inspect; fall back to existence.
		return syscall.Kill(pid, 0) == nil
	}
	return cwd == dir
}

// waitGone polls until the process has gone or the timeout passes.
func waitGone(pid int, dir string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if !qemuAlive(pid, dir) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logTail returns the last lines of a log file, joined with "; ", for
// error messages.
func logTail(path string, lines int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const max = 8 << 10
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := fi.Size() - max
	if off < 0 {
		off = 0
	}
	buf := make([]byte, fi.Size()-off)
	n, _ := f.ReadAt(buf, off)
	text := strings.TrimSpace(string(buf[:n]))
	if text == "" {
		return ""
	}
	ls := strings.Split(text, "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	for i, l := range ls {
		ls[i] = strings.TrimSpace(strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return -1 // control characters, escape sequences' ESC
			}
			return r
		}, l))
	}
	return strings.Join(ls, "; ")
}

// PIDOf returns the pid of the QEMU running the machine in dir, or 0 if
// none runs (halted, crashed, or not a machine directory). It takes no
// lock: any process may ask.
func PIDOf(dir string) int {
	pid, _, err := readPID(dir)
	if err != nil || !qemuAlive(pid, dir) {
		return 0
	}
	return pid
}
