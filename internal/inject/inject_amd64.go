//go:build linux && amd64

package inject

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Syscall runs system call nr with args (at most six) in process pid,
// on its main thread, and returns the call's result: a negative result is
// returned as the errno it encodes. The thread is stopped only for the
// call; if it was blocked in a system call, that call is restarted, and
// signals that arrived meanwhile are delivered after.
func Syscall(pid int, nr uintptr, args ...uintptr) (uintptr, error) {
	if len(args) > 6 {
		return 0, fmt.Errorf("inject: %d arguments, at most 6", len(args))
	}
	// Found before the thread is stopped, so that it is stopped briefly.
	at, err := findInstruction(pid, syscallBytes)
	if err != nil {
		return 0, err
	}
	// Every ptrace request must come from the thread that attached.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.PtraceSeize(pid); err != nil {
		return 0, fmt.Errorf("inject: attach to %d: %w", pid, err)
	}
	t := &tracee{pid: pid}
	res, err := t.run(at, nr, args)
	if derr := t.detach(); err == nil && derr != nil {
		err = derr
	}
	return res, err
}

// borrowed is held while a thread of another process runs on borrowed
// registers: if this process ended then, that thread would go on from
// the syscall instruction with them, and crash its process.
var borrowed sync.Mutex

// Quiesce waits until no thread is borrowed and keeps it so: call it
// before this process ends on purpose (on a second interrupt, say).
func Quiesce() { borrowed.Lock() }

// tracee is a seized thread.
type tracee struct {
	pid int
	// pending are the signals that stopped the thread while it was
	// borrowed, to deliver when it is let go.
	pending []unix.Signal
}

// run stops the thread, makes the call at the syscall instruction at
// address at, and restores its registers.
func (t *tracee) run(at uint64, nr uintptr, args []uintptr) (uintptr, error) {
	if err := unix.PtraceInterrupt(t.pid); err != nil {
		return 0, fmt.Errorf("inject: stop %d: %w", t.pid, err)
	}
	if err := t.waitInterrupted(); err != nil {
		return 0, err
	}
	var saved unix.PtraceRegs
	if err := unix.PtraceGetRegs(t.pid, &saved); err != nil {
		return 0, fmt.Errorf("inject: registers of %d: %w", t.pid, err)
	}
	borrowed.Lock()
	defer borrowed.Unlock()
	res, callErr := t.call(&saved, at, nr, args)
	// Put the thread back whatever happened: with its saved registers, a
	// system call it was blocked in is restarted when it runs again.
	if err := unix.PtraceSetRegs(t.pid, &saved); err != nil {
		return 0, fmt.Errorf("inject: restore the registers of %d: %w", t.pid, err)
	}
	return res, callErr
}

// call executes the syscall instruction at address at with the call's
// registers, one instruction only, and returns the result.
func (t *tracee) call(saved *unix.PtraceRegs, at uint64, nr uintptr, args []uintptr) (uintptr, error) {
	regs := *saved
	regs.Rip = at
	regs.Rax = uint64(nr)
	regs.Orig_rax = ^uint64(0) // not in a system call: nothing to restart
	for i, p := range []*uint64{&regs.Rdi, &regs.Rsi, &regs.Rdx, &regs.R10, &regs.R8, &regs.R9} {
		if i < len(args) {
			*p = uint64(args[i])
		}
	}
	if err := unix.PtraceSetRegs(t.pid, &regs); err != nil {
		return 0, fmt.Errorf("inject: set the registers of %d: %w", t.pid, err)
	}
	if err := t.step(at + 2); err != nil {
		return 0, err
	}
	if err := unix.PtraceGetRegs(t.pid, &regs); err != nil {
		return 0, fmt.Errorf("inject: registers of %d: %w", t.pid, err)
	}
	if r := int64(regs.Rax); r < 0 && r > -4096 {
		return 0, unix.Errno(-r)
	}
	return uintptr(regs.Rax), nil
}

// maxSteps bounds the stops step waits through before the thread reaches
// its goal.
const maxSteps = 16

// step single-steps the thread until its instruction pointer is goal. A
// signal that stops it on the way is kept for detach: delivered now, its
// handler would run on the borrowed registers.
func (t *tracee) step(goal uint64) error {
	for range maxSteps {
		if err := unix.PtraceSingleStep(t.pid); err != nil {
			return fmt.Errorf("inject: step %d: %w", t.pid, err)
		}
		ws, err := t.wait()
		if err != nil {
			return err
		}
		var regs unix.PtraceRegs
		if err := unix.PtraceGetRegs(t.pid, &regs); err != nil {
			return fmt.Errorf("inject: registers of %d: %w", t.pid, err)
		}
		if sig := ws.StopSignal(); sig != unix.SIGTRAP && event(ws) == 0 {
			t.pending = append(t.pending, sig)
		}
		if regs.Rip == goal {
			return nil
		}
	}
	return fmt.Errorf("inject: process %d did not reach %#x in %d steps", t.pid, goal, maxSteps)
}

