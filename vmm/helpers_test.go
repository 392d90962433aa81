package vmm

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// idleConfig is a machine without a kernel: the firmware idles, which is
// enough for QMP, freezing and migration.
func idleConfig() Config {
	return Config{Memory: 64 << 20, Accel: "tcg"}
}

// testContext returns a context that ends with the test, bounded so a hung
// QEMU fails the test instead of the suite.
func testContext(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// bootTest boots a machine in a fresh directory and halts it when the test
// ends, checking that nothing is left behind.
func bootTest(t testing.TB, cfg Config) *Machine {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "m")
	m, err := Boot(testContext(t, time.Minute), dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	haltOnCleanup(t, m)
	return m
}

// haltOnCleanup halts and closes m at the end of the test and checks that
// its QEMU and RAM file are gone.
func haltOnCleanup(t testing.TB, m *Machine) {
	t.Helper()
	ram := m.RAMFile()
	t.Cleanup(func() {
		pid, _, _ := readPID(m.Dir())
		if err := m.Halt(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		m.Close()
		if pid != 0 && qemuAlive(pid, m.Dir()) {
			t.Errorf("cleanup: qemu pid %d still alive after Halt", pid)
		}
		if _, err := os.Stat(ram); !os.IsNotExist(err) {
			t.Errorf("cleanup: RAM file %s still exists after Halt", ram)
		}
	})
}
