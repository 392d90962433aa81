package vmm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/sbuml/sbuml/internal/atomicfile"
	"github.com/sbuml/sbuml/internal/inject"
	"golang.org/x/sys/unix"
)

// A DirtyLog tells which pages of a machine's RAM were written since it
// was last armed. It is exact and kept by the host kernel: QEMU's mapping
// of guest RAM is registered with a userfaultfd in asynchronous
// write-protect mode (Linux 6.7 and later), so the first write to a page
// after arming unprotects it in the page table without waking anyone, and
// PAGEMAP_SCAN reads (and re-arms) the pages written. QEMU does not ask
// for this: sbuml makes the userfaultfd inside QEMU by borrowing its main
// thread for one system call (package inject) and leaves it in QEMU's
// descriptor table, where every later commit finds it. The cost to the
// guest is one minor fault at its first write to each page after each
// arming.
//
// What it cannot see: writes to the RAM file other than through QEMU's
// mapping (sbuml writes the file only before a machine's log exists), and
// pages QEMU discards (a balloon device, which sbuml machines do not
// have). Under TCG it is exact where QEMU's own dirty bitmap is not (see
// docs/design.md). It needs Linux 6.9: in 6.7 and 6.8 PAGEMAP_SCAN could
// take a page being migrated for a protected one (fixed by "fs/proc/
// task_mmu: fix uffd-wp confusion in pagemap_scan_pmd_entry").
type DirtyLog struct {
	id      string // "PID STARTTIME FD NONCE", as in DirtyLogFile
	pid     int
	pagemap *os.File
	start   uint64 // address of guest RAM in QEMU
	size    uint64
}

// ErrNoDirtyLog says the machine's QEMU keeps no dirty-page log: none was
// started, or QEMU was restarted since.
var ErrNoDirtyLog = errors.New("no dirty-page log")

// DirtyLogFile, in the machine directory, names the QEMU process that has
// a dirty-page log, the descriptor it holds it in, and when it was made
// (nanoseconds; a log made again in the same descriptor is another log):
// "PID STARTTIME FD NONCE".
const DirtyLogFile = "dirtylog"

// StartDirtyLog starts the machine's dirty-page log, armed: from now on
// every page written is reported. If the log is already there it is
// returned as it is (not re-armed). It fails where the host cannot keep
// one (see CheckDirtyLog), and then the machine is as it was.
func (m *Machine) StartDirtyLog() (*DirtyLog, error) {
	if d, err := m.OpenDirtyLog(); err == nil {
		return d, nil
	}
	if err := checkDirtyLogOnce(); err != nil {
		return nil, err
	}
	pid := m.PID()
	if pid == 0 {
		return nil, fmt.Errorf("dirty-page log of %s: %w", m.cfg.Name, m.notRunning(pid))
	}
	d, err := startDirtyLog(pid, m.RAMFile(), m.dir)
	if err != nil {
		return nil, fmt.Errorf("dirty-page log of %s: %w", m.cfg.Name, err)
	}
	return d, nil
}

// OpenDirtyLog returns the dirty-page log started earlier in the
// machine's running QEMU, or ErrNoDirtyLog.
func (m *Machine) OpenDirtyLog() (*DirtyLog, error) {
	pid := m.PID()
	if pid == 0 {
		return nil, ErrNoDirtyLog
	}
	b, err := os.ReadFile(filepath.Join(m.dir, DirtyLogFile))
	if err != nil {
		return nil, ErrNoDirtyLog
	}
	var rpid, fd int
	var start, nonce uint64
	if _, err := fmt.Sscan(string(b), &rpid, &start, &fd, &nonce); err != nil || rpid != pid {
		return nil, ErrNoDirtyLog
	}
	if st, err := processStart(pid); err != nil || st != start {
		return nil, ErrNoDirtyLog
	}
	if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd)); err != nil || l != "anon_inode:[userfaultfd]" {
		return nil, ErrNoDirtyLog
	}
	addr, size, err := ramMapping(pid, m.RAMFile())
	if err != nil {
		return nil, ErrNoDirtyLog
	}
	if ok, err := writeTracked(pid, addr); err != nil || !ok {
		return nil, ErrNoDirtyLog
	}
	return openDirtyLog(strings.TrimSpace(string(b)), pid, addr, size)
}

