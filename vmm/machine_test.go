package vmm

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMachineLifecycle boots a machine and takes it through freeze,
// continue and halt, checking its directory and state at each step.
// It is long because one QEMU serves all these checks, each state change
// starting from the one before.
func TestMachineLifecycle(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, time.Minute)
	m := bootTest(t, idleConfig())

	// config.json records the pinned hardware.
	b, err := os.ReadFile(filepath.Join(m.Dir(), ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	var cfg Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	qi, err := InspectQEMU(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MachineType != qi.Q35() || !strings.HasPrefix(cfg.MachineType, "pc-q35-") {
		t.Errorf("machine type %q, want newest versioned q35 %q", cfg.MachineType, qi.Q35())
	}
	if cfg.QEMUVersion != qi.Version || cfg.CPUModel != DefaultCPUModel || cfg.Accel != "tcg" ||
		cfg.Memory != 64<<20 || cfg.CPUs != 1 || cfg.Name != "m" || cfg.Created.IsZero() {
		t.Errorf("config.json = %s", b)
	}
	if filepath.Dir(cfg.RAMDir) != DefaultRAMRoot || cfg.RAMFile != filepath.Join(cfg.RAMDir, RAMFileName) {
		t.Errorf("RAM file %s in %s, want a directory of its own under %s", cfg.RAMFile, cfg.RAMDir, DefaultRAMRoot)
	}
	if fi, err := os.Stat(cfg.RAMFile); err != nil || fi.Size() != cfg.Memory {
		t.Errorf("RAM file: %v, %v", fi, err)
	}
	for _, f := range []string{QMPSocket, ConsoleSocket, EventsSocket, ConsoleLog, PIDFile, QEMULog, LockFile} {
		if _, err := os.Stat(filepath.Join(m.Dir(), f)); err != nil {
			t.Errorf("machine directory: %v", err)
		}
	}

	steps := []struct {
		name string
		do   func(context.Context) error
		want State
		run  string
	}{
		{"boot", nil, StateRunning, "running"},
		{"freeze", m.Freeze, StateFrozen, "paused"},
		{"freeze again", m.Freeze, StateFrozen, "paused"},
		{"continue", m.Continue, StateRunning, "running"},
		{"halt", m.Halt, StateHalted, ""},
		{"halt again", m.Halt, StateHalted, ""},
	}
	pid := m.PID()
	for _, s := range steps {
		if s.do != nil {
			if err := s.do(ctx); err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
		}
		st, err := m.Status(ctx)
		if err != nil {
			t.Fatalf("%s: status: %v", s.name, err)
		}
		if st.State != s.want || st.RunState != s.run || st.Memory != 64<<20 || st.Accel != "tcg" || st.CPUs != 1 {
			t.Errorf("%s: status %+v, want %s (%q)", s.name, st, s.want, s.run)
		}
		if s.want != StateHalted && (st.PID != pid || st.Uptime <= 0) {
			t.Errorf("%s: pid %d uptime %v, want pid %d and uptime > 0", s.name, st.PID, st.Uptime, pid)
		}
	}
	if qemuAlive(pid, m.Dir()) {
		t.Errorf("qemu %d alive after Halt", pid)
	}
	if _, err := os.Stat(cfg.RAMDir); !os.IsNotExist(err) {
		t.Errorf("RAM directory %s survived Halt", cfg.RAMDir)
	}
	for _, f := range []string{ConfigFile, ConsoleLog, QEMULog} {
		if _, err := os.Stat(filepath.Join(m.Dir(), f)); err != nil {
			t.Errorf("after Halt: %v", err)
		}
	}
	if err := m.Freeze(ctx); err == nil || !strings.Contains(err.Error(), "halted") {
		t.Errorf("Freeze of a halted machine: %v", err)
	}
}

func TestLock(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, time.Minute)
	m := bootTest(t, idleConfig())
	if _, err := Open(m.Dir()); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "pid") {
		t.Fatalf("second Open: %v, want ErrBusy naming the holder", err)
	}
	if _, err := Boot(ctx, m.Dir(), idleConfig()); !errors.Is(err, ErrBusy) {
		t.Fatalf("Boot into a held directory: %v, want ErrBusy", err)
	}
	m.Close()
	m2, err := Open(m.Dir())
	if err != nil {
		t.Fatal(err)
	}
	haltOnCleanup(t, m2)
	if _, err := Boot(ctx, m.Dir(), idleConfig()); err == nil {
		t.Fatal("Boot into a directory with a running machine succeeded")
	}
	m2.Close()
	if _, err := Boot(ctx, m.Dir(), idleConfig()); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("Boot into a directory with a running machine: %v", err)
	}
	m3, err := Open(m.Dir())
	if err != nil {
		t.Fatal(err)
	}
	haltOnCleanup(t, m3)
	if st, err := m3.Status(ctx); err != nil || st.State != StateRunning {
		t.Fatalf("status after reopening: %+v, %v", st, err)
	}
}

