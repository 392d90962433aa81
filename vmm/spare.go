package vmm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SpareFile, in a spare's directory, records what the spare was started
// for (SpareInfo).
const SpareFile = "spare.json"

// ErrNoSpare is returned by ClaimSpare when no spare of the shape asked
// for is waiting.
var ErrNoSpare = errors.New("no spare of this shape is waiting")

// Shape is everything of a machine that its guest or its saved device
// state can see, and hence that a QEMU started ahead of need (a spare)
// must have been started with: all of Config but its name, files, RAM
// file and port forwards, plus the sizes of its disks and the identity
// of its kernel and initrd contents. Its disks' names are part of it
// too: a spare opens its disk files, and a checkout writes into them.
type Shape struct {
	Memory      int64    `json:"memory"`
	CPUs        int      `json:"cpus"`
	Accel       string   `json:"accel"`
	MachineType string   `json:"machine_type"`
	CPUModel    string   `json:"cpu_model"`
	Cmdline     string   `json:"cmdline"`
	QEMU        string   `json:"qemu"`       // Boot.QEMU: the emulator binary asked for
	BootFiles   string   `json:"boot_files"` // the caller's name for the kernel and initrd contents
	Disks       []string `json:"disks"`      // their names in the machine directory
	DiskSizes   []int64  `json:"disk_sizes"`
	NetMode     string   `json:"net_mode,omitempty"`
	MAC         string   `json:"mac,omitempty"`
	Display     string   `json:"display,omitempty"`
	Agent       bool     `json:"agent,omitempty"`
}

// ShapeOf returns the shape of the machine cfg describes (with its
// defaults filled in, as Boot would), whose disks are diskSizes bytes
// long and whose kernel and initrd contents the caller names bootFiles
// (a content hash, say).
func ShapeOf(cfg Config, diskSizes []int64, bootFiles string) Shape {
	cfg.Net = cfg.Net.clone()
	cfg.setDefaults("spare")
	sh := Shape{Memory: cfg.Memory, CPUs: cfg.CPUs, Accel: cfg.Accel, MachineType: cfg.MachineType,
		CPUModel: cfg.CPUModel, Cmdline: cfg.Cmdline, QEMU: cfg.Boot.QEMU, BootFiles: bootFiles,
		Disks: append([]string{}, cfg.Disks...), DiskSizes: append([]int64{}, diskSizes...), Display: cfg.Display, Agent: cfg.Agent}
	if cfg.Net != nil {
		sh.NetMode, sh.MAC = cfg.Net.Mode, cfg.Net.MAC
	}
	return sh
}

// Key returns the shape's name: 16 hex digits of a hash of it.
func (sh Shape) Key() string {
	b, _ := json.Marshal(sh) // plain fields: cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// SpareInfo describes a spare: a QEMU started ahead of need for a machine
// shape, waiting for a device state.
type SpareInfo struct {
	Dir     string    `json:"dir"`
	Key     string    `json:"key"`
	Shape   Shape     `json:"shape"`
	Started time.Time `json:"started"`
	PID     int       `json:"pid,omitempty"` // QEMU's, while it is alive
	Alive   bool      `json:"alive"`
	// Contents are the caller's names for what StartSpare's prepare put
	// in the spare's files (a file's name to a content hash, say), so
	// that the claimer can skip writing what is there already.
	Contents map[string]string `json:"contents,omitempty"`
}

// StartSpare starts a spare for a machine like cfg, of shape sh (which
// must be ShapeOf cfg), in a new directory of sparesDir named after the
// shape's key, and returns once QEMU waits for its device state. prepare
// is called with the spare's directory before QEMU starts, to put there
// the boot files cfg names and its disks: files of sh.DiskSizes at the
// relative paths cfg.Disks, which QEMU opens, and which the checkout
// that claims the spare fills, unless prepare filled them already and
// said so in the contents it returns (SpareInfo.Contents). cfg's port
// forwards are not used: Adopt sets them up. The spare's RAM is a new,
// empty file on tmpfs.
func StartSpare(ctx context.Context, sparesDir string, cfg Config, sh Shape, prepare func(dir string) (map[string]string, error)) (*SpareInfo, error) {
	if err := os.MkdirAll(sparesDir, 0o755); err != nil {
		return nil, fmt.Errorf("start spare: %w", err)
	}
	// Made under a name no claimer looks for, renamed once QEMU waits.
	tmp, err := os.MkdirTemp(sparesDir, ".new-")
	if err != nil {
		return nil, fmt.Errorf("start spare: %w", err)
	}
	info, err := startSpare(ctx, tmp, cfg, sh, prepare)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("start spare of shape %s: %w", sh.Key(), err)
	}
	return info, nil
}

