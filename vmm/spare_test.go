package vmm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
	"time"
)

// startSpareTest starts a spare of shape sh for cfg in sparesDir and
// stops it when the test ends, if nobody claimed it.
func startSpareTest(t *testing.T, ctx context.Context, sparesDir string, cfg Config, sh Shape) *SpareInfo {
	t.Helper()
	info, err := StartSpare(ctx, sparesDir, cfg, sh, func(dir string) (map[string]string, error) {
		for i, d := range cfg.Disks {
			if err := os.WriteFile(filepath.Join(dir, d), nil, 0o644); err != nil {
				return nil, err
			}
			if err := os.Truncate(filepath.Join(dir, d), sh.DiskSizes[i]); err != nil {
				return nil, err
			}
		}
		return map[string]string{"disk": "empty"}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := os.Stat(info.Dir); err == nil {
			if err := StopSpare(context.Background(), info.Dir); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	return info
}

// TestSpareRestore restores a guest running a counter into a spare: the
// spare of another shape is left alone, the claimed one gets the saved
// disk and RAM written into its files, loads the device state, and the
// counter carries on. A spare whose QEMU died is removed by the next
// claim; a claim into another file system fails and leaves the spare.
func TestSpareRestore(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, 3*time.Minute)
	state, saved, cfg, last := savedCounter(t, ctx)
	// The spare makes RAM of its own.
	if err := os.RemoveAll(filepath.Dir(cfg.RAMFile)); err != nil {
		t.Fatal(err)
	}
	cfg.RAMFile = ""
	disk := cfg.Disks[0]
	fi, err := os.Stat(disk)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Disks = []string{"disk"} // the spare's own file
	spares := filepath.Join(t.TempDir(), "spares")
	sh := ShapeOf(cfg, []int64{fi.Size()}, "test-image")
	other := sh
	other.Memory *= 2
	if sh.Key() == other.Key() {
		t.Fatal("two shapes of different memory have one key")
	}
	dead := startSpareTest(t, ctx, spares, cfg, sh)
	if err := syscall.Kill(dead.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(dead.PID, dead.Dir, 10*time.Second)
	otherCfg := cfg
	otherCfg.Memory *= 2
	startSpareTest(t, ctx, spares, otherCfg, other)
	startSpareTest(t, ctx, spares, cfg, sh)
	list, err := Spares(spares)
	if err != nil || len(list) != 3 {
		t.Fatalf("Spares: %d spares, %v; want 3", len(list), err)
	}

	// A machine directory on another file system cannot take a spare:
	// the claim fails, and leaves the spare for the next one.
	elsewhere, err := os.MkdirTemp(DefaultRAMRoot, "spare-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(elsewhere)
	if _, _, err := ClaimSpare(ctx, spares, sh.Key(), filepath.Join(elsewhere, "m")); err == nil || errors.Is(err, ErrNoSpare) {
		t.Fatalf("claim into another file system: %v, want a failed rename", err)
	}
	dir := filepath.Join(t.TempDir(), "m")
	m, info, err := ClaimSpare(ctx, spares, sh.Key(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if info.Contents["disk"] != "empty" {
		t.Errorf("claimed spare's contents: %v", info.Contents)
	}
	haltOnCleanup(t, m)
	if _, err := os.Stat(dead.Dir); !os.IsNotExist(err) {
		t.Errorf("dead spare %s not removed by the claim: %v", dead.Dir, err)
	}
	if _, _, err := ClaimSpare(ctx, spares, sh.Key(), filepath.Join(t.TempDir(), "m2")); !errors.Is(err, ErrNoSpare) {
		t.Errorf("second claim of the only spare: %v, want ErrNoSpare", err)
	}
	restoreIntoSpare(t, ctx, m, cfg, map[string]string{m.RAMFile(): saved, filepath.Join(dir, "disk"): disk}, state)
	requireCountsOn(t, ctx, m, last)
	requireDiskFile(t, m, filepath.Join(dir, "disk"))
	if list, _ := Spares(spares); len(list) != 1 || list[0].Key != other.Key() {
		t.Errorf("spares left: %+v, want the one of the other shape", list)
	}
}

// restoreIntoSpare writes the saved RAM and disk into the claimed spare
// m's files (copies: each file in the map from the file it copies),
// adopts cfg and loads the device state.
func restoreIntoSpare(t *testing.T, ctx context.Context, m *Machine, cfg Config, copies map[string]string, state []byte) {
	t.Helper()
	for dst, src := range copies {
		f, err := os.OpenFile(dst, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = CloneInto(f, src)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Adopt(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if got := m.Config(); got.Name != "m" || got.RAMFile != m.cfg.RAMFile || len(got.Disks) != 1 {
		t.Errorf("adopted config: %+v", got)
	}
	if _, err := os.Stat(filepath.Join(m.Dir(), SpareFile)); !os.IsNotExist(err) {
		t.Errorf("%s left in the adopted machine: %v", SpareFile, err)
	}
	if err := m.LoadDeviceState(ctx, bytes.NewReader(state)); err != nil {
		t.Fatal(err)
	}
	if err := m.Continue(ctx); err != nil {
		t.Fatal(err)
	}
}

// requireDiskFile checks that the machine's QEMU has the file disk open
// (at its path after the claim).
func requireDiskFile(t *testing.T, m *Machine, disk string) {
	t.Helper()
	fds := fmt.Sprintf("/proc/%d/fd", m.PID())
	ents, err := os.ReadDir(fds)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if p, _ := os.Readlink(filepath.Join(fds, e.Name())); p == disk {
			return
		}
	}
	t.Errorf("qemu (pid %d) does not have %s open", m.PID(), disk)
}

// TestHalfMadeSpares finds what a spare start that died left behind,
// once it is old enough, and StopSpare removes it.
func TestHalfMadeSpares(t *testing.T) {
	spares := t.TempDir()
	old, fresh := filepath.Join(spares, ".new-old"), filepath.Join(spares, ".new-fresh")
	for _, d := range []string{old, fresh, filepath.Join(spares, "k-1")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(old, "kernel"), []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	long := time.Now().Add(-time.Hour)
	if err := os.Chtimes(old, long, long); err != nil {
		t.Fatal(err)
	}
	dirs, err := HalfMadeSpares(spares, time.Minute)
	if err != nil || len(dirs) != 1 || dirs[0] != old {
		t.Fatalf("HalfMadeSpares: %v, %v; want [%s]", dirs, err, old)
	}
	if err := StopSpare(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("%s left after StopSpare: %v", old, err)
	}
}

// TestShapeCoversConfig makes whoever adds a field to Config or Net say
// whether a spare must match it: a field that reaches QEMU's command line
// and is left out of Shape would let a checkout claim a spare of another
// machine.
func TestShapeCoversConfig(t *testing.T) {
	decided := map[string]string{
		// In Shape.
		"Config.Memory": "shape", "Config.CPUs": "shape", "Config.Accel": "shape",
		"Config.MachineType": "shape", "Config.CPUModel": "shape", "Config.Cmdline": "shape",
		"Config.Disks": "shape", "Config.Display": "shape", "Config.Agent": "shape",
		"Config.Kernel": "shape (BootFiles names the contents)", "Config.Initrd": "shape (BootFiles)",
		"Config.Net": "shape (NetMode, MAC)", "Net.Mode": "shape", "Net.MAC": "shape",
		"Config.Boot": "shape (Boot.QEMU; the rest says how to start, not what)",
		// Not seen by the guest or the device state.
		"Config.Name": "the machine's", "Config.RAMFile": "the spare's own", "Config.RAMDir": "the spare's own",
		"Config.QEMUVersion": "filled by Boot", "Config.BaseImage": "history", "Config.Created": "history",
		"Net.Forwards": "added by Adopt",
	}
	for _, typ := range []reflect.Type{reflect.TypeFor[Config](), reflect.TypeFor[Net]()} {
		for f := range typ.Fields() {
			if _, ok := decided[typ.Name()+"."+f.Name]; !ok {
				t.Errorf("%s.%s is new: decide whether a spare must match it (Shape, ShapeOf) and list it here", typ.Name(), f.Name)
			}
		}
	}
}