// ID names the log: it changes when QEMU or the log does, so a copy of RAM
// made when a log was armed can tell whether that log still runs.
func (d *DirtyLog) ID() string { return d.id }

// Written returns the byte ranges of the RAM file written since the log
// was last armed, sorted, and with rearm arms it again at the same
// instant: a page written while the scan runs is either reported now or
// the next time.
func (d *DirtyLog) Written(rearm bool) ([][2]int64, error) {
	var out [][2]int64
	vec := make([]pageRegion, 4096)
	// The kernel writes into vec through an address held as an integer.
	var pin runtime.Pinner
	pin.Pin(&vec[0])
	defer pin.Unpin()
	arg := pmScanArg{
		Size:   uint64(unsafe.Sizeof(pmScanArg{})),
		End:    d.start + d.size,
		Vec:    uint64(uintptr(unsafe.Pointer(&vec[0]))),
		VecLen: uint64(len(vec)),
		// Exactly these masks: only then does the kernel take its path
		// that counts a page table entry emptied since the last arming
		// (a tmpfs page reclaimed) as written. Another category in the
		// masks would miss such pages.
		CategoryMask: pageIsWritten,
		ReturnMask:   pageIsWritten,
	}
	if rearm {
		arg.Flags = pmScanWPMatching | pmScanCheckWPAsync
	}
	for start := d.start; start < arg.End; start = arg.WalkEnd {
		arg.Start = start
		n, _, e := unix.Syscall(unix.SYS_IOCTL, d.pagemap.Fd(), pagemapScan, uintptr(unsafe.Pointer(&arg)))
		if e != 0 {
			return nil, fmt.Errorf("scan the written pages of qemu %d: %w", d.pid, e)
		}
		for _, r := range vec[:n] {
			out = append(out, [2]int64{int64(r.Start - d.start), int64(r.End - d.start)})
		}
		if arg.WalkEnd <= start {
			return nil, fmt.Errorf("scan the written pages of qemu %d: no progress at %#x", d.pid, start)
		}
	}
	return out, nil
}

// Close releases the log's hold on QEMU's page map; the log itself stays
// with QEMU.
func (d *DirtyLog) Close() error { return d.pagemap.Close() }

// CheckDirtyLog says whether this host can keep dirty-page logs, without
// a machine: amd64, Linux 6.9 or later (PAGEMAP_SCAN and asynchronous
// write-protect userfaultfds came in 6.7, and 6.9 fixed a way the scan
// could miss a page), and the right to ptrace processes of this user
// (Yama's ptrace_scope). It returns nil or why not.
func CheckDirtyLog() error {
	if runtime.GOARCH != "amd64" {
		return fmt.Errorf("dirty-page logs are made on amd64 only, not %s", runtime.GOARCH)
	}
	if rel, ok := kernelAtLeast(6, 9); !ok {
		return fmt.Errorf("dirty-page logs need Linux 6.9 or later, this is %s", rel)
	}
	uffd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK, 0, 0)
	if e != 0 {
		return fmt.Errorf("userfaultfd: %w", e)
	}
	defer unix.Close(int(uffd))
	api := uffdioAPI{API: uffdAPI, Features: uffdFeatureWPHugetlbfsShmem | uffdFeatureWPUnpopulated | uffdFeatureWPAsync}
	if err := ioctl(int(uffd), uffdioAPIReq, unsafe.Pointer(&api)); err != nil {
		return fmt.Errorf("this kernel has no asynchronous write-protect userfaultfd (Linux 6.7): %w", err)
	}
	pm, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return err
	}
	defer pm.Close()
	arg := pmScanArg{Size: uint64(unsafe.Sizeof(pmScanArg{}))}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, pm.Fd(), pagemapScan, uintptr(unsafe.Pointer(&arg))); e != 0 {
		return fmt.Errorf("this kernel has no PAGEMAP_SCAN (Linux 6.7): %w", e)
	}
	b, err := os.ReadFile("/proc/sys/kernel/yama/ptrace_scope")
	scope := strings.TrimSpace(string(b))
	switch {
	case err != nil || scope == "0":
	case scope == "3":
		return errors.New("Yama forbids ptrace on this host (kernel.yama.ptrace_scope = 3)")
	case os.Geteuid() != 0:
		return fmt.Errorf("Yama lets only root (or CAP_SYS_PTRACE) trace QEMU here (kernel.yama.ptrace_scope = %s)", scope)
	}
	return nil
}

