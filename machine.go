package sbuml

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/sbuml/sbuml/image"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
	"github.com/sbuml/sbuml/scrapbook"
	"github.com/sbuml/sbuml/vmm"
	"golang.org/x/sys/unix"
)

// Files of a machine directory that sbuml adds to vmm's.
const (
	machineKernel = "kernel"
	machineInitrd = "initrd"
	machineDisk   = "disk.img"
)

// ReadyTimeout bounds how long Boot waits for the guest's ready marker.
const ReadyTimeout = 3 * time.Minute

// MachinesDir returns the directory holding named machines.
func (s *Scrapbook) MachinesDir() string { return filepath.Join(s.Dir, scrapbook.MachinesDir) }

// MachineDir turns a machine argument into its directory. As in SBUML, a
// machine is either a name, kept under the scrapbook's machines/
// directory, or a directory the user chooses (an argument holding a '/').
func (s *Scrapbook) MachineDir(machine string) (string, error) {
	if strings.ContainsRune(machine, '/') {
		return filepath.Abs(machine)
	}
	if err := ValidateMachineName(machine); err != nil {
		return "", err
	}
	return filepath.Join(s.MachinesDir(), machine), nil
}

// ValidateMachineName checks a machine name: it is also the name of the
// machine's branch, so branch name rules apply, and it may not hold '/'.
func ValidateMachineName(name string) error {
	if name == "" {
		return errors.New("empty machine name")
	}
	if strings.ContainsAny(name, "/,") {
		return fmt.Errorf("bad machine name %q: must not contain '/' or ','", name)
	}
	if err := refs.ValidateShortName(name); err != nil {
		return fmt.Errorf("bad machine name: %v", err)
	}
	return nil
}

// FreeMachineName returns base, or base-2, base-3, … : the first name no
// machine uses yet.
func (s *Scrapbook) FreeMachineName(base string) (string, error) {
	if err := ValidateMachineName(base); err != nil {
		return "", err
	}
	for i := 1; i < 1000; i++ {
		name := base
		if i > 1 {
			name = fmt.Sprintf("%s-%d", base, i)
		}
		if _, err := os.Stat(filepath.Join(s.MachinesDir(), name)); errors.Is(err, os.ErrNotExist) {
			return name, nil
		}
	}
	return "", fmt.Errorf("no free machine name like %s", base)
}

// machineName returns the name a machine directory goes by.
func machineName(dir string) string { return filepath.Base(dir) }

// elsewhereDir holds a symbolic link to each machine kept in a directory
// of the user's choosing, so that ps, halt --all and gc find them too.
func (s *Scrapbook) elsewhereDir() string { return filepath.Join(s.MachinesDir(), ".elsewhere") }

// isNamedMachine reports whether dir is a named machine's, under machines/.
func (s *Scrapbook) isNamedMachine(dir string) bool {
	return strings.HasPrefix(dir, s.MachinesDir()+string(filepath.Separator))
}

func (s *Scrapbook) elsewhereLink(dir string) string {
	return filepath.Join(s.elsewhereDir(), objects.Sum([]byte(dir)).String()[:16])
}

// rememberMachine records a machine directory outside machines/. It is
// best effort: a machine not remembered still runs, only ps, halt --all
// and gc do not see it.
func (s *Scrapbook) rememberMachine(dir string) {
	if s.isNamedMachine(dir) {
		return
	}
	if err := os.MkdirAll(s.elsewhereDir(), 0o755); err != nil {
		return
	}
	link := s.elsewhereLink(dir)
	os.Remove(link)
	os.Symlink(dir, link)
}

// forgetMachine removes what rememberMachine recorded.
func (s *Scrapbook) forgetMachine(dir string) {
	if !s.isNamedMachine(dir) {
		os.Remove(s.elsewhereLink(dir))
	}
}

// machinesElsewhere returns the remembered machine directories outside
// machines/ that still hold a machine, forgetting the others.
func (s *Scrapbook) machinesElsewhere() ([]string, error) {
	des, err := os.ReadDir(s.elsewhereDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, de := range des {
		link := filepath.Join(s.elsewhereDir(), de.Name())
		dir, err := os.Readlink(link)
		if err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, vmm.ConfigFile)); err != nil {
			os.Remove(link) // halted and removed by hand, or never booted
			continue
		}
		dirs = append(dirs, dir)
	}
	sort.Strings(dirs)
	return dirs, nil
}