// TestHelperBootAndExit is run by TestQEMUOutlivesBooter in a child
// process, which boots a machine and exits without halting it.
func TestHelperBootAndExit(t *testing.T) {
	dir := os.Getenv("SBUML_VMM_HELPER_DIR")
	if dir == "" {
		t.Skip("helper for TestQEMUOutlivesBooter")
	}
	m, err := Boot(context.Background(), dir, idleConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	os.Exit(0) // no Close, no Halt: as if sbuml was killed
}

func TestQEMUOutlivesBooter(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, time.Minute)
	dir := filepath.Join(t.TempDir(), "m")
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperBootAndExit$")
	cmd.Env = append(os.Environ(), "SBUML_VMM_HELPER_DIR="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	m, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	haltOnCleanup(t, m)
	st, err := m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != StateFrozen {
		t.Fatalf("machine booted by an exited process: %+v, want frozen", st)
	}
	if err := m.Continue(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Halt(ctx); err != nil {
		t.Fatal(err)
	}
	if qemuAlive(st.PID, m.Dir()) {
		t.Fatalf("qemu %d (not our child) alive after Halt", st.PID)
	}
}

// TestCrashAndStaleDirectory kills QEMU behind sbuml's back, as a crash
// would, and checks that the directory is recognised and can be cleaned.
func TestCrashAndStaleDirectory(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, time.Minute)
	m := bootTest(t, idleConfig())
	pid := m.PID()
	ram := m.RAMFile()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !m.waitExit(pid, 10*time.Second) {
		t.Fatal("qemu did not die")
	}
	st, err := m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != StateCrashed || !strings.Contains(st.Detail, "killed") {
		t.Errorf("status after SIGKILL: %+v, want crashed with the exit status", st)
	}
	if err := m.Freeze(ctx); err == nil || !strings.Contains(err.Error(), "crashed") {
		t.Errorf("Freeze of a crashed machine: %v", err)
	}
	m.Close()

	// Another process finds the stale directory.
	m, err = Open(m.Dir())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	st, err = m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != StateCrashed || !strings.Contains(st.Detail, "is gone") {
		t.Errorf("status of a stale directory: %+v", st)
	}
	if _, err := Boot(ctx, filepath.Join(m.Dir()), idleConfig()); err == nil {
		t.Error("Boot over a crashed machine succeeded")
	}
	if err := m.Halt(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := m.Status(ctx); err != nil || st.State != StateHalted {
		t.Errorf("status after cleaning: %+v, %v", st, err)
	}
	if _, err := os.Stat(ram); !os.IsNotExist(err) {
		t.Errorf("RAM file %s survived Halt", ram)
	}
}

func TestCrashReportsQEMULog(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, time.Minute)
	m := bootTest(t, idleConfig())
	q, err := m.QMP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// QEMU exits cleanly on SIGTERM, but not because sbuml halted it, and
	// logs the signal, which Status must pass on.
	pid := m.PID()
	syscall.Kill(pid, syscall.SIGTERM)
	<-q.Done()
	m.waitExit(pid, 10*time.Second)
	st, err := m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != StateCrashed || !strings.Contains(st.Detail, "terminating on signal 15") {
		t.Errorf("status: %+v, want crashed with the tail of qemu.log", st)
	}
}

// TestBootErrors checks that Boot refuses what cannot be booted, in one
// line that says what to do.
// It is long because of its table, one case a line.
func TestBootErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  func(dir string) Config
		want string
	}{
		{"qemu missing", func(string) Config {
			c := idleConfig()
			c.Boot.QEMU = "qemu-system-x86_64-not-installed"
			return c
		}, "apt-get install qemu-system-x86"},
		{"tmpfs too small", func(string) Config {
			c := idleConfig()
			c.Memory = 1 << 50
			return c
		}, "not enough space for guest RAM in /dev/shm/sbuml"},
		{"qemu fails at start", func(string) Config {
			c := idleConfig()
			c.CPUModel = "no-such-cpu"
			return c
		}, "qemu failed to start"},
		{"unknown machine type", func(string) Config {
			c := idleConfig()
			c.MachineType = "pc-q35-1.0"
			return c
		}, "machine type pc-q35-1.0 is not supported"},
		{"missing kernel", func(dir string) Config {
			c := idleConfig()
			c.Kernel = filepath.Join(dir, "vmlinuz")
			return c
		}, "vmlinuz: no such file"},
		{"missing disk", func(string) Config {
			c := idleConfig()
			c.Disks = []string{"root.img"}
			return c
		}, "root.img: no such file"},
		{"unresolved accel", func(string) Config {
			c := idleConfig()
			c.Accel = "auto"
			return c
		}, "resolve auto with ChooseAccel"},
		{"odd memory", func(string) Config {
			c := idleConfig()
			c.Memory = 64<<20 + 1
			return c
		}, "multiple of 1 MiB"},
		{"incoming without RAM", func(string) Config {
			c := idleConfig()
			c.Boot.Incoming = true
			return c
		}, "needs Config.RAMFile"},
		{"network mode", func(string) Config {
			c := idleConfig()
			c.Net = &Net{Mode: "bridge"}
			return c
		}, `network mode "bridge": want "user"`},
		{"forward", func(string) Config {
			c := idleConfig()
			c.Net = &Net{Mode: NetUser, Forwards: []Forward{{HostAddr: "localhost", GuestPort: 80}}}
			return c
		}, `host address "localhost" is not an IP address`},
		{"display", func(string) Config {
			c := idleConfig()
			c.Display = "sdl"
			return c
		}, `display "sdl": want none ("") or "vnc"`},
		{"RAM file of the wrong size", func(dir string) Config {
			c := idleConfig()
			c.RAMFile = filepath.Join(dir, "small-ram")
			os.WriteFile(c.RAMFile, []byte("x"), 0o644)
			return c
		}, "holds 1 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "m")
			os.MkdirAll(dir, 0o755)
			m, err := Boot(testContext(t, time.Minute), dir, tt.cfg(dir))
			if err == nil {
				m.Halt(context.Background())
				m.Close()
				t.Fatal("Boot succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q, want one line containing %q", err, tt.want)
			}
			if _, err := os.Stat(filepath.Join(dir, ConfigFile)); err == nil {
				t.Error("failed Boot left config.json")
			}
			if pid, _, _ := readPID(dir); pid != 0 {
				t.Errorf("failed Boot left pid file for %d", pid)
			}
			// The directory is not locked after a failure.
			if l, err := lockDir(dir); err != nil {
				t.Error(err)
			} else {
				l.unlock()
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "not a machine directory") {
		t.Errorf("Open of an empty directory: %v", err)
	}
	if _, err := Open(filepath.Join(dir, "absent")); err == nil || !strings.Contains(err.Error(), "absent") {
		t.Errorf("Open of a missing directory: %v", err)
	}
	os.WriteFile(filepath.Join(dir, ConfigFile), []byte("{"), 0o644)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), ConfigFile) {
		t.Errorf("Open with a broken config.json: %v", err)
	}
}

