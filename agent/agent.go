// Package agent lets the host work inside a running sbuml guest without
// scraping its serial console: run commands, copy file trees in and out,
// set the clock, read activity counters, and answer the guest's
// checkpoint requests (ckpt).
//
// The guest runs sbuml-guest (package agent/guest), which owns a
// virtio-serial port that QEMU serves on the machine's agent.sock. On the
// host, one long-lived process per machine (the keeper) holds a Host
// connected to that socket and reconnects it when it drops; command-line
// processes reach the Host through the keeper's own unix socket (Serve,
// Dial). Both Host and Client implement Agent.
//
// A guest is snapshotted while running and restored any number of times
// in a new QEMU: the protocol resynchronises after any reconnection,
// sessions (exec, copy) die with the connection they belong to, and a
// checkpoint request pending in the guest is sent again, with the same
// id, to whichever host connects next. See docs/agent.md.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"time"

	"github.com/sbuml/sbuml/agent/internal/mux"
	"github.com/sbuml/sbuml/agent/internal/proto"
)

// Version is the agent version: sbuml-guest reports it in its handshake
// and in Stats.
const Version = "0.1"

// ErrConnLost is wrapped by the errors of operations that the end of an
// agent connection interrupted: the guest was restored from a snapshot,
// its agent restarted, or the link failed. The operation did not finish
// (an exec's process was killed); run it again.
var ErrConnLost = mux.ErrConnLost

// Agent is what the host can ask of a guest's agent, directly (Host) or
// through the machine's keeper (Client). Every method waits, within ctx,
// for the agent to be connected.
type Agent interface {
	// Exec starts a process in the guest.
	Exec(ctx context.Context, req ExecRequest) (*Session, error)
	// CopyIn extracts the tar stream r into the guest directory dir,
	// which must exist: regular files, directories, symbolic and hard
	// links, with their modes and modification times. Entries that would
	// land outside dir are refused.
	CopyIn(ctx context.Context, dir string, r io.Reader) error
	// CopyOut writes a tar stream of the guest file or directory path to
	// w, its entries named from the path's base name. A symbolic link is
	// archived as itself. Sockets, devices and pipes are left out.
	CopyOut(ctx context.Context, path string, w io.Writer) error
	// SetTime sets the guest's CLOCK_REALTIME to t.
	SetTime(ctx context.Context, t time.Time) error
	// Stats returns the guest's activity counters.
	Stats(ctx context.Context) (Stats, error)
	// Ping checks that the agent answers and returns its version.
	Ping(ctx context.Context) (string, error)
}

// ExecRequest describes a process to run in the guest.
type ExecRequest struct {
	Argv []string `json:"argv"`          // program and arguments; a name without '/' is looked up in PATH
	Env  []string `json:"env,omitempty"` // KEY=VALUE added to the agent's environment
	Dir  string   `json:"dir,omitempty"` // working directory; default /
	// TTY runs the process on a new pseudo-terminal as its controlling
	// terminal, in a session of its own; stdout and stderr are then
	// merged on Stdout. Without it the process gets pipes and a process
	// group of its own.
	TTY  bool   `json:"tty,omitempty"`
	Rows uint16 `json:"rows,omitempty"` // terminal size with TTY; default 24x80
	Cols uint16 `json:"cols,omitempty"`
}

// Stats are cheap activity counters of the guest, to tell whether
// anything happened there between two readings.
type Stats struct {
	Version string        `json:"version"` // agent version
	Time    time.Time     `json:"time"`    // the guest's CLOCK_REALTIME when read
	Uptime  time.Duration `json:"uptime"`  // since the guest booted (guest clock)
	// Processes is the number of forks since boot (/proc/stat).
	Processes uint64 `json:"processes"`
	// CPU time of all CPUs in USER_HZ ticks (/proc/stat).
	User   uint64 `json:"user"`
	Nice   uint64 `json:"nice"`
	System uint64 `json:"system"`
	Idle   uint64 `json:"idle"`
	// AgentUser is the user CPU time, in the same ticks, of the agent
	// itself (not of the commands it ran): answering the host costs the
	// guest some, and an idle guest is idle whatever the host asks.
	AgentUser uint64 `json:"agent_user,omitempty"`
	// SectorsWritten sums the 512-byte sectors written to the guest's
	// block devices backed by hardware (/proc/diskstats; not loop, ram
	// or device-mapper devices).
	SectorsWritten uint64 `json:"sectors_written"`
}

