package guest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sbuml/sbuml/agent"
	"github.com/sbuml/sbuml/agent/internal/mux"
	"github.com/sbuml/sbuml/agent/internal/proto"
)

// defaultEnv fills in what a process needs if the daemon's environment
// lacks it (an rc script's environment is sparse).
var defaultEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}

// execState lets control messages reach a process started by an exec
// session; they may arrive before it has started.
type execState struct {
	mu     sync.Mutex
	pid    int      // process group to signal, once started
	pty    *os.File // terminal master, with TTY
	size   *proto.Winsize
	sigs   []syscall.Signal
	exited bool
}

func (e *execState) resize(ws proto.Winsize) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.pty == nil {
		e.size = &ws
		return
	}
	setWinsize(e.pty, ws)
}

func (e *execState) signal(sig int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.exited:
	case e.pid == 0:
		e.sigs = append(e.sigs, syscall.Signal(sig))
	default:
		syscall.Kill(-e.pid, syscall.Signal(sig))
	}
}

// started records the running process and applies what came before.
func (e *execState) started(pid int, pty *os.File) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pid, e.pty = pid, pty
	if e.size != nil && pty != nil {
		setWinsize(pty, *e.size)
	}
	for _, sig := range e.sigs {
		syscall.Kill(-pid, sig)
	}
	e.sigs = nil
}

// kill kills the process group unless the process has been reaped
// (its pid, and so its group id, may be reused).
func (e *execState) kill() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.pid != 0 && !e.exited {
		syscall.Kill(-e.pid, syscall.SIGKILL)
	}
}

func (e *execState) reaped() {
	e.mu.Lock()
	e.exited = true
	e.mu.Unlock()
}

// proc is a started process and this side's ends of its stdio.
type proc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser // pipe or terminal master
	stdout io.ReadCloser  // pipe or terminal master
	stderr io.ReadCloser  // pipe; nil with a terminal
	tty    bool
}

// runExec runs the process of an exec session: its streams go to the
// session, and it is killed, with its process group, if the session ends
// first (the host aborted it, or the connection ended).
func (d *Daemon) runExec(s *mux.Session, e *execState) {
	var req agent.ExecRequest
	if err := json.Unmarshal(s.Args(), &req); err != nil || len(req.Argv) == 0 {
		fail(s, "exec: malformed request %s", s.Args())
		return
	}
	p, err := startProcess(req)
	if err != nil {
		s.Exit(proto.ExitStatus{Code: 127, Error: shorten(err.Error())})
		return
	}
	pty, _ := p.stdin.(*os.File)
	if !p.tty {
		pty = nil
	}
	e.started(p.cmd.Process.Pid, pty)

	go pumpStdin(p, s.Reader(mux.StreamIn))
	var pumps sync.WaitGroup
	pump := func(w io.WriteCloser, r io.Reader) {
		defer pumps.Done()
		if _, err := io.Copy(w, r); err == nil || errors.Is(err, syscall.EIO) {
			w.Close() // EIO: a terminal whose last user has gone
		}
	}
	pumps.Add(2)
	go pump(s.Writer(mux.StreamOut), p.stdout)
	if p.stderr != nil {
		go pump(s.Writer(mux.StreamErr), p.stderr)
	} else {
		s.Writer(mux.StreamErr).Close()
		pumps.Done()
	}
	outputDone := make(chan struct{})
	go func() {
		pumps.Wait()
		close(outputDone)
	}()

	waited := make(chan error, 1)
	go func() { waited <- p.cmd.Wait() }()
	var werr error
	select {
	case werr = <-waited:
		e.reaped()
		select {
		case <-outputDone:
		case <-s.Done():
		}
	case <-s.Done():
		e.kill()
		werr = <-waited
		e.reaped()
	}
	p.close()
	<-outputDone
	if s.Err() != nil {
		return // killed: the host is gone or gave up
	}
	s.Exit(proto.ExitStatus{Code: exitCode(p.cmd, werr)})
}