func TestRAMInMachineDirectory(t *testing.T) {
	t.Parallel()
	cfg := idleConfig()
	cfg.Boot.RAMInDir = true
	m := bootTest(t, cfg)
	if m.Config().RAMFile != RAMFileName || m.Config().RAMDir != "" {
		t.Errorf("config: ram_file %q, ram_dir %q", m.Config().RAMFile, m.Config().RAMDir)
	}
	if m.RAMFile() != filepath.Join(m.Dir(), RAMFileName) {
		t.Errorf("RAMFile() = %s", m.RAMFile())
	}
	if fi, err := os.Stat(m.RAMFile()); err != nil || fi.Size() != cfg.Memory {
		t.Fatalf("RAM file: %v %v", fi, err)
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, time.Minute)
	root := t.TempDir()
	boot := func(name string) *Machine {
		m, err := Boot(ctx, filepath.Join(root, name), idleConfig())
		if err != nil {
			t.Fatal(err)
		}
		haltOnCleanup(t, m)
		return m
	}
	held := boot("held")
	frozen := boot("frozen")
	if err := frozen.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	frozen.Close()
	halted := boot("halted")
	if err := halted.Halt(ctx); err != nil {
		t.Fatal(err)
	}
	halted.Close()
	os.Mkdir(filepath.Join(root, "not-a-machine"), 0o755)

	infos, err := List(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]State{"frozen": StateFrozen, "halted": StateHalted, "held": StateBusy}
	if len(infos) != len(want) {
		t.Fatalf("List returned %d machines: %+v", len(infos), infos)
	}
	for _, in := range infos {
		if in.Err != nil {
			t.Errorf("%s: %v", in.Dir, in.Err)
		}
		if in.Status.State != want[in.Config.Name] {
			t.Errorf("%s: state %s, want %s", in.Config.Name, in.Status.State, want[in.Config.Name])
		}
	}
	// List left the machines as they were.
	if _, err := Open(held.Dir()); !errors.Is(err, ErrBusy) {
		t.Errorf("held machine after List: %v", err)
	}
	m, err := Open(frozen.Dir())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if st, _ := m.Status(ctx); st.State != StateFrozen {
		t.Errorf("frozen machine after List: %+v", st)
	}
}

func TestDialAgent(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, time.Minute)
	cfg := idleConfig()
	cfg.Agent = true
	m := bootTest(t, cfg)
	c, err := DialAgent(ctx, m.Dir())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got := m.Config(); !got.Agent {
		t.Errorf("config.json lost agent: %+v", got)
	}

	plain := bootTest(t, idleConfig())
	if _, err := DialAgent(ctx, plain.Dir()); err == nil || !strings.Contains(err.Error(), "without an agent port") {
		t.Errorf("DialAgent of a machine without agent: %v", err)
	}
}
