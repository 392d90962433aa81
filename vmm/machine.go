package vmm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sbuml/sbuml/internal/atomicfile"
	"github.com/sbuml/sbuml/internal/inject"
	"golang.org/x/sys/unix"
)

// State is the condition of a machine as sbuml sees it.
type State string

// Machine states.
const (
	StateRunning State = "running" // QEMU runs the guest
	StateFrozen  State = "frozen"  // QEMU is alive, the guest's vCPUs are stopped
	StateCrashed State = "crashed" // QEMU exited without Halt (crash, error, a reboot under -no-reboot), or the guest cannot go on
	StateStopped State = "stopped" // the guest powered itself off: QEMU exited, its files remain until Halt
	StateHalted  State = "halted"  // no QEMU; only files remain
	StateBusy    State = "busy"    // QEMU is alive and another sbuml process drives it (List only)
)

// Status reports a machine's state.
type Status struct {
	State    State
	RunState string        // QEMU's own run state, e.g. "running", "paused", "postmigrate", "inmigrate"
	PID      int           // QEMU's pid while it is alive
	Uptime   time.Duration // time since QEMU started, while it is alive
	Memory   int64         // guest RAM in bytes
	CPUs     int
	Accel    string
	Detail   string // for crashed machines, why, with the tail of qemu.log
}

// Machine is a QEMU virtual machine and its directory, driven by this
// process. Only one process at a time can hold a Machine for a directory:
// Boot and Open take a lock that Close releases. QEMU outlives the Machine
// and the process; Halt stops it.
type Machine struct {
	dir  string
	cfg  Config
	lock *dirLock
	// conLock is held while this process shows the console after giving
	// up lock (ShareConsole).
	conLock *dirLock

	mu  sync.Mutex
	qmp *QMP
	con *console

	// Set when this process started QEMU: closed once QEMU has exited
	// and been reaped, after exitErr is set.
	exited  chan struct{}
	exitErr error
}

// Dir returns the machine directory.
func (m *Machine) Dir() string { return m.dir }

// Config returns the machine's configuration as recorded in config.json.
// It is a copy: changing it does not change the machine.
func (m *Machine) Config() Config {
	c := m.cfg
	c.Net = c.Net.clone()
	return c
}

// RAMFile returns the absolute path of the guest RAM file.
func (m *Machine) RAMFile() string { return resolve(m.dir, m.cfg.RAMFile) }

// ConsoleLog returns the path of the console log.
func (m *Machine) ConsoleLog() string { return filepath.Join(m.dir, ConsoleLog) }

// PID returns QEMU's pid, or 0 if QEMU is not running.
func (m *Machine) PID() int {
	pid, _, _ := readPID(m.dir)
	if !qemuAlive(pid, m.dir) {
		return 0
	}
	return pid
}

// DefaultStartTimeout bounds how long Boot waits for QEMU to open its QMP
// socket when ctx has no deadline.
const DefaultStartTimeout = 30 * time.Second

// Boot starts a new QEMU for the machine directory dir, creating it if
// needed, and returns the machine with its lock held. The guest starts
// running at once, unless cfg.Boot.Incoming is set: then QEMU waits, frozen,
// for LoadDeviceState.
//
// Guest RAM lives in a file: cfg.RAMFile if set (it may hold saved RAM, and
// must then be exactly cfg.Memory bytes), else a new file on tmpfs or, with
// cfg.Boot.RAMInDir, in the machine directory. The machine owns its RAM
// file from then on: Halt removes it.
//
// dir must not hold a machine that is running or crashed; a halted one is
// replaced.
func Boot(ctx context.Context, dir string, cfg Config) (*Machine, error) {
	m, err := boot(ctx, dir, cfg)
	if err != nil {
		return nil, fmt.Errorf("boot machine %s: %w", dir, err)
	}
	return m, nil
}