// Session is a process started by Exec. Read Stdout and Stderr to their
// end, concurrently (or use Run): Wait does not, and a stream nobody
// reads stops the process once its 256 KiB window is full.
type Session struct {
	Stdin  io.WriteCloser // closing it closes the process's stdin (with a TTY, types ^D)
	Stdout io.Reader      // the process's stdout; with a TTY, the terminal's output
	Stderr io.Reader      // the process's stderr; with a TTY, empty
	s      *mux.Session
	argv   []string
}

// Resize changes the terminal size of a process started with TTY.
func (s *Session) Resize(rows, cols uint16) error {
	return s.s.Ctl(proto.CtlResize, proto.Winsize{Rows: rows, Cols: cols})
}

// Signal sends sig to the process group of the process.
func (s *Session) Signal(sig syscall.Signal) error {
	return s.s.Ctl(proto.CtlSignal, int(sig))
}

// Close ends the session at once; the guest kills the process group.
func (s *Session) Close() error {
	s.s.Abort("closed by the host")
	return nil
}

// Wait waits for the process to exit and returns its exit code, or 128
// plus the signal number that killed it. The error reports a process
// that could not start or a session cut short (wrapping ErrConnLost if
// the connection ended).
func (s *Session) Wait() (int, error) {
	<-s.s.Done()
	err := s.s.Err()
	var st proto.ExitStatus
	if err == nil {
		st, err = decodeStatus(s.s)
	}
	if err != nil {
		return -1, fmt.Errorf("exec %s in the guest: %w", quoteArgv(s.argv), hint(err))
	}
	return st.Code, nil
}

// quoteArgv shows a command line in an error, shortened.
func quoteArgv(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = fmt.Sprintf("%q", a)
	}
	s := strings.Join(q, " ")
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

// Run runs a process with Exec, copies stdin to it (unless nil) and its
// output to stdout and stderr, and returns its exit code once it has
// exited and its output has been copied. If ctx ends first the process is
// killed.
func Run(ctx context.Context, a Agent, req ExecRequest, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	s, err := a.Exec(ctx, req)
	if err != nil {
		return -1, err
	}
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	if stdin != nil {
		go func() {
			io.Copy(s.Stdin, stdin)
			s.Stdin.Close()
		}()
	} else {
		s.Stdin.Close()
	}
	// A writer that fails stops its copy: close the session, or the
	// process would wait for a reader forever. The session's own failure,
	// if it is what ended a copy, is Wait's to report.
	errs := make(chan error, 2)
	copyOut := func(w io.Writer, r io.Reader) {
		ew := &errWriter{w: w}
		io.Copy(ew, r)
		if ew.err != nil {
			s.Close()
		}
		errs <- ew.err
	}
	go copyOut(stderr, s.Stderr)
	copyOut(stdout, s.Stdout)
	outErr := <-errs
	if e := <-errs; outErr == nil {
		outErr = e
	}
	code, err := s.Wait()
	switch {
	case outErr != nil:
		return -1, fmt.Errorf("exec %s in the guest: copy its output: %w", quoteArgv(req.Argv), outErr)
	case err != nil && ctx.Err() != nil:
		return -1, fmt.Errorf("exec %s in the guest: %w", quoteArgv(req.Argv), context.Cause(ctx))
	case err != nil:
		return -1, err
	}
	return code, nil
}

// errWriter remembers why its writer failed.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		e.err = err
	}
	return n, err
}

// hint tells what to do after an operation the end of the agent
// connection interrupted.
func hint(err error) error {
	if errors.Is(err, ErrConnLost) {
		return fmt.Errorf("%w; it did not finish, run it again", err)
	}
	return err
}

// decodeStatus returns the exit status of a session that ended normally;
// a status carrying an error is returned as an error.
func decodeStatus(s *mux.Session) (proto.ExitStatus, error) {
	var st proto.ExitStatus
	if err := json.Unmarshal(s.Status(), &st); err != nil {
		return st, fmt.Errorf("malformed exit status %q", s.Status())
	}
	switch {
	case st.Lost:
		return st, fmt.Errorf("%w: %s", ErrConnLost, strings.TrimPrefix(st.Error, ErrConnLost.Error()+": "))
	case st.Error != "":
		return st, errors.New(st.Error)
	}
	return st, nil
}

// opener implements Agent over the Conn of a mux endpoint that opens
// sessions: a Host's, or a Client's.
type opener struct {
	ep *mux.Endpoint
}

