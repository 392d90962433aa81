package testimage

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestGetPrivateDisk(t *testing.T) {
	a, b := Get(t), Get(t)
	if a.Disk == b.Disk {
		t.Fatalf("two calls share the disk %s", a.Disk)
	}
	if a.Kernel != b.Kernel || a.Initrd != b.Initrd {
		t.Errorf("kernel or initrd not shared: %s %s, %s %s", a.Kernel, b.Kernel, a.Initrd, b.Initrd)
	}
	shared := filepath.Join(filepath.Dir(a.Kernel), "disk")
	for _, f := range []string{a.Kernel, a.Initrd, shared} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o222 != 0 {
			t.Errorf("shared file %s is writable (%v)", f, fi.Mode())
		}
	}
	f, err := os.OpenFile(a.Disk, os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("private disk is not writable: %v", err)
	}
	f.Close()
	x, err := os.ReadFile(a.Disk)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(shared)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Error("private disk differs from the shared one")
	}
}

// childEnv makes the test binary act as one of several processes asking
// for the image at once.
const childEnv = "SBUML_TESTIMAGE_CHILD"

func TestChildGet(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		t.Skip("runs only as a child of TestConcurrentProcessesBuildOnce")
	}
	img := Get(t)
	fmt.Printf("built=%v kernel=%s\n", built, img.Kernel)
}

// TestConcurrentProcessesBuildOnce starts three processes on an empty
// cache at once; the file lock must let exactly one of them build.
func TestConcurrentProcessesBuildOnce(t *testing.T) {
	Get(t) // fill the package cache, to copy from
	debs, err := DebCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	if err := os.MkdirAll(filepath.Join(cache, "debs"), 0o755); err != nil {
		t.Fatal(err)
	}
	matches, _ := filepath.Glob(filepath.Join(debs, "*.deb"))
	for _, m := range matches {
		if err := copyFile(filepath.Join(cache, "debs", filepath.Base(m)), m); err != nil {
			t.Fatal(err)
		}
	}

	// Images of other recipes: one built long ago, one recently.
	old, recent := filepath.Join(cache, "image-old"), filepath.Join(cache, "image-recent")
	for _, dir := range []string{old, recent} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "kernel"), []byte("k"), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	longAgo := time.Now().Add(-2 * staleAge)
	if err := os.Chtimes(old, longAgo, longAgo); err != nil {
		t.Fatal(err)
	}

	const n = 3
	outs := make([]*bytes.Buffer, n)
	cmds := make([]*exec.Cmd, n)
	for i := range cmds {
		outs[i] = new(bytes.Buffer)
		cmds[i] = exec.Command(os.Args[0], "-test.run=^TestChildGet$", "-test.count=1")
		cmds[i].Env = append(os.Environ(), childEnv+"=1", CacheEnv+"="+cache)
		cmds[i].Stdout, cmds[i].Stderr = outs[i], outs[i]
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	builds := 0
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("child %d: %v\n%s", i, err, outs[i])
		}
		out := outs[i].String()
		if !strings.Contains(out, "kernel="+cache) {
			t.Errorf("child %d did not use the cache %s:\n%s", i, cache, out)
		}
		if strings.Contains(out, "built=true") {
			builds++
		}
	}
	if builds != 1 {
		t.Errorf("%d processes built the image, want 1", builds)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("stale image %s not pruned (%v)", old, err)
	}
	if _, err := os.Stat(recent); err != nil {
		t.Errorf("recent image of another recipe pruned: %v", err)
	}
}

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