func startSpare(ctx context.Context, tmp string, cfg Config, sh Shape, prepare func(dir string) (map[string]string, error)) (*SpareInfo, error) {
	contents, err := prepare(tmp)
	if err != nil {
		return nil, err
	}
	key := sh.Key()
	cfg.Name = "spare-" + key
	cfg.RAMFile, cfg.Created = "", time.Time{}
	if cfg.Net != nil {
		cfg.Net = &Net{Mode: cfg.Net.Mode, MAC: cfg.Net.MAC}
	}
	cfg.Boot.Incoming, cfg.Boot.RAMInDir, cfg.Boot.Snapshot = true, false, false
	// An incoming machine's RAM must exist: an empty file of the size.
	ram, err := NewRAMFile(cfg.Boot.RAMRoot, cfg.Name)
	if err != nil {
		return nil, err
	}
	if err := makeRAMFile(ram, cfg.Memory); err != nil {
		os.RemoveAll(filepath.Dir(ram))
		return nil, err
	}
	cfg.RAMFile = ram
	info := &SpareInfo{Key: key, Shape: sh, Started: time.Now().UTC(), Contents: contents}
	if err := writeSpareInfo(tmp, info); err != nil {
		os.RemoveAll(filepath.Dir(ram))
		return nil, err
	}
	m, err := Boot(ctx, tmp, cfg)
	if err != nil {
		os.RemoveAll(filepath.Dir(ram))
		return nil, err
	}
	defer m.Close()
	// QEMU greets on its monitor before it has made the machine, and
	// answers commands only after: a claimer must not wait for that.
	if rs, err := m.qmpRunState(ctx); err != nil || rs != "inmigrate" {
		m.Halt(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("qemu does not wait for a device state: run state %q, %v", rs, err)
	}
	info.PID, info.Alive = m.PID(), true
	dir := filepath.Join(filepath.Dir(tmp), key+"-"+strconv.FormatUint(rand.Uint64(), 36))
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dir, unix.RENAME_NOREPLACE); err != nil {
		m.Halt(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("rename %s to %s: %w", tmp, dir, err)
	}
	info.Dir = dir
	return info, nil
}

// makeRAMFile creates an empty (all holes) RAM file of size bytes.
func makeRAMFile(path string, size int64) error {
	if err := checkFree(filepath.Dir(path), size, "guest RAM"); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func writeSpareInfo(dir string, info *SpareInfo) error {
	return writeJSON(filepath.Join(dir, SpareFile), info)
}

func readSpareInfo(dir string) (*SpareInfo, error) {
	b, err := os.ReadFile(filepath.Join(dir, SpareFile))
	if err != nil {
		return nil, err
	}
	var info SpareInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, SpareFile), err)
	}
	info.Dir = dir
	return &info, nil
}

// spareEntries reads sparesDir; one that does not exist holds nothing.
func spareEntries(sparesDir string) ([]os.DirEntry, error) {
	ents, err := os.ReadDir(sparesDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list spares: %w", err)
	}
	return ents, nil
}

