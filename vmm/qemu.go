package vmm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/sbuml/sbuml/internal/atomicfile"
)

// QEMUBinary is the name of the emulator sbuml drives, looked up in PATH.
const QEMUBinary = "qemu-system-x86_64"

// DefaultCPUModel is the -cpu argument used when Config.CPUModel is empty.
// qemu64 runs under both TCG and KVM on any x86-64 host. svm is removed
// because KVM on Intel hosts cannot offer it, and kvm=off hides the KVM
// paravirtual interface (kvmclock, PV EOI, steal time) so that the guest
// never depends on something TCG does not provide. The guest therefore
// sees the same CPU whichever accelerator runs it, and a machine saved
// under one accelerator can be restored under the other.
const DefaultCPUModel = "qemu64,-svm,kvm=off"

// QEMUInfo describes an installed QEMU.
type QEMUInfo struct {
	Path    string // absolute path of the binary
	Version string // e.g. "7.2.22"
	// MachineTypes lists the versioned q35 machine types the binary
	// supports, newest first, e.g. "pc-q35-7.2".
	MachineTypes []string
}

// Q35 returns the newest versioned q35 machine type. Machines are pinned to
// a versioned type, never the unversioned alias "q35", so that the virtual
// hardware does not change under a saved machine when QEMU is upgraded.
func (qi *QEMUInfo) Q35() string { return qi.MachineTypes[0] }

// HasMachineType reports whether the binary supports machine type t.
func (qi *QEMUInfo) HasMachineType(t string) bool {
	for _, m := range qi.MachineTypes {
		if m == t {
			return true
		}
	}
	return false
}

// ErrQEMUNotFound is returned when the QEMU binary is not installed.
var ErrQEMUNotFound = errors.New(QEMUBinary + " not found in PATH: install it with apt-get install qemu-system-x86")

var qemuInfoCache sync.Map // path → *QEMUInfo

// InspectQEMU finds the QEMU binary (in PATH if path is empty) and reads its
// version and supported machine types. Results are cached per path for the
// life of the process, and in a file (QEMUInfoCachePath) for as long as the
// binary's size and modification time stay the same: asking QEMU starts it
// twice, which took 0.3 s of a checkout on a loaded host.
func InspectQEMU(ctx context.Context, path string) (*QEMUInfo, error) {
	return inspectQEMU(ctx, path, true)
}

// inspectQEMU is InspectQEMU, which writes what it learns to the cache
// file only if remember is set.
func inspectQEMU(ctx context.Context, path string, remember bool) (*QEMUInfo, error) {
	path, err := lookQEMU(path)
	if err != nil {
		return nil, err
	}
	if v, ok := qemuInfoCache.Load(path); ok {
		return v.(*QEMUInfo), nil
	}
	stamp, err := stampOf(path)
	if err != nil {
		return nil, fmt.Errorf("qemu binary %s: %w", path, err)
	}
	qi := readQEMUInfoCache(path, stamp)
	if qi == nil {
		if qi, err = askQEMU(ctx, path); err != nil {
			return nil, err
		}
		if remember {
			writeQEMUInfoCache(path, stamp, qi)
		}
	}
	qemuInfoCache.Store(path, qi)
	return qi, nil
}

// AskQEMU is InspectQEMU without its caches: it runs the binary (in PATH
// if path is empty) and reads or writes no file, as a check of the host
// that must create nothing does.
func AskQEMU(ctx context.Context, path string) (*QEMUInfo, error) {
	path, err := lookQEMU(path)
	if err != nil {
		return nil, err
	}
	return askQEMU(ctx, path)
}

// lookQEMU returns the path of the QEMU binary: path, or QEMUBinary
// found in PATH if it is empty.
func lookQEMU(path string) (string, error) {
	if path == "" {
		p, err := exec.LookPath(QEMUBinary)
		if err != nil {
			return "", ErrQEMUNotFound
		}
		return p, nil
	}
	if _, err := exec.LookPath(path); err != nil {
		return "", fmt.Errorf("qemu binary %s: %w (install it with apt-get install qemu-system-x86)", path, err)
	}
	return path, nil
}

