package vmm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestInspectQEMUCacheFile checks that InspectQEMU asks a binary once and
// then answers from its cache file, in a later process too, until the
// binary changes or the file is damaged. The binary is a shell script
// standing in for QEMU: the real one cannot count how often it ran, nor be
// upgraded by a test.
func TestInspectQEMUCacheFile(t *testing.T) {
	dir := t.TempDir()
	old := QEMUInfoCachePath
	QEMUInfoCachePath = filepath.Join(dir, "cache", "qemu.json")
	t.Cleanup(func() { QEMUInfoCachePath = old })
	runs := filepath.Join(dir, "runs")
	bin := filepath.Join(dir, "qemu")
	writeFakeQEMU := func(version string) {
		t.Helper()
		script := fmt.Sprintf("#!/bin/sh\necho run >> %s\ncase \"$1\" in\n--version) echo 'QEMU emulator version %s';;\n-machine) echo 'pc-q35-%s  Standard PC'; echo 'pc-q35-7.1  Standard PC';;\nesac\n",
			runs, version, version)
		if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	countRuns := func() int {
		b, _ := os.ReadFile(runs)
		return strings.Count(string(b), "run\n")
	}
	steps := []struct {
		name     string
		before   func()
		wantRuns int
		want     string
	}{
		{"first: asks QEMU", func() { writeFakeQEMU("7.2") }, 2, "7.2"},
		{"a new process: from the file", nil, 2, "7.2"},
		{"upgraded binary: asks again", func() { writeFakeQEMU("10.10") }, 4, "10.10"},
		{"damaged file: asks again", func() { os.WriteFile(QEMUInfoCachePath, []byte("{"), 0o644) }, 6, "10.10"},
		{"rewritten file: from it", nil, 6, "10.10"},
	}
	for _, st := range steps {
		if st.before != nil {
			st.before()
		}
		qemuInfoCache.Delete(bin) // as in a new process
		qi, err := InspectQEMU(context.Background(), bin)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := countRuns(); got != st.wantRuns {
			t.Errorf("%s: the binary ran %d times in all, want %d", st.name, got, st.wantRuns)
		}
		want := []string{"pc-q35-" + st.want, "pc-q35-7.1"}
		if qi.Version != st.want || !slices.Equal(qi.MachineTypes, want) {
			t.Errorf("%s: got version %s, types %v; want %s, %v", st.name, qi.Version, qi.MachineTypes, st.want, want)
		}
	}
}

// TestCachedAccelWritesNothing checks that CachedAccel, which doctor
// calls, leaves no QEMU cache file behind: it promises to write nothing.
func TestCachedAccelWritesNothing(t *testing.T) {
	qi, err := AskQEMU(context.Background(), "")
	if err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	old := QEMUInfoCachePath
	QEMUInfoCachePath = filepath.Join(dir, "qemu.json")
	t.Cleanup(func() { QEMUInfoCachePath = old })
	qemuInfoCache.Delete(qi.Path) // as in a new process
	if _, err := CachedAccel(context.Background(), filepath.Join(dir, "accel.json")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadDir(dir); len(got) != 0 {
		t.Errorf("CachedAccel wrote %v", got)
	}
}