func boot(ctx context.Context, dir string, cfg Config) (_ *Machine, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	dir, err = absDir(dir)
	if err != nil {
		return nil, err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	var undo undoList
	defer func() {
		if err != nil {
			undo.run()
			lock.unlock()
		}
	}()
	if err := checkReplaceable(dir, cfg.RAMFile); err != nil {
		return nil, err
	}
	p, err := planBoot(ctx, dir, cfg)
	if err != nil {
		return nil, err
	}
	if err := p.prepareRAM(&undo); err != nil {
		return nil, err
	}
	m, err := p.startQEMU(lock, &undo)
	if err != nil {
		return nil, err
	}
	if err := m.connect(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// undoList is what a failed Boot takes back, last first.
type undoList []func()

func (u *undoList) add(f func()) { *u = append(*u, f) }

func (u undoList) run() {
	for i := len(u) - 1; i >= 0; i-- {
		u[i]()
	}
}

// checkReplaceable refuses to boot over a machine in dir that is running,
// crashed, or halted with its RAM file still there (other than ramFile,
// which the new machine takes over).
func checkReplaceable(dir, ramFile string) error {
	old, err := readConfig(dir)
	if err != nil {
		return nil // no machine there, or none that can be read: replaced
	}
	if pid, _, _ := readPID(dir); pid != 0 {
		if qemuAlive(pid, dir) {
			return fmt.Errorf("machine %s is already running (qemu pid %d)", old.Name, pid)
		}
		return fmt.Errorf("machine %s crashed and was not cleaned up: halt it first", old.Name)
	}
	if _, err := os.Stat(resolve(dir, old.RAMFile)); err == nil && old.RAMFile != ramFile {
		return fmt.Errorf("machine %s was halted but its RAM file %s remains: halt it first", old.Name, old.RAMFile)
	}
	return nil
}

// bootPlan is what Boot decided before it changes anything: the
// machine's whole configuration and the QEMU that runs it.
type bootPlan struct {
	dir  string
	cfg  Config
	qemu string // the QEMU executable
}

// planBoot completes cfg with its defaults and what the installed QEMU
// offers, and checks that it can be booted.
func planBoot(ctx context.Context, dir string, cfg Config) (*bootPlan, error) {
	cfg.Net = cfg.Net.clone() // Boot fills in the MAC and host ports
	cfg.setDefaults(dir)
	qi, err := InspectQEMU(ctx, cfg.Boot.QEMU)
	if err != nil {
		return nil, err
	}
	cfg.QEMUVersion = qi.Version
	if cfg.MachineType == "" {
		cfg.MachineType = qi.Q35()
	} else if !qi.HasMachineType(cfg.MachineType) {
		return nil, fmt.Errorf("machine type %s is not supported by QEMU %s (newest: %s)", cfg.MachineType, qi.Version, qi.Q35())
	}
	if err := cfg.validate(dir); err != nil {
		return nil, err
	}
	if cfg.Net != nil {
		if err := cfg.Net.checkHostPorts(); err != nil {
			return nil, err
		}
	}
	if cfg.Accel == "kvm" {
		if err := CheckKVM(); err != nil {
			return nil, err
		}
	}
	return &bootPlan{dir: dir, cfg: cfg, qemu: qi.Path}, nil
}

// prepareRAM settles the guest RAM file: the one given (of exactly the
// machine's memory, and present for an incoming machine), else a new one
// on tmpfs or in the machine directory, where there is room for it.
func (p *bootPlan) prepareRAM(undo *undoList) error {
	cfg := &p.cfg
	ramRoot := cfg.Boot.RAMRoot
	if ramRoot == "" {
		ramRoot = DefaultRAMRoot
	}
	if cfg.RAMFile == "" {
		switch {
		case cfg.Boot.Incoming:
			return errors.New("an incoming machine needs Config.RAMFile holding the saved RAM")
		case cfg.Boot.RAMInDir:
			cfg.RAMFile = RAMFileName
		default:
			ram, err := NewRAMFile(ramRoot, cfg.Name)
			if err != nil {
				return err
			}
			cfg.RAMFile = ram
			undo.add(func() { os.RemoveAll(filepath.Dir(ram)) })
		}
	}
	ram := resolve(p.dir, cfg.RAMFile)
	fi, err := os.Stat(ram)
	switch {
	case err == nil && fi.Size() != cfg.Memory:
		return fmt.Errorf("ram file %s holds %d bytes, machine memory is %d", ram, fi.Size(), cfg.Memory)
	case err != nil && !os.IsNotExist(err):
		return err
	case err != nil && cfg.Boot.Incoming:
		return fmt.Errorf("incoming machine: ram file %s does not exist", ram)
	case err != nil:
		if err := os.MkdirAll(filepath.Dir(ram), 0o755); err != nil {
			return err
		}
		if err := checkFree(filepath.Dir(ram), cfg.Memory, "guest RAM"); err != nil {
			return err
		}
	}
	cfg.RAMDir = ""
	if rd := filepath.Dir(ram); rd != p.dir && filepath.Dir(rd) == filepath.Clean(ramRoot) {
		cfg.RAMDir = rd
	}
	return nil
}

// startQEMU records the machine's configuration and starts its QEMU, in
// a session of its own, with the lock held.
func (p *bootPlan) startQEMU(lock *dirLock, undo *undoList) (*Machine, error) {
	dir := p.dir
	for _, f := range append([]string{PIDFile}, sockets...) {
		os.Remove(filepath.Join(dir, f))
	}
	if err := writeConfig(dir, &p.cfg); err != nil {
		return nil, err
	}
	undo.add(func() { os.Remove(filepath.Join(dir, ConfigFile)) })
	logf, err := os.OpenFile(filepath.Join(dir, QEMULog), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(p.qemu, p.cfg.qemuArgs()...)
	cmd.Dir = dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	// A session of its own: QEMU must not get the terminal's signals, and
	// must outlive this process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", p.qemu, err)
	}
	// sbuml, not QEMU (-pidfile), writes the pid file: QEMU would remove
	// it whenever it exits, and a QEMU that exits without Halt must be
	// told apart from a halted one.
	if err := atomicfile.WriteFile(filepath.Join(dir, PIDFile), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, err
	}
	m := &Machine{dir: dir, cfg: p.cfg, lock: lock, exited: make(chan struct{})}
	go func() {
		m.exitErr = waitExit(cmd)
		if m.exitErr == nil {
			m.exitErr = errors.New("exit status 0")
		}
		close(m.exited)
	}()
	undo.add(func() {
		cmd.Process.Kill()
		<-m.exited
		for _, f := range append([]string{PIDFile}, sockets...) {
			os.Remove(filepath.Join(dir, f))
		}
	})
	return m, nil
}

// connect opens the QMP connection to a QEMU this process has just
// started and learns the host ports it chose.
func (m *Machine) connect(ctx context.Context) error {
	qmp, err := m.waitQMP(ctx)
	if err != nil {
		return err
	}
	m.qmp = qmp
	if err := m.learnHostPorts(ctx); err != nil {
		qmp.Close()
		return err
	}
	return nil
}

// waitQMP connects to a QEMU that this process has just started.
func (m *Machine) waitQMP(ctx context.Context) (*QMP, error) {
	ctx, cancel := withDefaultTimeout(ctx, DefaultStartTimeout)
	defer cancel()
	sock := filepath.Join(m.dir, QMPSocket)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		// QEMU binds and listens in one step, so once the socket exists
		// a failed dial means QEMU has exited or ctx is done; both are
		// reported below.
		if _, err := os.Stat(sock); err == nil {
			if q, err := DialQMP(ctx, sock); err == nil {
				return q, nil
			}
		}
		select {
		case <-m.exited:
			return nil, m.startFailure()
		case <-ctx.Done():
			return nil, fmt.Errorf("qemu did not open %s: %w; qemu.log: %s", QMPSocket, ctx.Err(), logTail(filepath.Join(m.dir, QEMULog), 5))
		case <-tick.C:
		}
	}
}

func (m *Machine) startFailure() error {
	tail := logTail(filepath.Join(m.dir, QEMULog), 5)
	if tail == "" {
		tail = "(qemu.log is empty)"
	}
	return fmt.Errorf("qemu failed to start (%v): %s", m.exitErr, tail)
}

// Open takes over a machine directory left by Boot, possibly in another
// process, and locks it. The QEMU may be running, frozen, crashed or gone:
// Open succeeds for all of them, so that a stale directory can be halted.
func Open(dir string) (*Machine, error) {
	return open(dir, lockWait)
}

// open is Open, waiting up to wait for the machine's lock.
func open(dir string, wait time.Duration) (*Machine, error) {
	abs, err := absDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open machine %s: %w", dir, err)
	}
	cfg, err := readConfig(abs)
	if err != nil {
		return nil, fmt.Errorf("open machine: %w", err)
	}
	lock, err := lockFile(abs, LockFile, ErrBusy, wait)
	if err != nil {
		return nil, fmt.Errorf("open machine: %w", err)
	}
	return &Machine{dir: abs, cfg: *cfg, lock: lock}, nil
}

func absDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	abs, err = filepath.EvalSymlinks(abs)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", err
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%s is not a directory", dir)
	}
	return abs, nil
}

