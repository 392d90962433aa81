// Package inject runs a system call inside another process, the way a
// debugger or CRIU's parasite code does: it stops one thread of the
// process with ptrace, points it at a syscall instruction with the call's
// number and arguments in its registers, lets it execute that one
// instruction, and puts the thread back exactly as it was.
//
// sbuml uses it to give QEMU a userfaultfd that QEMU never asked for (see
// vmm.DirtyLog): the kernel then tracks QEMU's writes to guest RAM. The
// thread chosen is the process's main thread; the others run on.
//
// While the call runs, the process's parent must not wait for it with
// wait4 or waitid: a parent that is also the tracer (this process) takes
// the tracer's stops too. Watch a pidfd for its exit instead. If the
// process ends during the call, the tracer's wait takes its exit status;
// the parent then finds it with Reaped.
//
// Only linux/amd64 is supported; elsewhere Syscall returns
// errors.ErrUnsupported.
package inject

import (
	"strconv"
	"sync"
	"syscall"
)

// reaped holds the exit statuses that an injection's wait took from a
// child of this process, by pid, until Reaped hands them out.
var reaped sync.Map // int -> ExitStatus

// An ExitStatus is how a process ended: Code is its exit code, or -1 if a
// signal ended it, and Signal that signal.
type ExitStatus struct {
	Code   int
	Signal syscall.Signal
}

// String says how the process ended, as exec's errors say it.
func (e ExitStatus) String() string {
	if e.Code < 0 {
		return "signal: " + e.Signal.String()
	}
	return "exit status " + strconv.Itoa(e.Code)
}

// Reaped returns, once, the exit status of child process pid if an
// injection into it took that status (the child ended during the call),
// so that its parent, whose own wait then fails with ECHILD, can still
// say how it ended.
func Reaped(pid int) (ExitStatus, bool) {
	v, ok := reaped.LoadAndDelete(pid)
	if !ok {
		return ExitStatus{}, false
	}
	return v.(ExitStatus), true
}