// startDirtyLog makes a userfaultfd in QEMU pid, registers the mapping of
// ramFile for asynchronous write protection, arms it and records it in
// dir.
func startDirtyLog(pid int, ramFile, dir string) (*DirtyLog, error) {
	addr, size, err := ramMapping(pid, ramFile)
	if err != nil {
		return nil, err
	}
	start, err := processStart(pid)
	if err != nil {
		return nil, err
	}
	if tracked, err := writeTracked(pid, addr); err == nil && tracked {
		// A log without a record (a process killed between making it
		// and writing the record): take it over, as a new log.
		fd, err := lostDirtyLog(pid)
		if err != nil {
			return nil, err
		}
		return recordDirtyLog(dir, pid, start, fd, addr, size)
	}
	r, err := inject.Syscall(pid, unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("make a userfaultfd in qemu %d: %w", pid, err)
	}
	fd := int(r)
	if err := registerDirtyLog(pid, fd, addr, size); err != nil {
		inject.Syscall(pid, unix.SYS_CLOSE, uintptr(fd))
		return nil, err
	}
	d, err := recordDirtyLog(dir, pid, start, fd, addr, size)
	if err != nil {
		inject.Syscall(pid, unix.SYS_CLOSE, uintptr(fd))
	}
	return d, err
}

// recordDirtyLog names the log in fd of QEMU pid in dir's DirtyLogFile.
func recordDirtyLog(dir string, pid int, start uint64, fd int, addr, size uint64) (*DirtyLog, error) {
	id := fmt.Sprintf("%d %d %d %d", pid, start, fd, time.Now().UnixNano())
	if err := atomicfile.WriteFile(filepath.Join(dir, DirtyLogFile), []byte(id+"\n"), 0o600); err != nil {
		return nil, err
	}
	return openDirtyLog(id, pid, addr, size)
}

// lostDirtyLog finds the one userfaultfd QEMU pid holds, when its guest
// RAM is registered but no record names the log.
func lostDirtyLog(pid int) (int, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	found := -1
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && l == "anon_inode:[userfaultfd]" {
			if found >= 0 {
				return 0, fmt.Errorf("qemu %d holds several userfaultfds: cannot tell which keeps the log", pid)
			}
			found, _ = strconv.Atoi(e.Name())
		}
	}
	if found < 0 {
		return 0, fmt.Errorf("qemu %d has its guest RAM registered with a userfaultfd it no longer holds", pid)
	}
	return found, nil
}

// checkDirtyLogOnce is CheckDirtyLog, asked once per process.
var checkDirtyLogOnce = sync.OnceValue(CheckDirtyLog)

// registerDirtyLog sets up the userfaultfd fd of QEMU pid, through a copy
// of it here: asynchronous write protection of guest RAM, armed. Its
// ioctls act on QEMU's memory, whoever makes them.
func registerDirtyLog(pid, fd int, addr, size uint64) error {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return err
	}
	defer unix.Close(pidfd)
	uffd, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return fmt.Errorf("take qemu's userfaultfd: %w", err)
	}
	defer unix.Close(uffd)
	api := uffdioAPI{API: uffdAPI, Features: uffdFeatureWPHugetlbfsShmem | uffdFeatureWPUnpopulated | uffdFeatureWPAsync}
	if err := ioctl(uffd, uffdioAPIReq, unsafe.Pointer(&api)); err != nil {
		return fmt.Errorf("userfaultfd features (asynchronous write protection needs Linux 6.7): %w", err)
	}
	reg := uffdioRegister{Start: addr, Len: size, Mode: uffdioRegisterModeWP}
	if err := ioctl(uffd, uffdioRegisterReq, unsafe.Pointer(&reg)); err != nil {
		return fmt.Errorf("register guest RAM for write protection: %w", err)
	}
	wp := uffdioWriteprotect{Start: addr, Len: size, Mode: uffdioWriteprotectModeWP}
	if err := ioctl(uffd, uffdioWriteprotectReq, unsafe.Pointer(&wp)); err != nil {
		return fmt.Errorf("write-protect guest RAM: %w", err)
	}
	return nil
}