// BootOptions choose the hardware and image of a new machine.
type BootOptions struct {
	// Base names the base image (default DefaultImage).
	Base string
	// Memory is the guest RAM in bytes (default 512 MiB).
	Memory int64
	// CPUs is the number of vCPUs (default 1).
	CPUs int
	// DiskSize grows the root disk (and its file system) to this many
	// bytes; 0 keeps the image's size.
	DiskSize int64
	// Accel is kvm, tcg or auto (default auto: KVM only where a probe
	// boot showed that it really runs guests).
	Accel string
	// RAMInDir keeps guest RAM in the machine directory instead of tmpfs.
	RAMInDir bool
	// Net is the machine's network: "user" (a virtio card on QEMU's
	// user-mode network) or "none"; default "user" for images that
	// configure a card by themselves, else "none".
	Net string
	// Forwards are TCP ports of the host forwarded to the guest (Net
	// "user"). An image running sshd also gets its port 22 forwarded from
	// a free host port, unless a forward names it.
	Forwards []vmm.Forward
	// Display gives the machine a graphics card whose screen VNC viewers
	// reach ("vnc"); default none.
	Display string
	// Autosnap, if set, turns on automatic snapshots once the machine
	// runs (see SetAutosnap).
	Autosnap *AutosnapConfig
	// Progress receives a line per slow step (image build, accelerator probe).
	Progress io.Writer
}

// AccelCachePath is where the per-host accelerator verdict is kept.
func AccelCachePath() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "sbuml", "accel.json")
}

// chooseAccel resolves want (kvm, tcg, auto) for booting img. If a probe
// has to boot img, it calls ready first (nil: img's files are in place).
func chooseAccel(ctx context.Context, want string, img *image.Image, progress io.Writer, ready func(context.Context) error) (string, error) {
	probeCfg := vmm.Config{Memory: 256 << 20, Kernel: img.Kernel, Initrd: img.Initrd, Cmdline: img.Cmdline, Disks: []string{img.Disk}}
	boot := vmm.BootProbe(probeCfg, img.ReadyMarker)
	probe := func(ctx context.Context, accel string) error {
		if ready != nil {
			if err := ready(ctx); err != nil {
				return err
			}
		}
		if progress != nil {
			fmt.Fprintf(progress, "probing whether %s runs guests on this host (once per host)\n", accel)
		}
		return boot(ctx, accel)
	}
	return vmm.ChooseAccel(ctx, want, AccelCachePath(), probe)
}

// probeImage returns the image chooseAccel may probe KVM with to boot
// img: img itself, unless it prints no ready marker and want is auto.
// The probe waits for a marker, and the verdict it reaches is kept for
// the host, so such an image is probed with the default image instead.
func (s *Scrapbook) probeImage(ctx context.Context, want string, img *image.Image, progress io.Writer) (*image.Image, error) {
	if img.ReadyMarker != "" || (want != "auto" && want != "") {
		return img, nil
	}
	_, probe, err := s.Image(ctx, DefaultImage, progress)
	return probe, err
}