// pumpStdin copies the session's stream 0 to the process. Its end closes
// the process's stdin, or types ^D on a terminal.
func pumpStdin(p *proc, r io.Reader) {
	_, err := io.Copy(p.stdin, r)
	if p.tty {
		if err == nil {
			p.stdin.Write([]byte{4})
		}
		return
	}
	p.stdin.Close()
}

func (p *proc) close() {
	p.stdout.Close()
	if p.stderr != nil {
		p.stderr.Close()
	}
	if !p.tty {
		p.stdin.Close()
	}
}

// exitCode is the process's exit status, 128 plus the signal that killed
// it, or -1 if it was not waited for.
func exitCode(cmd *exec.Cmd, err error) int {
	if cmd.ProcessState == nil {
		return -1
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return cmd.ProcessState.ExitCode()
}

// command prepares the process of req: environment, working directory,
// program found in the PATH the process will have.
func command(req agent.ExecRequest) (*exec.Cmd, error) {
	env := os.Environ()
	for _, kv := range defaultEnv {
		if os.Getenv(strings.SplitN(kv, "=", 2)[0]) == "" {
			env = append(env, kv)
		}
	}
	if req.TTY && os.Getenv("TERM") == "" {
		env = append(env, "TERM=xterm")
	}
	env = append(env, req.Env...)
	prog, err := lookPath(req.Argv[0], env)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(prog, req.Argv[1:]...)
	cmd.Args[0] = req.Argv[0]
	cmd.Env = env
	cmd.Dir = req.Dir
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	return cmd, nil
}

// lookPath finds a program the way a shell would with the PATH in env.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec %s: not found in PATH %s", name, path)
}

// startProcess starts the process with pipes, in a process group of its
// own, or on a new terminal, in a session of its own.
func startProcess(req agent.ExecRequest) (*proc, error) {
	cmd, err := command(req)
	if err != nil {
		return nil, err
	}
	if req.TTY {
		return startOnTerminal(cmd, req)
	}
	var parent, child [3]*os.File
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			if f != nil {
				f.Close()
			}
		}
	}
	for i := range 3 {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(parent[:])
			closeAll(child[:])
			return nil, fmt.Errorf("exec %s: %w", req.Argv[0], err)
		}
		if i == 0 {
			parent[i], child[i] = w, r
		} else {
			parent[i], child[i] = r, w
		}
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = child[0], child[1], child[2]
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	closeAll(child[:])
	if err != nil {
		closeAll(parent[:])
		return nil, fmt.Errorf("exec %s: %w", req.Argv[0], unwrapExec(err))
	}
	return &proc{cmd: cmd, stdin: parent[0], stdout: parent[1], stderr: parent[2]}, nil
}

func startOnTerminal(cmd *exec.Cmd, req agent.ExecRequest) (*proc, error) {
	master, slave, err := openPTY()
	if err != nil {
		return nil, fmt.Errorf("exec %s: %w", req.Argv[0], err)
	}
	ws := proto.Winsize{Rows: req.Rows, Cols: req.Cols}
	if ws.Rows == 0 || ws.Cols == 0 {
		ws = proto.Winsize{Rows: 24, Cols: 80}
	}
	setWinsize(master, ws)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	err = cmd.Start()
	slave.Close()
	if err != nil {
		master.Close()
		return nil, fmt.Errorf("exec %s: %w", req.Argv[0], unwrapExec(err))
	}
	return &proc{cmd: cmd, stdin: master, stdout: master, tty: true}, nil
}

// unwrapExec drops the "fork/exec /path:" prefix os/exec adds.
func unwrapExec(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// openPTY opens a new pseudo-terminal pair.
func openPTY() (master, slave *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	var n int
	err = control(master, func(fd int) error {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
			return fmt.Errorf("unlock pty: %w", err)
		}
		var err error
		n, err = unix.IoctlGetInt(fd, unix.TIOCGPTN)
		return err
	})
	if err == nil {
		slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	}
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("open a pseudo-terminal: %w", err)
	}
	return master, slave, nil
}

func setWinsize(f *os.File, ws proto.Winsize) {
	control(f, func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: ws.Rows, Col: ws.Cols})
	})
}

// control runs fn on f's descriptor without taking it out of the
// runtime's poller (as f.Fd would).
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}