func openDirtyLog(id string, pid int, addr, size uint64) (*DirtyLog, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return nil, err
	}
	return &DirtyLog{id: id, pid: pid, pagemap: f, start: addr, size: size}, nil
}

// ramMapping finds QEMU's mapping of the RAM file: its address and size.
// The mapping may be split into several adjacent areas.
func ramMapping(pid int, ramFile string) (addr, size uint64, err error) {
	fi, err := os.Stat(ramFile)
	if err != nil {
		return 0, 0, err
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode path
		fs := strings.Fields(sc.Text())
		if len(fs) < 6 || fs[5] != ramFile {
			continue
		}
		var s, e, off uint64
		if _, err := fmt.Sscanf(fs[0]+" "+fs[2], "%x-%x %x", &s, &e, &off); err != nil {
			continue
		}
		switch {
		case size == 0 && off == 0:
			addr, size = s, e-s
		case size != 0 && s == addr+size && off == size:
			size += e - s
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if size == 0 || int64(size) != fi.Size() {
		return 0, 0, fmt.Errorf("qemu %d does not map all of %s", pid, ramFile)
	}
	return addr, size, nil
}

// writeTracked reports whether the area of QEMU pid at addr is registered
// for write protection (VmFlags "uw" in smaps).
func writeTracked(pid int, addr uint64) (bool, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return false, err
	}
	head := []byte(strconv.FormatUint(addr, 16) + "-")
	i := bytes.Index(b, append([]byte("\n"), head...))
	if i < 0 && !bytes.HasPrefix(b, head) {
		return false, nil
	}
	rest := b[i+1:]
	j := bytes.Index(rest, []byte("VmFlags:"))
	if j < 0 {
		return false, nil
	}
	line, _, _ := bytes.Cut(rest[j:], []byte("\n"))
	return bytes.Contains(append(line, ' '), []byte(" uw ")), nil
}

// kernelAtLeast reports whether the running kernel's release is at least
// major.minor, and the release.
func kernelAtLeast(major, minor int) (string, bool) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown", false
	}
	rel := unix.ByteSliceToString(u.Release[:])
	var ma, mi int
	if _, err := fmt.Sscanf(rel, "%d.%d", &ma, &mi); err != nil {
		return rel, false
	}
	return rel, ma > major || ma == major && mi >= minor
}

// processStart returns the start time of process pid (field 22 of its
// stat, in clock ticks since boot): with the pid, it names one process.
func processStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: too short", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg)); e != 0 {
		return e
	}
	return nil
}

// The userfaultfd and PAGEMAP_SCAN interfaces (linux/userfaultfd.h,
// linux/fs.h), which golang.org/x/sys does not have.
const (
	uffdAPI                     = 0xAA
	uffdFeatureWPHugetlbfsShmem = 1 << 12
	uffdFeatureWPUnpopulated    = 1 << 13
	uffdFeatureWPAsync          = 1 << 15
	uffdioRegisterModeWP        = 1 << 1
	uffdioWriteprotectModeWP    = 1 << 0

	uffdioAPIReq          = 0xC018AA3F // _IOWR(0xAA, 0x3F, struct uffdio_api)
	uffdioRegisterReq     = 0xC020AA00 // _IOWR(0xAA, 0x00, struct uffdio_register)
	uffdioWriteprotectReq = 0xC018AA06 // _IOWR(0xAA, 0x06, struct uffdio_writeprotect)
	pagemapScan           = 0xC0606610 // _IOWR('f', 16, struct pm_scan_arg)

	pmScanWPMatching   = 1 << 0
	pmScanCheckWPAsync = 1 << 1
	pageIsWritten      = 1 << 1
)

type uffdioAPI struct{ API, Features, Ioctls uint64 }

type uffdioRegister struct{ Start, Len, Mode, Ioctls uint64 }

type uffdioWriteprotect struct{ Start, Len, Mode uint64 }

type pmScanArg struct {
	Size, Flags, Start, End, WalkEnd, Vec, VecLen, MaxPages       uint64
	CategoryInverted, CategoryMask, CategoryAnyofMask, ReturnMask uint64
}

type pageRegion struct{ Start, End, Categories uint64 }
