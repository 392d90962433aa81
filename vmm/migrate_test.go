package vmm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// restoreTest boots a machine from RAM and device state saved from src,
// as checkout will: clone the RAM file, boot with Incoming, load, and
// return the machine frozen.
func restoreTest(t testing.TB, src *Machine, state []byte) *Machine {
	t.Helper()
	ctx := testContext(t, time.Minute)
	ram, err := NewRAMFile("", "restore")
	if err != nil {
		t.Fatal(err)
	}
	if err := CloneFile(ram, src.RAMFile()); err != nil {
		t.Fatal(err)
	}
	cfg := src.Config()
	cfg.Name = ""
	cfg.RAMFile = ram
	cfg.RAMDir = ""
	cfg.Boot.Incoming = true
	m, err := Boot(ctx, filepath.Join(t.TempDir(), "restored"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	haltOnCleanup(t, m)
	if m.Config().RAMDir != filepath.Dir(ram) {
		t.Errorf("restored machine does not own its RAM directory: ram_dir %q", m.Config().RAMDir)
	}
	st, err := m.Status(ctx)
	if err != nil || st.State != StateFrozen || st.RunState != "inmigrate" {
		t.Fatalf("incoming machine: %+v, %v", st, err)
	}
	if err := m.Continue(ctx); err == nil || !strings.Contains(err.Error(), "LoadDeviceState") {
		t.Errorf("Continue before LoadDeviceState: %v", err)
	}
	if err := m.LoadDeviceState(ctx, bytes.NewReader(state)); err != nil {
		t.Fatal(err)
	}
	if st, err := m.Status(ctx); err != nil || st.State != StateFrozen {
		t.Fatalf("after LoadDeviceState: %+v, %v", st, err)
	}
	return m
}

func TestSaveAndLoadDeviceState(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, time.Minute)
	src := bootTest(t, idleConfig())

	var state bytes.Buffer
	if err := src.SaveDeviceState(ctx, &state); err == nil || !strings.Contains(err.Error(), "freeze it first") {
		t.Fatalf("SaveDeviceState of a running machine: %v", err)
	}
	if err := src.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	if err := src.SaveDeviceState(ctx, &state); err != nil {
		t.Fatal(err)
	}
	// The stream holds device state only: far less than the 64 MiB of RAM.
	if state.Len() < 1000 || state.Len() > 8<<20 {
		t.Fatalf("device state is %d bytes", state.Len())
	}
	if !bytes.HasPrefix(state.Bytes(), []byte("QEVM")) {
		t.Errorf("stream starts with %q, want QEMU's QEVM magic", state.Bytes()[:4])
	}
	// QEMU cannot save again before the guest has run: say so.
	if err := src.SaveDeviceState(ctx, io.Discard); err == nil || !strings.Contains(err.Error(), "continue it") {
		t.Fatalf("second save without running: %v", err)
	}

	dst := restoreTest(t, src, state.Bytes())
	if err := dst.Continue(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := dst.Status(ctx); err != nil || st.State != StateRunning {
		t.Fatalf("restored machine: %+v, %v", st, err)
	}
	// The source goes on too, and can be saved again.
	if err := src.Continue(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := src.Status(ctx); err != nil || st.State != StateRunning {
		t.Fatalf("source after save: %+v, %v", st, err)
	}
	if err := src.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	if err := src.SaveDeviceState(ctx, io.Discard); err != nil {
		t.Fatalf("save after continue and freeze: %v", err)
	}
}

type failingWriter struct{ n int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.n += len(p); w.n > 4096 {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

func TestSaveDeviceStateWriterFails(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, time.Minute)
	m := bootTest(t, idleConfig())
	if err := m.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	err := m.SaveDeviceState(ctx, &failingWriter{})
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("SaveDeviceState into a failing writer: %v", err)
	}
	// QEMU had written all of the state before the writer saw it: the
	// machine survives, and can be saved again once it has run.
	if err := m.Continue(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.SaveDeviceState(ctx, io.Discard); err != nil {
		t.Fatalf("save after a failed save: %v", err)
	}
}

func TestLoadDeviceStateErrors(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, time.Minute)
	src := bootTest(t, idleConfig())
	if err := src.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	if err := src.LoadDeviceState(ctx, strings.NewReader("")); err == nil || !strings.Contains(err.Error(), "Boot.Incoming") {
		t.Errorf("LoadDeviceState on a booted machine: %v", err)
	}

	ram, err := NewRAMFile("", "garbage")
	if err != nil {
		t.Fatal(err)
	}
	if err := CloneFile(ram, src.RAMFile()); err != nil {
		t.Fatal(err)
	}
	cfg := src.Config()
	cfg.RAMFile, cfg.Boot.Incoming = ram, true
	m, err := Boot(ctx, filepath.Join(t.TempDir(), "garbage"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	haltOnCleanup(t, m)
	err = m.LoadDeviceState(ctx, strings.NewReader("this is not a migration stream"))
	if err == nil || !strings.Contains(err.Error(), "qemu exited during migration") || !strings.Contains(err.Error(), "qemu.log") {
		t.Fatalf("LoadDeviceState of garbage: %v", err)
	}
	t.Log(err)
	if st, _ := m.Status(ctx); st.State != StateCrashed {
		t.Errorf("after a failed load: %+v, want crashed", st)
	}
}

func TestLoadDeviceStateRejectsOtherHardware(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, time.Minute)
	cfg := idleConfig()
	cfg.CPUs = 2
	src := bootTest(t, cfg)
	if err := src.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	var state bytes.Buffer
	if err := src.SaveDeviceState(ctx, &state); err != nil {
		t.Fatal(err)
	}
	ram, err := NewRAMFile("", "other")
	if err != nil {
		t.Fatal(err)
	}
	if err := CloneFile(ram, src.RAMFile()); err != nil {
		t.Fatal(err)
	}
	cfg = src.Config()
	cfg.CPUs = 1 // the stream describes a vCPU this machine lacks
	cfg.RAMFile, cfg.Boot.Incoming = ram, true
	m, err := Boot(ctx, filepath.Join(t.TempDir(), "other"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	haltOnCleanup(t, m)
	err = m.LoadDeviceState(ctx, &state)
	if err == nil || !strings.Contains(err.Error(), "cpu") {
		st, _ := m.Status(ctx)
		t.Fatalf("loading a 2-vCPU state into a 1-vCPU machine: %v (%+v), want an error naming the cpu", err, st)
	}
	t.Log(err)
}

func TestSaveDeviceStateCancelled(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, time.Minute)
	m := bootTest(t, idleConfig())
	if err := m.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := m.SaveDeviceState(cctx, io.Discard); !errors.Is(err, context.Canceled) {
		t.Fatalf("SaveDeviceState with a cancelled context: %v", err)
	}
	if err := m.SaveDeviceState(ctx, io.Discard); err != nil {
		t.Fatalf("save after a cancelled save: %v", err)
	}
}

// TestPreparedDeviceStateSave goes through a commit's frozen window: the
// save prepared while the guest runs, then freeze, save, resume, with
// QEMU's own times of the stop and the resume; and the misuses a
// prepared save refuses.
func TestPreparedDeviceStateSave(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, time.Minute)
	m := bootTest(t, idleConfig())

	sv, err := m.PrepareDeviceStateSave(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := sv.Save(ctx, io.Discard); err == nil || !strings.Contains(err.Error(), "freeze it first") {
		t.Fatalf("Save of a running machine: %v", err)
	}
	if err := sv.Close(); err != nil {
		t.Fatalf("Close after a refused Save: %v", err)
	}

	sv, err = m.PrepareDeviceStateSave(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sv.Close()
	stopped, err := m.FreezeAt(ctx)
	if err != nil || stopped.IsZero() {
		t.Fatalf("FreezeAt of a running machine: %v, %v", stopped, err)
	}
	if again, err := m.FreezeAt(ctx); err != nil || !again.IsZero() {
		t.Errorf("FreezeAt of a frozen machine: %v, %v; want no stop", again, err)
	}
	var state bytes.Buffer
	if err := sv.Save(ctx, &state); err != nil {
		t.Fatal(err)
	}
	if err := sv.Save(ctx, io.Discard); err == nil || !strings.Contains(err.Error(), "prepare another") {
		t.Errorf("second Save: %v", err)
	}
	resumed, err := m.Resume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := sv.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(state.Bytes(), []byte("QEVM")) {
		t.Errorf("stream starts with %q, want QEMU's QEVM magic", state.Bytes()[:min(4, state.Len())])
	}
	if d := resumed.Sub(stopped); d <= 0 || d > time.Minute {
		t.Errorf("QEMU stopped the guest at %v and resumed it at %v", stopped, resumed)
	}
	if st, err := m.Status(ctx); err != nil || st.State != StateRunning {
		t.Fatalf("after Resume: %+v, %v", st, err)
	}
	if again, err := m.Resume(ctx); err != nil || !again.IsZero() {
		t.Errorf("Resume of a running machine: %v, %v; want no resume", again, err)
	}

	if err := sv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	// A save prepared and dropped gives the pipe back: the next one works.
	sv, err = m.PrepareDeviceStateSave(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := sv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.SaveDeviceState(ctx, io.Discard); err != nil {
		t.Fatalf("save after a dropped preparation: %v", err)
	}
	if _, err := m.PrepareDeviceStateSave(ctx); err == nil || !strings.Contains(err.Error(), "continue it") {
		t.Errorf("preparing a second save without running: %v", err)
	}
}