// Close releases the machine without stopping QEMU: it closes the QMP and
// console connections and the lock, so another process can Open it.
func (m *Machine) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.qmp != nil {
		m.qmp.Close()
		m.qmp = nil
	}
	if m.con != nil {
		m.con.close()
		m.con = nil
	}
	m.lock.unlock()
	m.conLock.unlock()
	return nil
}

// QMP returns the machine's QMP client, connecting if needed. It fails if
// QEMU is not running.
func (m *Machine) QMP(ctx context.Context) (*QMP, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lock.f == nil {
		return nil, fmt.Errorf("machine %s is closed", m.cfg.Name)
	}
	if m.qmp != nil {
		select {
		case <-m.qmp.Done():
			m.qmp = nil
		default:
			return m.qmp, nil
		}
	}
	pid, _, err := readPID(m.dir)
	if err != nil {
		return nil, err
	}
	if !qemuAlive(pid, m.dir) {
		return nil, m.notRunning(pid)
	}
	q, err := DialQMP(ctx, filepath.Join(m.dir, QMPSocket))
	if err != nil {
		return nil, err
	}
	m.qmp = q
	return q, nil
}

// notRunning explains why QEMU is not there.
func (m *Machine) notRunning(pid int) error {
	if pid == 0 {
		return fmt.Errorf("machine %s is halted", m.cfg.Name)
	}
	if st, detail := m.gone(pid); st == StateStopped {
		return fmt.Errorf("machine %s is stopped: %s", m.cfg.Name, detail)
	}
	return fmt.Errorf("machine %s crashed: %s", m.cfg.Name, m.crashDetail(pid))
}

