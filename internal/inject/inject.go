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
// the tracer's stops too. Watch a pidfd for its exit instead.
//
// Only linux/amd64 is supported; elsewhere Syscall returns
// errors.ErrUnsupported.
package inject
