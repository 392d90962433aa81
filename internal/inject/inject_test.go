//go:build linux && amd64

package inject

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// start runs a command the test can inject into and waits for it at the end.
func start(t *testing.T, name string, args ...string) (*exec.Cmd, <-chan error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// A parent waiting in wait4 would take the stops Syscall waits for:
	// wait for the exit on a pidfd, as vmm does for QEMU.
	pidfd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, -1)
		unix.Close(pidfd)
		done <- cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	time.Sleep(100 * time.Millisecond) // let it reach its loop or its sleep
	return cmd, done
}

func TestSyscall(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("ptrace of a child needs no privilege, but Yama may forbid it: run as root")
	}
	for _, tc := range []struct {
		name string
		argv []string
	}{
		// Blocked in a system call: it is restarted, and the sleep
		// ends on time with status 0.
		{"blocked", []string{"sleep", "1"}},
		// Running in user space.
		{"running", []string{"sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd, done := start(t, tc.argv[0], tc.argv[1:]...)
			pid := cmd.Process.Pid
			got, err := Syscall(pid, unix.SYS_GETPID)
			if err != nil || int(got) != pid {
				t.Fatalf("getpid in %d = %d, %v", pid, got, err)
			}
			// A failing call reports its errno.
			if _, err := Syscall(pid, unix.SYS_CLOSE, 1<<20); !errors.Is(err, unix.EBADF) {
				t.Errorf("close of a bad descriptor: %v, want EBADF", err)
			}
			// A descriptor made in the process is there for pidfd_getfd.
			fd, err := Syscall(pid, unix.SYS_EVENTFD2, 0, unix.EFD_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			if l, err := os.Readlink("/proc/" + itoa(pid) + "/fd/" + itoa(int(fd))); err != nil || l != "anon_inode:[eventfd]" {
				t.Errorf("fd %d in %d is %q, %v", fd, pid, l, err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%v after the injection: %v", tc.argv, err)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("%v did not finish after the injection", tc.argv)
			}
		})
	}
}

func TestSyscallNoProcess(t *testing.T) {
	if _, err := Syscall(1<<22+12345, unix.SYS_GETPID); err == nil {
		t.Error("injection into a missing process succeeded")
	}
}

// TestSyscallProcessEnds kills the process while an injected call blocks
// in it: the injection fails, and since its wait took the child's exit
// status, the parent's own wait fails with ECHILD and Reaped has it.
func TestSyscallProcessEnds(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("ptrace of a child needs no privilege, but Yama may forbid it: run as root")
	}
	// No pidfd watcher here: the injection is the only waiter.
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	pid := cmd.Process.Pid
	time.Sleep(100 * time.Millisecond)
	kill := time.AfterFunc(300*time.Millisecond, func() { cmd.Process.Kill() })
	defer kill.Stop()
	if _, err := Syscall(pid, unix.SYS_PAUSE); err == nil {
		t.Fatal("pause injected into a killed process returned")
	}
	if err := cmd.Wait(); !errors.Is(err, unix.ECHILD) {
		t.Fatalf("parent's wait after the injection took the status: %v, want ECHILD", err)
	}
	st, ok := Reaped(pid)
	if !ok || st.Signal != unix.SIGKILL || st.String() != "signal: killed" {
		t.Fatalf("Reaped(%d) = %v, %v; want signal: killed", pid, st, ok)
	}
	if _, ok := Reaped(pid); ok {
		t.Error("Reaped gave the status twice")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