func (m *Machine) crashDetail(pid int) string {
	d := "qemu (pid " + strconv.Itoa(pid) + ") is gone"
	if m.exited != nil {
		select {
		case <-m.exited:
			d = "qemu (pid " + strconv.Itoa(pid) + ") exited: " + m.exitErr.Error()
		default:
		}
	}
	if tail := logTail(filepath.Join(m.dir, QEMULog), 5); tail != "" {
		d += "; qemu.log: " + tail
	} else {
		// QEMU had nothing to say. The guest's last words, on the
		// console, tell a power-off, a reboot (-no-reboot) or a panic
		// from QEMU killed by a signal.
		tail := logTail(filepath.Join(m.dir, ConsoleLog), 20)
		d += "; " + guestEnd(tail)
		if tail != "" {
			d += "; console: " + logTail(filepath.Join(m.dir, ConsoleLog), 3)
		}
	}
	return d
}

// gone says what became of a machine whose QEMU (pid) exited without
// Halt: stopped if the guest powered itself off and QEMU said nothing
// amiss, else crashed, with why.
func (m *Machine) gone(pid int) (State, string) {
	detail := m.crashDetail(pid)
	if logTail(filepath.Join(m.dir, QEMULog), 5) == "" && guestEnd(logTail(filepath.Join(m.dir, ConsoleLog), 20)) == guestPoweredOff {
		return StateStopped, detail
	}
	return StateCrashed, detail
}

// guestPoweredOff is what guestEnd says of a guest that powered off.
const guestPoweredOff = "the guest powered off"

// guestEnd says how a guest whose QEMU left no message ended, from the
// last lines of its console.
func guestEnd(console string) string {
	switch {
	case strings.Contains(console, "Kernel panic"):
		return "the guest kernel panicked"
	case strings.Contains(console, "reboot: Power down"), strings.Contains(console, "reboot: System halted"):
		return guestPoweredOff
	case strings.Contains(console, "reboot: Restarting system"):
		return "the guest rebooted (machines run with -no-reboot)"
	}
	return "QEMU was killed (it logged nothing, and the guest did not shut down)"
}

