package sbuml

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sbuml/sbuml/agent"
	"github.com/sbuml/sbuml/internal/atomicfile"
	"github.com/sbuml/sbuml/vmm"
)

// A machine's keeper is a background process, one per running machine,
// that holds the host end of the machine's agent channel (the
// virtio-serial port sbuml-guest talks to) for as long as QEMU runs. It
// answers the guest's ckpt() requests by committing the machine, sets the
// guest's clock whenever the guest resumes, takes automatic snapshots
// (thinkback), and relays `sbuml exec` and `sbuml cp` to the guest. It is
// the same executable as the program that started it, run again with an
// environment that KeeperMain recognizes (as Docker's reexec does), so
// any program using this package can start keepers if it calls
// KeeperMain first thing in main. Boot, Checkout and Rewind start the
// keeper; commands that need it start it again if it is gone.

// Files of a machine directory that belong to its keeper.
const (
	keeperLockFile = "keeper.lock" // flocked by the keeper for its life
	keeperPIDFile  = "keeper.pid"  // "KEEPERPID QEMUPID": the keeper and the QEMU it serves
	keeperSocket   = "keeper.sock" // where commands reach the keeper
	keeperLogFile  = "keeper.log"  // what the keeper did, timestamped
	runStateFile   = "run-state"   // the last run-state event of QEMU (see noteRunState)
)

// Environment variables that make a process a keeper.
const (
	keeperMachineEnv   = "SBUML_KEEPER_MACHINE"
	keeperScrapbookEnv = "SBUML_KEEPER_SCRAPBOOK"
)

// ErrNoKeeper is returned where a keeper is needed but this program cannot
// start one: it did not call KeeperMain.
var ErrNoKeeper = errors.New("this program cannot start machine keepers (it does not call sbuml.KeeperMain); run 'sbuml exec MACHINE true' to start one")

// keeperCapable is set by KeeperMain: this executable runs a keeper when
// started as one.
var keeperCapable bool

// KeeperMain runs a machine keeper and exits if this process was started
// as one; otherwise it returns at once. Programs that boot or check out
// machines through this package call it first thing in main (and in
// TestMain), so that the machines get keepers.
func KeeperMain() {
	keeperCapable = true
	dir := os.Getenv(keeperMachineEnv)
	if dir == "" {
		return
	}
	book := os.Getenv(keeperScrapbookEnv)
	os.Unsetenv(keeperMachineEnv)
	os.Unsetenv(keeperScrapbookEnv)
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("keeper " + strconv.Itoa(os.Getpid()) + ": ")
	log.SetOutput(&cappedLog{path: filepath.Join(dir, keeperLogFile)})
	if err := runKeeper(context.Background(), book, dir); err != nil {
		log.Print(err)
		os.Exit(1)
	}
	os.Exit(0)
}

// maxKeeperLog is the size at which a keeper's log is moved to
// keeper.log.1 and begun again: a keeper taking a snapshot every 30 s
// logs a few hundred kilobytes a day.
const maxKeeperLog = 4 << 20

// cappedLog appends to a log file, moving it aside once it grows past
// maxKeeperLog.
type cappedLog struct {
	path string
	mu   sync.Mutex
}

func (c *cappedLog) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if fi, err := os.Stat(c.path); err == nil && fi.Size()+int64(len(p)) > maxKeeperLog {
		os.Rename(c.path, c.path+".1")
	}
	f, err := os.OpenFile(c.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Write(p)
}

// KeeperInfo says whether a machine's keeper runs.
type KeeperInfo struct {
	PID int `json:"pid,omitempty"`
	// Running says a keeper serves the machine's current QEMU.
	Running bool `json:"running"`
}

// keeperOf reports on the keeper of the machine in dir.
func keeperOf(dir string) KeeperInfo {
	b, err := os.ReadFile(filepath.Join(dir, keeperPIDFile))
	if err != nil {
		return KeeperInfo{}
	}
	var kpid, qpid int
	if _, err := fmt.Sscan(string(b), &kpid, &qpid); err != nil {
		return KeeperInfo{}
	}
	if !processAlive(kpid) || qpid != vmm.PIDOf(dir) || !lockHeld(filepath.Join(dir, keeperLockFile)) {
		return KeeperInfo{}
	}
	return KeeperInfo{PID: kpid, Running: true}
}