// Exec starts a process in the guest; see Agent.
func (o opener) Exec(ctx context.Context, req ExecRequest) (*Session, error) {
	if len(req.Argv) == 0 {
		return nil, errors.New("exec in the guest: no command given")
	}
	c, err := o.ep.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("exec %s in the guest: %w", quoteArgv(req.Argv), err)
	}
	s, err := c.Open(proto.KindExec, req)
	if err != nil {
		return nil, fmt.Errorf("exec %s in the guest: %w", quoteArgv(req.Argv), err)
	}
	return &Session{
		Stdin:  s.Writer(mux.StreamIn),
		Stdout: s.Reader(mux.StreamOut),
		Stderr: s.Reader(mux.StreamErr),
		s:      s,
		argv:   req.Argv,
	}, nil
}

// CopyIn extracts a tar stream into a guest directory; see Agent.
func (o opener) CopyIn(ctx context.Context, dir string, r io.Reader) error {
	s, err := o.open(ctx, proto.KindCopyIn, proto.CopyInArgs{Dir: dir})
	if err != nil {
		return fmt.Errorf("copy into %s in the guest: %w", dir, err)
	}
	stop := context.AfterFunc(ctx, func() { s.Abort("cancelled by the host") })
	defer stop()
	w := s.Writer(mux.StreamIn)
	_, werr := io.Copy(w, r)
	if werr == nil {
		werr = w.Close()
	}
	if werr != nil && !isSessionEnd(werr) {
		// The tar stream failed on this side.
		s.Abort(werr.Error())
		return fmt.Errorf("copy into %s in the guest: %w", dir, werr)
	}
	if err := endOf(ctx, s); err != nil {
		return fmt.Errorf("copy into %s in the guest: %w", dir, hint(err))
	}
	return nil
}

// isSessionEnd reports whether a write failed because the session ended
// (the guest gave up early and says why in its status).
func isSessionEnd(err error) bool {
	return errors.Is(err, mux.ErrSessionEnded) || errors.Is(err, ErrConnLost) || strings.Contains(err.Error(), "session aborted")
}

// CopyOut writes a tar stream of a guest path to w; see Agent.
func (o opener) CopyOut(ctx context.Context, path string, w io.Writer) error {
	s, err := o.open(ctx, proto.KindCopyOut, proto.CopyOutArgs{Path: path})
	if err != nil {
		return fmt.Errorf("copy %s out of the guest: %w", path, err)
	}
	stop := context.AfterFunc(ctx, func() { s.Abort("cancelled by the host") })
	defer stop()
	if _, err := io.Copy(w, s.Reader(mux.StreamOut)); err != nil && !isSessionEnd(err) {
		s.Abort("the host could not write the archive")
		return fmt.Errorf("copy %s out of the guest: %w", path, err)
	}
	if err := endOf(ctx, s); err != nil {
		return fmt.Errorf("copy %s out of the guest: %w", path, hint(err))
	}
	return nil
}

func (o opener) open(ctx context.Context, kind string, args any) (*mux.Session, error) {
	c, err := o.ep.Conn(ctx)
	if err != nil {
		return nil, err
	}
	return c.Open(kind, args)
}

// endOf waits for the end of a session and returns its error.
func endOf(ctx context.Context, s *mux.Session) error {
	select {
	case <-s.Done():
	case <-ctx.Done():
		s.Abort("cancelled by the host")
		return context.Cause(ctx)
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if err := s.Err(); err != nil {
		return err
	}
	_, err := decodeStatus(s)
	return err
}

// SetTime sets the guest clock; see Agent.
func (o opener) SetTime(ctx context.Context, t time.Time) error {
	if err := o.call(ctx, proto.OpSetTime, proto.SetTimeArgs{UnixNano: t.UnixNano()}, nil); err != nil {
		return fmt.Errorf("set the guest clock: %w", err)
	}
	return nil
}

// Stats returns the guest's activity counters; see Agent.
func (o opener) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	if err := o.call(ctx, proto.OpStats, nil, &st); err != nil {
		return Stats{}, fmt.Errorf("read guest stats: %w", err)
	}
	return st, nil
}

// Ping checks that the agent answers; see Agent.
func (o opener) Ping(ctx context.Context) (string, error) {
	var v string
	if err := o.call(ctx, proto.OpPing, nil, &v); err != nil {
		return "", fmt.Errorf("ping the guest agent: %w", err)
	}
	return v, nil
}

func (o opener) call(ctx context.Context, op string, args, result any) error {
	c, err := o.ep.Conn(ctx)
	if err != nil {
		return err
	}
	return c.Call(ctx, op, args, result)
}