// Freeze stops the guest's vCPUs. QEMU drains and flushes the disks, so
// that once Freeze returns the RAM file and the disk files hold a
// consistent state and can be copied. Freezing a frozen machine does
// nothing.
func (m *Machine) Freeze(ctx context.Context) error {
	_, err := m.FreezeAt(ctx)
	return err
}

// FreezeAt is Freeze, and says when QEMU stopped the guest's vCPUs by
// its own clock: the timestamp of its STOP event, which it sends just
// after the vCPUs stopped and before it flushes the disks. The time is
// zero if QEMU stopped nothing (the guest was not running).
func (m *Machine) FreezeAt(ctx context.Context) (time.Time, error) {
	q, err := m.QMP(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("freeze: %w", err)
	}
	events := q.Subscribe("STOP")
	defer events.Close()
	if _, err := q.Execute(ctx, "stop", nil); err != nil {
		return time.Time{}, fmt.Errorf("freeze %s: %w", m.cfg.Name, m.explain(err))
	}
	ev, _ := events.poll() // sent before the reply
	return ev.Time, nil
}

// explain replaces the error of a QMP command that failed because QEMU
// died meanwhile (a broken pipe, a closed socket) by the reason it died.
func (m *Machine) explain(err error) error {
	pid, _, perr := readPID(m.dir)
	if perr == nil && !qemuAlive(pid, m.dir) {
		return m.notRunning(pid)
	}
	return err
}

// Continue resumes a frozen guest. A machine booted with Boot.Incoming must
// first receive its device state with LoadDeviceState.
func (m *Machine) Continue(ctx context.Context) error {
	q, err := m.QMP(ctx)
	if err != nil {
		return fmt.Errorf("continue: %w", err)
	}
	rs, err := runState(ctx, q)
	if err != nil {
		return fmt.Errorf("continue %s: %w", m.cfg.Name, err)
	}
	if rs == "inmigrate" {
		return fmt.Errorf("continue %s: machine is waiting for its device state (LoadDeviceState)", m.cfg.Name)
	}
	if err := cont(ctx, q); err != nil {
		return fmt.Errorf("continue %s: %w", m.cfg.Name, m.explain(err))
	}
	return nil
}

// Resume continues a guest its caller froze (FreezeAt), and perhaps saved
// (DeviceStateSave), in one round trip to QEMU: unlike Continue it does
// not ask QEMU the run state first. It says when QEMU resumed the vCPUs
// by its own clock: the timestamp of its RESUME event, which it sends
// just before the vCPUs run again. If QEMU resumed nothing, Resume asks
// why: a guest that already ran is no error (the time is then zero), a
// machine waiting for its device state is.
func (m *Machine) Resume(ctx context.Context) (time.Time, error) {
	q, err := m.QMP(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("continue: %w", err)
	}
	events := q.Subscribe("RESUME")
	defer events.Close()
	if err := cont(ctx, q); err != nil {
		return time.Time{}, fmt.Errorf("continue %s: %w", m.cfg.Name, m.explain(err))
	}
	if ev, ok := events.poll(); ok { // sent before the reply
		return ev.Time, nil
	}
	rs, err := runState(ctx, q)
	switch {
	case err != nil:
		return time.Time{}, fmt.Errorf("continue %s: qemu resumed nothing, and query-status failed: %w", m.cfg.Name, err)
	case rs == "running":
		return time.Time{}, nil
	case rs == "inmigrate":
		return time.Time{}, fmt.Errorf("continue %s: machine is waiting for its device state (LoadDeviceState)", m.cfg.Name)
	}
	return time.Time{}, fmt.Errorf("continue %s: qemu run state is %q after cont", m.cfg.Name, rs)
}

// cont has QEMU continue the guest. Right after a device state save, QEMU
// may still be finishing the migration (it sends the MIGRATION event
// "completed" just before leaving run state finish-migrate, during which
// it refuses cont): then cont is asked again.
func cont(ctx context.Context, q *QMP) error {
	ctx, cancel := withDefaultTimeout(ctx, DefaultQMPTimeout)
	defer cancel()
	for {
		_, err := q.Execute(ctx, "cont", nil)
		var qerr *QMPError
		if !errors.As(err, &qerr) || qerr.Desc != "Migration is not finalized yet" {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Millisecond):
		}
	}
}