// Spares lists the spares in sparesDir, oldest first. A spare whose QEMU
// is gone is listed with Alive false; StopSpare removes it.
func Spares(sparesDir string) ([]SpareInfo, error) {
	ents, err := spareEntries(sparesDir)
	if err != nil {
		return nil, err
	}
	var infos []SpareInfo
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		dir := filepath.Join(sparesDir, e.Name())
		info, err := readSpareInfo(dir)
		if err != nil {
			continue // being removed, or not a spare
		}
		if pid, _, _ := readPID(dir); qemuAlive(pid, dir) {
			info.PID, info.Alive = pid, true
		}
		infos = append(infos, *info)
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Started.Before(infos[j].Started) })
	return infos, nil
}

// HalfMadeSpares lists the directories in sparesDir of spares whose
// start began more than age ago and never ended (the process starting
// them died): StopSpare removes them, and their QEMU if it got that far.
func HalfMadeSpares(sparesDir string, age time.Duration) ([]string, error) {
	ents, err := spareEntries(sparesDir)
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), ".new-") {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > age {
			dirs = append(dirs, filepath.Join(sparesDir, e.Name()))
		}
	}
	return dirs, nil
}

// StopSpare stops the spare in dir and removes its directory and RAM.
// A spare being claimed right now is left alone (the error wraps ErrBusy).
func StopSpare(ctx context.Context, dir string) error {
	lock, err := tryLockDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		// Half made, before its QEMU was started: files only.
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("stop spare %s: %w", dir, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("stop spare %s: %w", dir, err)
	}
	defer lock.unlock()
	return removeSpare(ctx, dir, lock)
}

// removeSpare halts the spare in dir, whose lock is held, and removes it.
func removeSpare(ctx context.Context, dir string, lock *dirLock) error {
	if cfg, err := readConfig(dir); err == nil {
		m := &Machine{dir: dir, cfg: *cfg, lock: lock}
		if err := m.Halt(ctx); err != nil {
			return fmt.Errorf("stop spare %s: %w", dir, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("stop spare %s: %w", dir, err)
	}
	return nil
}

// tryLockDir takes the lock of dir at once, or fails wrapping ErrBusy.
// Unlike lockDir it does not wait: a claimer rather looks at the next
// spare.
func tryLockDir(dir string) (*dirLock, error) {
	f, err := os.OpenFile(filepath.Join(dir, LockFile), os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrBusy
		}
		return nil, err
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &dirLock{f}, nil
}

// ClaimSpare takes a spare of the shape key from sparesDir and makes it
// the machine directory dir, which must not exist or be empty: the spare's
// directory is renamed to dir (its QEMU, working in it, follows), which
// is the claim, so only one process gets each spare. It returns the
// machine, locked and still waiting for its device state, and what the
// spare was started with: the caller puts its files in dir and calls
// Adopt. Spares whose QEMU died are
// removed on the way. It fails with ErrNoSpare if none is waiting, and
// with another error if dir cannot take one (on another file system,
// say); then nothing has changed and the caller starts a QEMU as usual.
func ClaimSpare(ctx context.Context, sparesDir, key, dir string) (*Machine, *SpareInfo, error) {
	ents, err := os.ReadDir(sparesDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("claim spare: %w", err)
	}
	var cands []*SpareInfo
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), key+"-") {
			continue
		}
		if info, err := readSpareInfo(filepath.Join(sparesDir, e.Name())); err == nil {
			cands = append(cands, info)
		}
	}
	// Oldest first: the one that waited longest, and a dead one is
	// found (and removed) before a younger live one.
	sort.Slice(cands, func(i, j int) bool { return cands[i].Started.Before(cands[j].Started) })
	for _, c := range cands {
		m, err := claim(ctx, c.Dir, dir)
		if err != nil || m != nil {
			return m, c, err
		}
	}
	return nil, nil, ErrNoSpare
}