// Boot creates a machine from a base image and starts it (SBUML's
// sbumlboot). It returns once the guest prints its ready marker. The
// machine directory receives its own copy of the kernel, initrd and root
// disk, so it is self-contained.
func (s *Scrapbook) Boot(ctx context.Context, machine string, opts BootOptions) (*vmm.Machine, error) {
	dir, err := s.MachineDir(machine)
	if err != nil {
		return nil, err
	}
	if err := checkFreeMachineDir(dir); err != nil {
		return nil, err
	}
	// No QEMU, no machine: say so before building an image.
	if _, err := vmm.InspectQEMU(ctx, ""); err != nil {
		return nil, fmt.Errorf("boot %s: %w", machine, err)
	}
	imgID, img, err := s.Image(ctx, opts.Base, opts.Progress)
	if err != nil {
		return nil, fmt.Errorf("boot %s: %w", machine, err)
	}
	probe, err := s.probeImage(ctx, opts.Accel, img, opts.Progress)
	if err != nil {
		return nil, fmt.Errorf("boot %s: %w", machine, err)
	}
	accel, err := chooseAccel(ctx, opts.Accel, probe, opts.Progress, nil)
	if err != nil {
		return nil, fmt.Errorf("boot %s: %w", machine, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("boot %s: %w", machine, err)
	}
	if err := populateMachineDir(ctx, dir, img, opts.DiskSize); err != nil {
		removeMachineFiles(dir)
		os.Remove(dir) // only if nothing else is in it
		return nil, fmt.Errorf("boot %s: %w", machine, err)
	}
	kernel, initrd := machineBootFiles(img)
	cfg := vmm.Config{
		Name:      machineName(dir),
		Memory:    opts.Memory,
		CPUs:      opts.CPUs,
		Accel:     accel,
		Kernel:    kernel,
		Initrd:    initrd,
		Cmdline:   img.Cmdline,
		Disks:     []string{machineDisk},
		BaseImage: imgID.String(),
		Agent:     img.Agent,
		Display:   opts.Display,
	}
	if cfg.Net, err = bootNet(img, opts); err != nil {
		removeMachineFiles(dir)
		os.Remove(dir)
		return nil, fmt.Errorf("boot %s: %w", machine, err)
	}
	cfg.Boot.RAMInDir = opts.RAMInDir
	m, err := vmm.Boot(ctx, dir, cfg)
	if err != nil {
		// Leave the name free for the next try, as Checkout does.
		removeMachineFiles(dir)
		os.Remove(dir) // only if nothing else is in it
		return nil, fmt.Errorf("boot %s: %w", machine, err)
	}
	s.rememberMachine(dir)
	if img.ReadyMarker != "" {
		wctx, cancel := context.WithTimeout(ctx, ReadyTimeout)
		defer cancel()
		if err := m.WaitConsole(wctx, img.ReadyMarker); err != nil {
			return m, fmt.Errorf("boot %s: guest did not get ready (see 'sbuml console %s --tail'): %w", machine, machine, err)
		}
	}
	s.keepMachine(dir, opts.Progress)
	if opts.Autosnap != nil {
		if err := s.SetAutosnap(ctx, dir, *opts.Autosnap); err != nil {
			return m, fmt.Errorf("boot %s: %w", machine, err)
		}
	}
	return m, nil
}

// bootNet returns the network card of a machine booted from img.
func bootNet(img *image.Image, opts BootOptions) (*vmm.Net, error) {
	mode := opts.Net
	if mode == "" {
		mode = "none"
		if img.Net || len(opts.Forwards) > 0 {
			mode = vmm.NetUser
		}
	}
	switch mode {
	case "none":
		if len(opts.Forwards) > 0 {
			return nil, errors.New("port forwards need a network card: --net user")
		}
		return nil, nil
	case vmm.NetUser:
	default:
		return nil, fmt.Errorf("network %q: want user or none", mode)
	}
	n := &vmm.Net{Mode: vmm.NetUser, Forwards: append([]vmm.Forward(nil), opts.Forwards...)}
	if img.SSH && !forwardsPort(n.Forwards, 22) {
		n.Forwards = append(n.Forwards, vmm.Forward{HostAddr: vmm.DefaultForwardAddr, GuestPort: 22})
	}
	return n, nil
}

func forwardsPort(fwds []vmm.Forward, guestPort int) bool {
	for _, f := range fwds {
		if f.GuestPort == guestPort {
			return true
		}
	}
	return false
}

// checkFreeMachineDir refuses a directory that holds a live machine or
// unrelated files.
func checkFreeMachineDir(dir string) error {
	des, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(des) == 0) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, vmm.ConfigFile)); err != nil {
		return fmt.Errorf("%s exists and is not a machine directory", dir)
	}
	m, err := vmm.Open(dir)
	if err != nil {
		return fmt.Errorf("machine %s is in use: %w", machineName(dir), err)
	}
	defer m.Close()
	st, err := m.Status(context.Background())
	if err == nil && st.State == vmm.StateHalted {
		return fmt.Errorf("machine %s already exists (halted); remove %s or choose another name", machineName(dir), dir)
	}
	return fmt.Errorf("machine %s already exists (%s); halt it first or choose another name", machineName(dir), st.State)
}

// populateMachineDir gives dir its own boot files (see machineBootFiles)
// and root disk.
func populateMachineDir(ctx context.Context, dir string, img *image.Image, diskSize int64) error {
	for _, f := range []struct{ dst, src string }{{machineKernel, img.Kernel}, {machineInitrd, img.Initrd}} {
		dst := filepath.Join(dir, f.dst)
		os.Remove(dst)
		if f.src == "" {
			continue
		}
		if err := os.Link(f.src, dst); err != nil {
			if err := image.CopySparse(dst, f.src); err != nil {
				return err
			}
		}
	}
	disk := filepath.Join(dir, machineDisk)
	os.Remove(disk)
	if err := image.CopySparse(disk, img.Disk); err != nil {
		return err
	}
	if diskSize > 0 {
		return growDisk(ctx, disk, diskSize)
	}
	return nil
}