func runState(ctx context.Context, q *QMP) (string, error) {
	raw, err := q.Execute(ctx, "query-status", nil)
	if err != nil {
		return "", err
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return "", fmt.Errorf("query-status reply %s: %w", raw, err)
	}
	return st.Status, nil
}

// Halt stops the machine for good: it asks QEMU to quit, kills it if it
// does not exit in time, and removes the RAM file with its tmpfs directory,
// the pid file and the sockets. config.json, the logs and the disks stay.
// Halting a halted or crashed machine cleans up what is left. The lock is
// kept until Close.
func (m *Machine) Halt(ctx context.Context) error {
	pid, _, err := readPID(m.dir)
	if err != nil {
		return fmt.Errorf("halt %s: %w", m.cfg.Name, err)
	}
	if qemuAlive(pid, m.dir) {
		if err := m.stopQEMU(ctx, pid); err != nil {
			return fmt.Errorf("halt %s: %w", m.cfg.Name, err)
		}
	}
	m.mu.Lock()
	if m.qmp != nil {
		m.qmp.Close()
		m.qmp = nil
	}
	if m.con != nil {
		m.con.close()
		m.con = nil
	}
	m.mu.Unlock()

	var errs []error
	rm := func(p string) {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	rm(m.RAMFile())
	if err := os.RemoveAll(m.RAMFile() + RAMSidecarSuffix); err != nil {
		errs = append(errs, err)
	}
	if m.cfg.RAMDir != "" {
		rm(m.cfg.RAMDir)
	}
	for _, f := range append([]string{PIDFile}, sockets...) {
		rm(filepath.Join(m.dir, f))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("halt %s: %w", m.cfg.Name, err)
	}
	return nil
}

// stopQEMU asks QEMU to quit and escalates to SIGKILL.
func (m *Machine) stopQEMU(ctx context.Context, pid int) error {
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	q, err := m.QMP(qctx)
	if err == nil {
		// QEMU may close the socket before its reply arrives.
		_, err = q.Execute(qctx, "quit", nil)
	}
	cancel()
	if (err == nil || errors.Is(err, ErrQMPClosed)) && m.waitExit(pid, 10*time.Second) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill qemu (pid %d): %w", pid, err)
	}
	if !m.waitExit(pid, 10*time.Second) {
		return fmt.Errorf("qemu (pid %d) survived SIGKILL", pid)
	}
	return nil
}

func (m *Machine) waitExit(pid int, timeout time.Duration) bool {
	if m.exited != nil {
		select {
		case <-m.exited:
			return true
		case <-time.After(timeout):
			return false
		}
	}
	return waitGone(pid, m.dir, timeout)
}

// Status reports the machine's state. A QEMU that died without Halt is
// reported as crashed, with the tail of qemu.log in Detail.
func (m *Machine) Status(ctx context.Context) (Status, error) {
	st := Status{Memory: m.cfg.Memory, CPUs: m.cfg.CPUs, Accel: m.cfg.Accel}
	pid, started, err := readPID(m.dir)
	if err != nil {
		return st, fmt.Errorf("status %s: %w", m.cfg.Name, err)
	}
	switch {
	case pid == 0:
		st.State = StateHalted
		return st, nil
	case !qemuAlive(pid, m.dir):
		st.State, st.Detail = m.gone(pid)
		return st, nil
	}
	st.PID = pid
	st.Uptime = time.Since(started).Truncate(time.Millisecond)
	rs, err := m.qmpRunState(ctx)
	if err != nil {
		// A QEMU being killed closes its sockets before it is gone.
		if waitGone(pid, m.dir, exitingWait) {
			gone := Status{Memory: st.Memory, CPUs: st.CPUs, Accel: st.Accel}
			gone.State, gone.Detail = m.gone(pid)
			return gone, nil
		}
		return st, fmt.Errorf("status %s: %w", m.cfg.Name, err)
	}
	st.RunState = rs
	switch rs {
	case "running":
		st.State = StateRunning
	case "internal-error", "io-error", "guest-panicked", "shutdown":
		st.State = StateCrashed
		st.Detail = "guest stopped: qemu run state " + rs
	default: // paused, postmigrate, inmigrate, prelaunch, finish-migrate, ...
		st.State = StateFrozen
	}
	return st, nil
}

