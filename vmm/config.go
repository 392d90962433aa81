package vmm

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sbuml/sbuml/internal/atomicfile"
)

// Names of the files in a machine directory.
const (
	ConfigFile    = "config.json"  // the machine's Config
	QMPSocket     = "qmp.sock"     // QEMU's QMP server
	ConsoleSocket = "console.sock" // the serial console, one client at a time
	ConsoleLog    = "console.log"  // everything the serial console printed
	PIDFile       = "qemu.pid"     // QEMU's pid, from Boot until Halt
	QEMULog       = "qemu.log"     // QEMU's stdout and stderr
	LockFile      = "lock"         // flock held by the sbuml process driving the machine
	ConsoleLock   = "console.lock" // flock held by the sbuml process showing the console
	RAMFileName   = "ram"          // guest RAM, in the machine directory or a tmpfs directory
	EventsSocket  = "events.sock"  // a second QMP server, for a process watching events (DialEvents)
	VNCSocket     = "vnc.sock"     // QEMU's VNC server, when the machine has a display (ServeVNC)
	AgentSocket   = "agent.sock"   // the guest agent's virtio-serial port, one client at a time (Config.Agent)
)

// sockets are the files QEMU listens on; Boot and Halt remove them.
var sockets = []string{QMPSocket, ConsoleSocket, EventsSocket, VNCSocket, AgentSocket}

// AgentPortName is the name the guest sees for the agent's virtio-serial
// port, in /sys/class/virtio-ports/*/name.
const AgentPortName = "org.sbuml.agent.0"

// DefaultRAMRoot is where guest RAM files live unless asked otherwise: one
// directory per machine, on tmpfs.
const DefaultRAMRoot = "/dev/shm/sbuml"

// Defaults for Config fields left zero.
const (
	DefaultMemory = 512 << 20
	DefaultCPUs   = 1
	DefaultAccel  = "tcg"
)

// Config describes a machine. Boot fills in the fields left empty and
// writes the result to config.json in the machine directory; everything
// needed to start the same virtual hardware again is recorded there.
//
// Relative paths (Kernel, Initrd, Disks, RAMFile) are relative to the
// machine directory.
type Config struct {
	Name        string    `json:"name"`                 // default: base name of the directory
	Memory      int64     `json:"memory"`               // guest RAM in bytes, a multiple of 1 MiB
	CPUs        int       `json:"cpus"`                 // number of vCPUs
	Accel       string    `json:"accel"`                // "tcg" or "kvm" (see ChooseAccel)
	QEMUVersion string    `json:"qemu_version"`         // filled by Boot
	MachineType string    `json:"machine_type"`         // pinned, e.g. "pc-q35-7.2"; default: newest installed
	CPUModel    string    `json:"cpu_model"`            // -cpu argument; default DefaultCPUModel
	Kernel      string    `json:"kernel,omitempty"`     // bzImage; empty: the firmware idles
	Initrd      string    `json:"initrd,omitempty"`     // initramfs
	Cmdline     string    `json:"cmdline,omitempty"`    // kernel command line
	Disks       []string  `json:"disks,omitempty"`      // raw disk files, attached as virtio-blk in order
	RAMFile     string    `json:"ram_file"`             // default: DefaultRAMRoot/<name>-<random>/ram
	RAMDir      string    `json:"ram_dir,omitempty"`    // directory made for RAMFile, removed with it
	BaseImage   string    `json:"base_image,omitempty"` // ID of the image the machine came from
	Created     time.Time `json:"created"`              // default: now
	Net         *Net      `json:"net,omitempty"`        // nil: no network card
	Display     string    `json:"display,omitempty"`    // "" (none) or DisplayVNC
	// Agent gives the guest a virtio-serial port named AgentPortName,
	// served by QEMU on AgentSocket in the machine directory, for the
	// sbuml-guest agent (package agent). It changes the virtual hardware,
	// so a machine keeps the value it was booted with.
	Agent bool `json:"agent,omitempty"`

	// Boot holds options that only matter while starting QEMU; they are
	// not recorded in config.json.
	Boot BootOptions `json:"-"`
}

