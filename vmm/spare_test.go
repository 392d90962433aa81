package vmm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startSpareTest starts a spare of shape sh for cfg in sparesDir and
// stops it when the test ends, if nobody claimed it.
func startSpareTest(t *testing.T, ctx context.Context, sparesDir string, cfg Config, sh Shape) *SpareInfo {
	t.Helper()
	info, err := StartSpare(ctx, sparesDir, cfg, sh, nil)
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
// spare of another shape is left alone, the claimed one takes the real
// disk and the saved RAM, loads the device state, and the counter carries
// on. A spare whose QEMU died is removed by the next claim.
func TestSpareRestore(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, 3*time.Minute)
	state, saved, cfg, last := savedCounter(t, ctx)
	fi, err := os.Stat(cfg.Disks[0])
	if err != nil {
		t.Fatal(err)
	}
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

	dir := filepath.Join(t.TempDir(), "m")
	m, err := ClaimSpare(ctx, spares, sh.Key(), dir)
	if err != nil {
		t.Fatal(err)
	}
	haltOnCleanup(t, m)
	if _, err := os.Stat(dead.Dir); !os.IsNotExist(err) {
		t.Errorf("dead spare %s not removed by the claim: %v", dead.Dir, err)
	}
	if _, err := ClaimSpare(ctx, spares, sh.Key(), filepath.Join(t.TempDir(), "m2")); !errors.Is(err, ErrNoSpare) {
		t.Errorf("second claim of the only spare: %v, want ErrNoSpare", err)
	}
	restoreIntoSpare(t, ctx, m, cfg, saved, state)
	requireCountsOn(t, ctx, m, last)
	requireDiskFile(t, ctx, m, cfg.Disks[0])
	if list, _ := Spares(spares); len(list) != 1 || list[0].Key != other.Key() {
		t.Errorf("spares left: %+v, want the one of the other shape", list)
	}
}

// restoreIntoSpare writes the saved RAM into the claimed spare m, adopts
// cfg and loads the device state.
func restoreIntoSpare(t *testing.T, ctx context.Context, m *Machine, cfg Config, saved string, state []byte) {
	t.Helper()
	f, err := os.OpenFile(m.RAMFile(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = CloneInto(f, saved)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
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

// requireDiskFile checks that the machine's disk0 reads the file disk.
func requireDiskFile(t *testing.T, ctx context.Context, m *Machine, disk string) {
	t.Helper()
	q, err := m.QMP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := q.Execute(ctx, "query-block", nil)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []struct {
		Inserted struct {
			File string `json:"file"`
		} `json:"inserted"`
	}
	if err := json.Unmarshal(raw, &blocks); err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 1 || !strings.Contains(blocks[0].Inserted.File, disk) {
		t.Errorf("query-block: %s, want disk %s", raw, disk)
	}
}