// exitingWait is how long Status waits for a QEMU that no longer answers
// on its monitor to be gone before it reports the monitor's error.
const exitingWait = time.Second

// qmpRunState asks QEMU for its run state.
func (m *Machine) qmpRunState(ctx context.Context) (string, error) {
	q, err := m.QMP(ctx)
	if err != nil {
		return "", err
	}
	return runState(ctx, q)
}

// Info is one entry of List.
type Info struct {
	Dir    string
	Config Config
	Status Status
	Err    error // why Config or Status could not be read
}

// List reports the machines in the subdirectories of machinesDir (those
// with a config.json), sorted by name. A machine that another process holds
// is reported as busy, without disturbing it.
func List(ctx context.Context, machinesDir string) ([]Info, error) {
	ents, err := os.ReadDir(machinesDir)
	if err != nil {
		return nil, fmt.Errorf("list machines: %w", err)
	}
	var infos []Info
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(machinesDir, e.Name())
		if _, err := os.Stat(filepath.Join(dir, ConfigFile)); err != nil {
			continue
		}
		infos = append(infos, Inspect(ctx, dir))
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Config.Name < infos[j].Config.Name })
	return infos, nil
}

// Inspect reports the machine in dir, as List does for each.
func Inspect(ctx context.Context, dir string) Info {
	info := Info{Dir: dir}
	cfg, err := readConfig(dir)
	if err != nil {
		info.Err = err
		return info
	}
	info.Config = *cfg
	m, err := open(dir, glanceWait)
	if err == nil {
		defer m.Close()
		info.Status, info.Err = m.Status(ctx)
		return info
	}
	if !errors.Is(err, ErrBusy) {
		info.Err = err
		return info
	}
	// Someone else drives it: look, don't touch.
	abs, _ := absDir(dir)
	m = &Machine{dir: abs, cfg: *cfg}
	st := Status{Memory: cfg.Memory, CPUs: cfg.CPUs, Accel: cfg.Accel}
	pid, started, _ := readPID(abs)
	switch {
	case pid == 0:
		st.State = StateHalted
	case !qemuAlive(pid, abs):
		st.State, st.Detail = m.gone(pid)
	default:
		st.State, st.PID, st.Uptime = StateBusy, pid, time.Since(started).Truncate(time.Millisecond)
		st.Detail = err.Error()
	}
	info.Status = st
	return info
}

// DialAgent connects to the agent port of the machine in dir, which must
// have been booted with Config.Agent. QEMU serves one client at a time:
// a second connection is queued and served only once the first closes.
// Any process may call it; it needs no lock on the machine.
func DialAgent(ctx context.Context, dir string) (*net.UnixConn, error) {
	sock := filepath.Join(dir, AgentSocket)
	c, err := dialUnix(ctx, sock)
	if err != nil {
		if _, serr := os.Stat(sock); os.IsNotExist(serr) {
			return nil, fmt.Errorf("dial agent of machine %s: no %s: the machine is not running or was booted without an agent port", dir, AgentSocket)
		}
		return nil, fmt.Errorf("dial agent of machine %s: %w", dir, err)
	}
	return c, nil
}

// waitExit waits for a started process to end and reaps it. Until the end
// it watches a pidfd rather than waiting in wait4: a parent that waits
// for its child takes the child's ptrace stops too, and sbuml borrows
// QEMU's main thread with ptrace (see DirtyLog).
func waitExit(cmd *exec.Cmd) error {
	if fd, err := unix.PidfdOpen(cmd.Process.Pid, 0); err == nil {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(pfd, -1); !errors.Is(err, unix.EINTR) {
				break
			}
		}
		unix.Close(fd)
	}
	err := cmd.Wait()
	if errors.Is(err, unix.ECHILD) {
		// The dirty-page log's injection was waiting on QEMU as its
		// tracer when QEMU ended, and took its status.
		if st, ok := inject.Reaped(cmd.Process.Pid); ok {
			return errors.New(st.String())
		}
	}
	return err
}