// BootOptions are per-boot choices that are not part of the machine.
type BootOptions struct {
	// QEMU is the emulator binary; default QEMUBinary from PATH.
	QEMU string
	// Incoming starts QEMU paused, waiting for LoadDeviceState
	// (-incoming defer). RAMFile must then hold the saved RAM.
	Incoming bool
	// RAMInDir puts the RAM file in the machine directory instead of
	// on tmpfs. Ignored if Config.RAMFile is set.
	RAMInDir bool
	// RAMRoot replaces DefaultRAMRoot. Ignored if Config.RAMFile is set.
	RAMRoot string
	// Snapshot attaches the disks with snapshot=on: the guest's writes go
	// to a temporary overlay and are discarded. For throwaway machines
	// (accelerator probes) that boot shared image disks.
	Snapshot bool
}

func (c *Config) setDefaults(dir string) {
	if c.Name == "" {
		c.Name = filepath.Base(dir)
	}
	if c.Memory == 0 {
		c.Memory = DefaultMemory
	}
	if c.CPUs == 0 {
		c.CPUs = DefaultCPUs
	}
	if c.Accel == "" {
		c.Accel = DefaultAccel
	}
	if c.CPUModel == "" {
		c.CPUModel = DefaultCPUModel
	}
	if c.Created.IsZero() {
		c.Created = time.Now().UTC().Truncate(time.Second)
	}
	if c.Net != nil {
		c.Net.setDefaults()
	}
}

func (c *Config) validate(dir string) error {
	switch {
	case c.Memory < 16<<20 || c.Memory%(1<<20) != 0:
		return fmt.Errorf("memory %d bytes: want a multiple of 1 MiB, at least 16 MiB", c.Memory)
	case c.CPUs < 1 || c.CPUs > 255:
		return fmt.Errorf("cpus %d: want 1 to 255", c.CPUs)
	case c.Accel != "tcg" && c.Accel != "kvm":
		return fmt.Errorf("accel %q: want tcg or kvm (resolve auto with ChooseAccel)", c.Accel)
	case strings.ContainsAny(c.Name, "/\x00") || strings.ContainsRune(c.Name, ','):
		return fmt.Errorf("machine name %q: must not contain '/', ',' or NUL", c.Name)
	case c.Initrd != "" && c.Kernel == "":
		return fmt.Errorf("initrd %s given without a kernel", c.Initrd)
	case c.Cmdline != "" && c.Kernel == "":
		return fmt.Errorf("kernel command line given without a kernel")
	case c.Display != "" && c.Display != DisplayVNC:
		return fmt.Errorf("display %q: want none (\"\") or %q", c.Display, DisplayVNC)
	}
	if c.Net != nil {
		if err := c.Net.validate(); err != nil {
			return err
		}
	}
	files := []struct{ what, path string }{{"kernel", c.Kernel}, {"initrd", c.Initrd}}
	for _, d := range c.Disks {
		files = append(files, struct{ what, path string }{"disk", d})
	}
	for _, f := range files {
		if f.path == "" {
			continue
		}
		p := resolve(dir, f.path)
		if strings.ContainsRune(p, ',') {
			return fmt.Errorf("%s %s: QEMU options cannot hold a ','", f.what, p)
		}
		fi, err := os.Stat(p)
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return fmt.Errorf("%s %s: %w", f.what, p, err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s %s: not a regular file", f.what, p)
		}
	}
	if strings.ContainsRune(c.RAMFile, ',') {
		return fmt.Errorf("ram file %s: QEMU options cannot hold a ','", c.RAMFile)
	}
	return nil
}