// waitInterrupted waits for the stop PtraceInterrupt asked for. Signals
// that stop the thread first are delivered as they come.
func (t *tracee) waitInterrupted() error {
	for range maxSteps {
		ws, err := t.wait()
		if err != nil {
			return err
		}
		if event(ws) == unix.PTRACE_EVENT_STOP {
			return nil
		}
		sig := 0
		if event(ws) == 0 {
			sig = int(ws.StopSignal()) // a signal-delivery stop
		}
		if err := ptraceRequest(unix.PTRACE_CONT, t.pid, sig); err != nil {
			return fmt.Errorf("inject: continue %d: %w", t.pid, err)
		}
	}
	return fmt.Errorf("inject: process %d did not stop", t.pid)
}

// waitLimit bounds how long the caller waits for the thread to stop: a
// thread in an uninterruptible sleep stops only when the sleep ends.
const waitLimit = 10 * time.Second

// wait waits until the thread stops, and fails if it ended instead or
// did not stop within waitLimit.
func (t *tracee) wait() (unix.WaitStatus, error) {
	deadline := time.Now().Add(waitLimit)
	for pause := time.Microsecond; ; pause = min(2*pause, time.Millisecond) {
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(t.pid, &ws, unix.WALL|unix.WNOHANG, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return ws, fmt.Errorf("inject: wait for %d: %w", t.pid, err)
		case wpid == t.pid && (ws.Exited() || ws.Signaled()):
			st := ExitStatus{Code: ws.ExitStatus(), Signal: ws.Signal()}
			reaped.Store(t.pid, st)
			return ws, fmt.Errorf("inject: process %d ended (%v)", t.pid, st)
		case wpid == t.pid && ws.Stopped():
			return ws, nil
		case time.Now().After(deadline):
			return ws, fmt.Errorf("inject: process %d did not stop in %v", t.pid, waitLimit)
		}
		time.Sleep(pause)
	}
}

// event returns the ptrace event of a stop (0: a signal-delivery stop).
func event(ws unix.WaitStatus) int { return int(uint32(ws) >> 16) }

// detach lets the thread go, with the first signal it got meanwhile;
// the others are sent again. A thread that is running (a wait gave up)
// is stopped first, since only a stopped thread can be detached.
func (t *tracee) detach() error {
	var sig unix.Signal
	if len(t.pending) > 0 {
		sig = t.pending[0]
	}
	err := ptraceRequest(unix.PTRACE_DETACH, t.pid, int(sig))
	if errors.Is(err, unix.ESRCH) && unix.PtraceInterrupt(t.pid) == nil {
		if _, werr := t.wait(); werr == nil {
			err = ptraceRequest(unix.PTRACE_DETACH, t.pid, int(sig))
		}
	}
	if err != nil {
		return fmt.Errorf("inject: detach from %d: %w", t.pid, err)
	}
	for _, s := range t.pending[min(1, len(t.pending)):] {
		unix.Tgkill(t.pid, t.pid, s)
	}
	return nil
}

// ptraceRequest makes a ptrace request whose data is a signal number.
func ptraceRequest(req, pid, sig int) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), 0, uintptr(sig), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// syscallBytes is the x86-64 syscall instruction.
var syscallBytes = []byte{0x0f, 0x05}

// findInstruction returns the address of the first occurrence of code in
// an executable mapping of process pid.
func findInstruction(pid int, code []byte) (uint64, error) {
	maps, err := os.Open("/proc/" + strconv.Itoa(pid) + "/maps")
	if err != nil {
		return 0, fmt.Errorf("inject: %w", err)
	}
	defer maps.Close()
	mem, err := os.Open("/proc/" + strconv.Itoa(pid) + "/mem")
	if err != nil {
		return 0, fmt.Errorf("inject: %w", err)
	}
	defer mem.Close()
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || len(f[1]) < 3 || f[1][2] != 'x' {
			continue
		}
		var start, end uint64
		if _, err := fmt.Sscanf(f[0], "%x-%x", &start, &end); err != nil {
			continue
		}
		buf := make([]byte, min(end-start, 1<<20))
		n, _ := mem.ReadAt(buf, int64(start))
		if i := bytes.Index(buf[:n], code); i >= 0 {
			return start + uint64(i), nil
		}
	}
	return 0, fmt.Errorf("inject: no syscall instruction found in process %d", pid)
}