// askQEMU runs the binary at path for its version and machine types.
func askQEMU(ctx context.Context, path string) (*QEMUInfo, error) {
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("run %s --version: %w", path, err)
	}
	version, err := parseQEMUVersion(out)
	if err != nil {
		return nil, fmt.Errorf("%s --version: %w", path, err)
	}
	out, err = exec.CommandContext(ctx, path, "-machine", "help").Output()
	if err != nil {
		return nil, fmt.Errorf("run %s -machine help: %w", path, err)
	}
	types := parseQ35Types(out)
	if len(types) == 0 {
		return nil, fmt.Errorf("%s -machine help lists no versioned pc-q35 machine type", path)
	}
	return &QEMUInfo{Path: path, Version: version, MachineTypes: types}, nil
}

// QEMUInfoCachePath is the file in which InspectQEMU keeps what it learnt
// of each QEMU binary (JSON, see qemuInfoEntry).
var QEMUInfoCachePath = defaultQEMUInfoCachePath()

func defaultQEMUInfoCachePath() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "sbuml", "qemu.json")
}

// binaryStamp identifies one build of a binary: a new one (an upgrade)
// has another size or modification time.
type binaryStamp struct {
	Size    int64 `json:"size"`
	ModTime int64 `json:"mod_time_ns"`
}

func stampOf(path string) (binaryStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return binaryStamp{}, err
	}
	return binaryStamp{Size: fi.Size(), ModTime: fi.ModTime().UnixNano()}, nil
}

// qemuInfoEntry is one binary in QEMUInfoCachePath.
type qemuInfoEntry struct {
	Path         string      `json:"path"`
	Stamp        binaryStamp `json:"stamp"`
	Version      string      `json:"version"`
	MachineTypes []string    `json:"machine_types"`
}

// readQEMUInfoCache returns what the cache file says of the binary at path
// with this stamp, or nil: a missing or damaged file means asking QEMU.
func readQEMUInfoCache(path string, stamp binaryStamp) *QEMUInfo {
	var entries []qemuInfoEntry
	b, err := os.ReadFile(QEMUInfoCachePath)
	if err != nil || json.Unmarshal(b, &entries) != nil {
		return nil
	}
	for _, e := range entries {
		if e.Path == path && e.Stamp == stamp && e.Version != "" && len(e.MachineTypes) > 0 {
			return &QEMUInfo{Path: path, Version: e.Version, MachineTypes: e.MachineTypes}
		}
	}
	return nil
}

// writeQEMUInfoCache records qi in the cache file, replacing what it held
// for that path. The cache only saves time: failing to write it is no
// error.
func writeQEMUInfoCache(path string, stamp binaryStamp, qi *QEMUInfo) {
	var entries []qemuInfoEntry
	if b, err := os.ReadFile(QEMUInfoCachePath); err == nil {
		json.Unmarshal(b, &entries)
	}
	entries = slices.DeleteFunc(entries, func(e qemuInfoEntry) bool { return e.Path == path })
	entries = append(entries, qemuInfoEntry{Path: path, Stamp: stamp, Version: qi.Version, MachineTypes: qi.MachineTypes})
	b, err := json.MarshalIndent(entries, "", "\t")
	if err != nil {
		return
	}
	if os.MkdirAll(filepath.Dir(QEMUInfoCachePath), 0o755) == nil {
		atomicfile.WriteFile(QEMUInfoCachePath, append(b, '\n'), 0o644)
	}
}

var qemuVersionRE = regexp.MustCompile(`QEMU emulator version (\d+\.\d+(?:\.\d+)?)`)

func parseQEMUVersion(out []byte) (string, error) {
	m := qemuVersionRE.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("no version in %q", firstLine(out))
	}
	return string(m[1]), nil
}

var q35TypeRE = regexp.MustCompile(`^pc-q35-(\d+)\.(\d+)(?:\.(\d+))?$`)

// parseQ35Types extracts the versioned q35 machine types from the output of
// "qemu-system-x86_64 -machine help", newest first.
func parseQ35Types(out []byte) []string {
	type typ struct {
		name string
		v    [3]int
	}
	var types []typ
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		m := q35TypeRE.FindStringSubmatch(f[0])
		if m == nil {
			continue
		}
		var t typ
		t.name = f[0]
		for i := 0; i < 3; i++ {
			t.v[i], _ = strconv.Atoi(m[i+1]) // empty micro → 0
		}
		types = append(types, t)
	}
	sort.SliceStable(types, func(i, j int) bool {
		a, b := types[i].v, types[j].v
		for k := range a {
			if a[k] != b[k] {
				return a[k] > b[k]
			}
		}
		return false
	})
	names := make([]string, len(types))
	for i, t := range types {
		names[i] = t.name
	}
	return names
}

func firstLine(b []byte) string {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