// claim takes the spare in from, if it is free and waiting, and renames
// it to dir. It returns nil, nil if the spare cannot be had (claimed by
// another process, or dead: then it is removed).
func claim(ctx context.Context, from, dir string) (*Machine, error) {
	lock, err := tryLockDir(from)
	if err != nil {
		return nil, nil
	}
	cfg, err := readConfig(from)
	if err != nil {
		lock.unlock()
		return nil, nil
	}
	m := &Machine{dir: from, cfg: *cfg, lock: lock}
	if !m.waiting(ctx) {
		removeSpare(ctx, from, lock)
		lock.unlock()
		return nil, nil
	}
	// Not os.Rename, which refuses any directory at dir: an empty one
	// (of the user's choosing) is replaced, a full one is not.
	if err := unix.Rename(from, dir); err != nil {
		m.Close()
		return nil, fmt.Errorf("claim spare %s as %s: %w", from, dir, err)
	}
	if m.dir, err = absDir(dir); err != nil {
		m.Close()
		return nil, fmt.Errorf("claim spare %s as %s: %w", from, dir, err)
	}
	return m, nil
}

// waiting reports whether the machine's QEMU is alive and waiting for
// its device state, connecting to its QMP socket.
func (m *Machine) waiting(ctx context.Context) bool {
	if pid, _, _ := readPID(m.dir); !qemuAlive(pid, m.dir) {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rs, err := m.qmpRunState(ctx)
	return err == nil && rs == "inmigrate"
}

// Adopt makes a spare claimed with ClaimSpare the machine cfg describes,
// before its device state is loaded: cfg must have the spare's shape
// (but for its forwards), and its disks are the spare's files, which the
// caller fills (QEMU reads them once the guest runs). Adopt sets up
// cfg's port forwards and records cfg, with the spare's RAM file, in
// config.json.
func (m *Machine) Adopt(ctx context.Context, cfg Config) error {
	if err := m.adopt(ctx, cfg); err != nil {
		return fmt.Errorf("adopt spare as machine %s: %w", m.dir, err)
	}
	return nil
}

func (m *Machine) adopt(ctx context.Context, cfg Config) error {
	spare := m.cfg
	if !slices.Equal(cfg.Disks, spare.Disks) {
		return fmt.Errorf("disks %q: the spare has %q", cfg.Disks, spare.Disks)
	}
	cfg.Net = cfg.Net.clone()
	cfg.setDefaults(m.dir)
	cfg.QEMUVersion, cfg.MachineType, cfg.Accel = spare.QEMUVersion, spare.MachineType, spare.Accel
	cfg.RAMFile, cfg.RAMDir = spare.RAMFile, spare.RAMDir
	cfg.Created = time.Now().UTC().Truncate(time.Second)
	m.cfg = cfg
	if cfg.Net != nil {
		if err := cfg.Net.checkHostPorts(); err != nil {
			return err
		}
		q, err := m.QMP(ctx)
		if err != nil {
			return err
		}
		for _, f := range cfg.Net.Forwards {
			if err := m.addForward(ctx, q, f); err != nil {
				return err
			}
		}
		if err := m.learnHostPorts(ctx); err != nil {
			return err
		}
	}
	os.Remove(filepath.Join(m.dir, SpareFile))
	return writeConfig(m.dir, &m.cfg)
}

// addForward has QEMU's user network forward f, through the human
// monitor's hostfwd_add (QMP has no command for it), which answers with
// an error message or nothing.
func (m *Machine) addForward(ctx context.Context, q *QMP, f Forward) error {
	addr := f.HostAddr
	if strings.Contains(addr, ":") {
		addr = "[" + addr + "]"
	}
	rule := "tcp:" + addr + ":" + strconv.Itoa(f.HostPort) + "-:" + strconv.Itoa(f.GuestPort)
	raw, err := q.Execute(ctx, "human-monitor-command", map[string]string{"command-line": "hostfwd_add " + netdevID + " " + rule})
	if err != nil {
		return fmt.Errorf("port forward %s: %w", f, err)
	}
	var out string
	if err := json.Unmarshal(raw, &out); err != nil {
		return fmt.Errorf("port forward %s: hostfwd_add reply %s: %w", f, raw, err)
	}
	if out = strings.TrimSpace(out); out != "" {
		return fmt.Errorf("port forward %s: qemu: %s", f, out)
	}
	return nil
}