// machineBootFiles names the kernel and initrd of a machine booted from
// img, as vmm.Config wants them: none for an image that boots by BIOS
// (QEMU then runs the disk's boot loader), no initrd for a kernel that
// needs none.
func machineBootFiles(img *image.Image) (kernel, initrd string) {
	if img.Kernel != "" {
		kernel = machineKernel
	}
	if img.Initrd != "" {
		initrd = machineInitrd
	}
	return kernel, initrd
}

// growDisk enlarges a raw disk file, and its file system if the disk is
// a bare ext4 file system. Any other disk (partitioned, another file
// system) grows only as a file: the guest sees a larger disk and may
// grow its partitions itself.
func growDisk(ctx context.Context, disk string, size int64) error {
	fi, err := os.Stat(disk)
	if err != nil {
		return err
	}
	if size%(1<<20) != 0 {
		return fmt.Errorf("disk size %d: want a multiple of 1 MiB", size)
	}
	if size < fi.Size() {
		return fmt.Errorf("disk size %d MiB is smaller than the image's %d MiB", size>>20, fi.Size()>>20)
	}
	if size == fi.Size() {
		return nil
	}
	if err := os.Truncate(disk, size); err != nil {
		return err
	}
	if !isExt4(disk) {
		return nil
	}
	out, err := exec.CommandContext(ctx, "resize2fs", "-f", disk).CombinedOutput()
	if err != nil {
		return fmt.Errorf("resize2fs %s: %v: %s (apt-get install e2fsprogs)", disk, err, lastLine(string(out)))
	}
	return nil
}

// isExt4 reports whether a disk file starts with an ext2, ext3 or ext4
// file system: its superblock (at 1024) holds the magic 0xEF53 at 56.
func isExt4(disk string) bool {
	f, err := os.Open(disk)
	if err != nil {
		return false
	}
	defer f.Close()
	magic := make([]byte, 2)
	_, err = f.ReadAt(magic, 1024+56)
	return err == nil && magic[0] == 0x53 && magic[1] == 0xEF
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// OpenMachine opens a machine by name or directory.
func (s *Scrapbook) OpenMachine(machine string) (*vmm.Machine, error) {
	dir, err := s.MachineDir(machine)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, vmm.ConfigFile)); err != nil {
		return nil, fmt.Errorf("no machine %s (see 'sbuml ps')", machine)
	}
	return vmm.Open(dir)
}

// Halt stops a machine and deletes its resources (SBUML's sbumlhalt):
// QEMU, the RAM file and the machine directory. A machine kept in a
// directory of the user's choosing keeps its directory, emptied of the
// machine's files.
func (s *Scrapbook) Halt(ctx context.Context, machine string) error {
	m, err := s.OpenMachine(machine)
	if err != nil {
		return err
	}
	dir := m.Dir()
	herr := m.Halt(ctx)
	m.Close()
	if herr != nil {
		return herr
	}
	if s.isNamedMachine(dir) {
		return removeMachineDir(dir)
	}
	if err := removeMachineFiles(dir); err != nil {
		return err
	}
	s.forgetMachine(dir)
	return nil
}