// resolve makes p absolute, relative to the machine directory.
func resolve(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// qemuArgs builds QEMU's command line. QEMU runs with the machine
// directory as its working directory, so the sockets, logs and pid file are
// named relative to it (socket paths are limited to 108 bytes).
func (c *Config) qemuArgs() []string {
	a := []string{
		"-name", "guest=" + c.Name,
		"-nodefaults", "-no-user-config",
		"-display", "none",
		"-no-reboot",
		"-msg", "timestamp=on",
		"-machine", c.MachineType + ",memory-backend=ram0",
		"-accel", c.Accel,
		"-cpu", c.CPUModel,
		"-smp", strconv.Itoa(c.CPUs),
		"-m", strconv.FormatInt(c.Memory>>20, 10) + "M",
		"-object", "memory-backend-file,id=ram0,size=" + strconv.FormatInt(c.Memory, 10) +
			",mem-path=" + c.RAMFile + ",share=on,prealloc=off",
		"-chardev", "socket,id=qmp,path=" + QMPSocket + ",server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
		"-chardev", "socket,id=events,path=" + EventsSocket + ",server=on,wait=off",
		"-mon", "chardev=events,mode=control",
		"-chardev", "socket,id=console,path=" + ConsoleSocket + ",server=on,wait=off,logfile=" + ConsoleLog + ",logappend=on",
		"-serial", "chardev:console",
	}
	if c.Kernel != "" {
		a = append(a, "-kernel", c.Kernel)
		if c.Initrd != "" {
			a = append(a, "-initrd", c.Initrd)
		}
		if c.Cmdline != "" {
			a = append(a, "-append", c.Cmdline)
		}
	}
	a = append(a, c.diskArgs()...)
	// The card and the display come after the disks, which thus keep the
	// PCI addresses they have in machines without them.
	if c.Net != nil {
		a = append(a, c.Net.args()...)
	}
	if c.Display == DisplayVNC {
		a = append(a, displayArgs()...)
	}
	if c.Agent {
		a = append(a, "-device", "virtio-serial-pci,id=vser0",
			"-chardev", "socket,id=agent,path="+AgentSocket+",server=on,wait=off",
			"-device", "virtserialport,bus=vser0.0,chardev=agent,name="+AgentPortName)
	}
	if c.Boot.Incoming {
		a = append(a, "-S", "-incoming", "defer")
	}
	return a
}

// diskArgs attaches the disks as virtio-blk devices named disk0,
// disk1, ... in order.
func (c *Config) diskArgs() []string {
	var a []string
	for i, d := range c.Disks {
		id := "disk" + strconv.Itoa(i)
		// file.drop-cache=off: after a save, cont (and, on the incoming
		// side, the end of the load) re-activates the disks, which by
		// default flushes each and drops all its pages from the host's
		// page cache, in the frozen window and for nothing: the cache of
		// one host is coherent, the drop is for shared storage seen from
		// another host.
		opt := "file=" + d + ",format=raw,if=none,id=" + id + ",cache=writeback,file.drop-cache=off,discard=unmap"
		if c.Boot.Snapshot {
			opt += ",snapshot=on"
		}
		a = append(a, "-drive", opt, "-device", "virtio-blk-pci,drive="+id+",serial="+id)
	}
	return a
}

func readConfig(dir string) (*Config, error) {
	b, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("%s is not a machine directory: no %s", dir, ConfigFile)
		}
		return nil, err
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ConfigFile), err)
	}
	if c.MachineType == "" || c.Memory == 0 || c.RAMFile == "" {
		return nil, fmt.Errorf("%s: incomplete machine config (no machine_type, memory or ram_file)", filepath.Join(dir, ConfigFile))
	}
	return &c, nil
}

func writeConfig(dir string, c *Config) error {
	return writeJSON(filepath.Join(dir, ConfigFile), c)
}

// writeJSON replaces the file name with v as indented JSON, atomically:
// the machine directory's records (config.json, spare.json).
func writeJSON(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(name, append(b, '\n'), 0o600)
}

// LoadConfig reads the configuration of the machine in dir without
// locking it, for processes that watch a machine another one drives.
func LoadConfig(dir string) (*Config, error) {
	return readConfig(dir)
}