func processAlive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}

// lockHeld reports whether another process holds the flock on path.
func lockHeld(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// keeperStartTimeout bounds how long startKeeper waits for a new keeper
// to listen.
const keeperStartTimeout = 10 * time.Second

// startKeeper makes sure the machine in dir has a keeper serving its
// current QEMU, starting one if needed, and returns once it listens.
func (s *Scrapbook) startKeeper(dir string) error {
	if keeperOf(dir).Running {
		return nil
	}
	if !keeperCapable {
		return ErrNoKeeper
	}
	if vmm.PIDOf(dir) == 0 {
		return fmt.Errorf("machine %s is not running", machineName(dir))
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("start keeper: %w", err)
	}
	logf, err := os.OpenFile(filepath.Join(dir, keeperLogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start keeper: %w", err)
	}
	defer logf.Close()
	cmd := &exec.Cmd{
		Path:   exe,
		Args:   []string{"sbuml-keeper", dir},
		Env:    append(os.Environ(), keeperMachineEnv+"="+dir, keeperScrapbookEnv+"="+s.Dir),
		Dir:    "/",
		Stdout: logf,
		Stderr: logf,
		// A session of its own, like QEMU's: it outlives this process
		// and gets no signals from its terminal.
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start keeper: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(keeperStartTimeout)
	for {
		if keeperOf(dir).Running {
			if c, err := net.DialTimeout("unix", filepath.Join(dir, keeperSocket), time.Second); err == nil {
				c.Close()
				return nil
			}
		}
		select {
		case err := <-exited:
			if keeperOf(dir).Running { // another keeper won the race
				return nil
			}
			return fmt.Errorf("start keeper of %s: it exited (%v); see %s", machineName(dir), err, filepath.Join(dir, keeperLogFile))
		case <-deadline:
			return fmt.Errorf("start keeper of %s: not listening after %v; see %s", machineName(dir), keeperStartTimeout, filepath.Join(dir, keeperLogFile))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// keeper is the state of a running keeper.
type keeper struct {
	book string // the scrapbook directory
	dir  string // the machine directory
	name string
	cfg  *vmm.Config
	qemu int // the pid of the QEMU it serves

	// host is the host end of the guest's agent channel.
	host *agent.Host
	// commitMu serializes the commits the keeper makes; ckptMu the
	// guest's ckpt() requests.
	commitMu, ckptMu sync.Mutex
	// autosnapMu is held while an automatic snapshot is taken.
	autosnapMu sync.Mutex
	// prepared says the guest on the current agent connection has had
	// its clock set and its random number generator reseeded.
	prepared atomic.Bool

	eventsMu sync.Mutex
	events   *vmm.QMP // the keeper's QMP connection (events socket)
}

// runKeeper is the keeper's life: it serves the machine in dir until its
// QEMU exits.
func runKeeper(ctx context.Context, book, dir string) error {
	lock, err := waitLock(filepath.Join(dir, keeperLockFile), keeperStartTimeout)
	if err != nil {
		return err
	}
	defer lock.Close()
	cfg, err := vmm.LoadConfig(dir)
	if err != nil {
		return err
	}
	k := &keeper{book: book, dir: dir, name: machineName(dir), cfg: cfg, qemu: vmm.PIDOf(dir)}
	if k.qemu == 0 {
		return nil // halted meanwhile: nothing to keep
	}
	k.host = agent.NewHost(k, log.Printf)
	sock := filepath.Join(dir, keeperSocket)
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	defer os.Remove(sock)
	defer ln.Close()
	if err := atomicfile.WriteFile(filepath.Join(dir, keeperPIDFile), []byte(fmt.Sprintf("%d %d\n", os.Getpid(), k.qemu)), 0o644); err != nil {
		return err
	}
	defer os.Remove(filepath.Join(dir, keeperPIDFile))
	log.Printf("keeping machine %s (qemu pid %d)", k.name, k.qemu)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	run := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	run(func(ctx context.Context) { k.watchQEMU(ctx); cancel() })
	run(func(ctx context.Context) { k.serveClients(ctx, ln) })
	run(k.keepAgent)
	run(k.keepAutosnaps)
	<-ctx.Done()
	ln.Close()
	wg.Wait()
	log.Printf("machine %s: qemu exited, keeper done", k.name)
	return nil
}

// waitLock takes the flock on path, waiting up to timeout for a holder
// (the keeper of the machine's previous QEMU, exiting) to let go.
func waitLock(path string, timeout time.Duration) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("another keeper holds %s", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// watchQEMU returns when QEMU exits. It watches QEMU's events on the
// machine's events socket, and sets the guest's clock whenever the guest
// resumes; for machines without that socket it polls QEMU's pid.
func (k *keeper) watchQEMU(ctx context.Context) {
	q, err := vmm.DialQMP(ctx, filepath.Join(k.dir, vmm.EventsSocket))
	if err != nil {
		k.pollQEMU(ctx)
		return
	}
	defer q.Close()
	k.eventsMu.Lock()
	k.events = q
	k.eventsMu.Unlock()
	events := q.Subscribe(runStateEvents...)
	defer events.Close()
	for {
		ev, err := events.Next(ctx)
		if err != nil {
			return // QEMU closed the socket: it exited (or ctx ended)
		}
		if ev.Name == "RESUME" {
			k.guestResumed(ctx)
		}
		k.noteRunState(ev)
	}
}

// runStateEvents are the QMP events after which a machine's state reads
// differently.
var runStateEvents = []string{"STOP", "RESUME", "SHUTDOWN", "RESET", "GUEST_PANICKED", "SUSPEND", "WAKEUP"}

// noteRunState writes the last run-state event to runStateFile, so that
// programs watching the machine directory (sbuml ui, with inotify) learn
// of a freeze or a continue that changes no other file: QEMU serves its
// events monitor to one client, the keeper.
func (k *keeper) noteRunState(ev vmm.Event) {
	b, _ := json.Marshal(struct {
		Event string    `json:"event"`
		Time  time.Time `json:"time"`
	}{ev.Name, ev.Time})
	if err := atomicfile.WriteFile(filepath.Join(k.dir, runStateFile), append(b, '\n'), 0o644); err != nil {
		log.Printf("note run state: %v", err)
	}
}

func (k *keeper) pollQEMU(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for vmm.PIDOf(k.dir) == k.qemu {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// openBook opens the keeper's scrapbook for one operation.
func (k *keeper) openBook() (*Scrapbook, error) { return Open(k.book) }

// keeperBusyWait bounds how long the keeper retries a commit while
// another sbuml process drives the machine.
const keeperBusyWait = time.Minute

// commit commits the keeper's machine, one commit at a time, retrying
// while another process holds the machine.
func (k *keeper) commit(ctx context.Context, opts CommitOptions) (*CommitResult, error) {
	k.commitMu.Lock()
	defer k.commitMu.Unlock()
	deadline := time.Now().Add(keeperBusyWait)
	for {
		s, err := k.openBook()
		if err != nil {
			return nil, err
		}
		res, err := s.Commit(ctx, k.dir, opts)
		s.Close()
		if !errors.Is(err, vmm.ErrBusy) || time.Now().After(deadline) {
			return res, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// status returns the machine's state, asked on the keeper's own QMP
// connection, without locking the machine.
func (k *keeper) status(ctx context.Context) vmm.State {
	k.eventsMu.Lock()
	q := k.events
	k.eventsMu.Unlock()
	if q == nil { // a machine without an events socket
		return vmm.Inspect(ctx, k.dir).Status.State
	}
	raw, err := q.Execute(ctx, "query-status", nil)
	if err != nil {
		return vmm.StateCrashed
	}
	var st struct {
		Status string `json:"status"`
	}
	json.Unmarshal(raw, &st)
	switch st.Status {
	case "running":
		return vmm.StateRunning
	case "internal-error", "io-error", "guest-panicked", "shutdown":
		return vmm.StateCrashed
	}
	return vmm.StateFrozen
}

// keepMachine starts the keeper of a machine just booted or checked out.
// A machine runs without one, so a failure is only reported on progress
// (and in keeper.log); programs that cannot start keepers skip it.
func (s *Scrapbook) keepMachine(dir string, progress io.Writer) {
	err := s.startKeeper(dir)
	if err != nil && !errors.Is(err, ErrNoKeeper) && progress != nil {
		fmt.Fprintf(progress, "warning: %v\n", err)
	}
}