// removeMachineDir removes a halted machine's directory. A process that
// lists machines meanwhile (sbuml ps, sbuml ui, which lists them as soon
// as a machine's files change) opens each machine's lock file, creating
// it again if it was just removed; so removal is tried again, for up to
// a second, while the directory is found not empty.
func removeMachineDir(dir string) error {
	var err error
	for range 20 {
		if err = os.RemoveAll(dir); !errors.Is(err, unix.ENOTEMPTY) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}

func removeMachineFiles(dir string) error {
	for _, f := range []string{vmm.ConfigFile, vmm.QMPSocket, vmm.ConsoleSocket, vmm.EventsSocket, vmm.VNCSocket, vmm.AgentSocket,
		vmm.ConsoleLog, vmm.PIDFile, vmm.QEMULog, vmm.LockFile, vmm.ConsoleLock, vmm.RAMFileName, vmm.SpareFile, machineKernel, machineInitrd, machineDisk, headFile,
		keeperLockFile, keeperPIDFile, keeperSocket, keeperLogFile, keeperLogFile + ".1", runStateFile, autosnapFile, autosnapStateFile, sshKnownHosts} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// HaltAll halts every machine of the scrapbook: those under its machines
// directory and those it booted or checked out in directories elsewhere;
// and it stops its spares, named "spare " and the spare's key.
func (s *Scrapbook) HaltAll(ctx context.Context) ([]string, error) {
	infos, err := s.Machines(ctx)
	if err != nil {
		return nil, err
	}
	var names []string
	var errs []error
	for _, in := range infos {
		if err := s.Halt(ctx, in.Dir); err != nil {
			errs = append(errs, fmt.Errorf("halt %s: %w", in.Name, err))
			continue
		}
		names = append(names, in.Name)
	}
	spares, err := s.StopSpares(ctx, "")
	for _, dir := range spares {
		names = append(names, "spare "+filepath.Base(dir))
	}
	return names, errors.Join(append(errs, err)...)
}

// Freeze stops a machine's vCPUs (SBUML's sbumlfreeze).
func (s *Scrapbook) Freeze(ctx context.Context, machine string) error {
	m, err := s.OpenMachine(machine)
	if err != nil {
		return err
	}
	defer m.Close()
	return m.Freeze(ctx)
}

// Continue resumes a frozen machine (SBUML's sbumlcontinue).
func (s *Scrapbook) Continue(ctx context.Context, machine string) error {
	m, err := s.OpenMachine(machine)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.Continue(ctx); err != nil {
		return err
	}
	// The guest runs again: the device state of its last snapshot is no
	// longer its current one.
	if head, err := readHead(m.Dir()); err == nil && head.Frozen {
		head.Frozen = false
		return writeHead(m.Dir(), head)
	}
	return nil
}

// MachineInfo is one line of Machines.
type MachineInfo struct {
	Name     string        `json:"name"`
	Dir      string        `json:"dir"`
	State    vmm.State     `json:"state"`
	Memory   int64         `json:"memory"`
	CPUs     int           `json:"cpus"`
	Accel    string        `json:"accel"`
	Uptime   time.Duration `json:"uptime_ns"`
	PID      int           `json:"pid,omitempty"`
	Detail   string        `json:"detail,omitempty"`
	Snapshot string        `json:"snapshot,omitempty"`
	// Child is the machine's number among the machines checked out of
	// its snapshot's ckpt() (what ckpt() returned in it).
	Child int `json:"child,omitempty"`
	// Net is "user" or "none"; Forwards its TCP port forwards, host
	// ports as chosen.
	Net      string        `json:"net"`
	Forwards []vmm.Forward `json:"forwards"`
	// Display is "vnc" for a machine with a screen, else "".
	Display string `json:"display,omitempty"`
	// Agent says the machine has an agent port (sbuml exec, cp, ckpt).
	Agent bool `json:"agent"`
	// Keeper says the machine's keeper runs.
	Keeper bool `json:"keeper"`
	// Autosnap is the machine's thinkback interval, 0 when off.
	Autosnap time.Duration `json:"autosnap_ns,omitempty"`
}

// Machines lists the machines of the scrapbook: those under its machines
// directory, by name, then those in directories elsewhere, by path.
func (s *Scrapbook) Machines(ctx context.Context) ([]MachineInfo, error) {
	infos, err := vmm.List(ctx, s.MachinesDir())
	if errors.Is(err, os.ErrNotExist) {
		return []MachineInfo{}, nil
	}
	if err != nil {
		return nil, err
	}
	elsewhere, err := s.machinesElsewhere()
	if err != nil {
		return nil, err
	}
	for _, dir := range elsewhere {
		infos = append(infos, vmm.Inspect(ctx, dir))
	}
	out := make([]MachineInfo, 0, len(infos))
	for _, in := range infos {
		name := machineName(in.Dir)
		if !s.isNamedMachine(in.Dir) {
			name = in.Dir
		}
		mi := MachineInfo{Name: name, Dir: in.Dir, State: in.Status.State, Memory: in.Config.Memory,
			CPUs: in.Config.CPUs, Accel: in.Config.Accel, Uptime: in.Status.Uptime, PID: in.Status.PID, Detail: in.Status.Detail}
		if in.Err != nil {
			mi.State, mi.Detail = vmm.StateCrashed, in.Err.Error()
		}
		if h, err := readHead(in.Dir); err == nil && !h.Snapshot.IsZero() {
			mi.Snapshot, mi.Child = h.Snapshot.String(), h.Child
		}
		mi.Net, mi.Forwards = "none", []vmm.Forward{}
		if n := in.Config.Net; n != nil {
			mi.Net, mi.Forwards = n.Mode, append(mi.Forwards, n.Forwards...)
		}
		mi.Display, mi.Agent = in.Config.Display, in.Config.Agent
		mi.Keeper = keeperOf(in.Dir).Running
		if c, err := readAutosnapConfig(in.Dir); err == nil && c != nil {
			mi.Autosnap = c.Every
		}
		out = append(out, mi)
	}
	return out, nil
}
