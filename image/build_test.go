package image_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sbuml/sbuml/image"
	"github.com/sbuml/sbuml/internal/testimage"
)

// cachedDeb returns the path of a package already in the test cache.
func cachedDeb(t *testing.T, prefix string) string {
	t.Helper()
	testimage.Get(t) // fills the cache
	debs, err := testimage.DebCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	matches, err := filepath.Glob(filepath.Join(debs, prefix+"*.deb"))
	if err != nil || len(matches) == 0 {
		t.Fatalf("no %s*.deb in %s (%v)", prefix, debs, err)
	}
	return matches[len(matches)-1]
}

func TestBuildErrors(t *testing.T) {
	busybox := cachedDeb(t, "busybox-static_")
	notDeb := filepath.Join(t.TempDir(), "not.deb")
	if err := os.WriteFile(notDeb, []byte("not a package"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts image.Options
		want []string // substrings of the error, in order
	}{
		{"no dir", image.Options{}, []string{"build image: no output directory"}},
		{"odd disk size", image.Options{DiskSize: 100<<20 + 1}, []string{"disk size 104857601 must be a multiple of 4096"}},
		{"tiny disk", image.Options{DiskSize: 1 << 20}, []string{"at least 16 MiB"}},
		{"missing agent", image.Options{Agent: "/nonexistent/sbuml-guest"},
			[]string{"build image: agent binary: open /nonexistent/sbuml-guest: no such file"}},
		{"absolute extra file", image.Options{ExtraFiles: []image.File{{Path: "/usr/bin/x"}}},
			[]string{`build image: extra file path "/usr/bin/x" must be relative and clean`}},
		{"unknown kernel package", image.Options{KernelPackage: "sbuml-no-such-package", BusyboxDeb: busybox},
			[]string{"apt-get download sbuml-no-such-package failed: E: Unable to locate package sbuml-no-such-package", "is apt reachable", "sbuml image build --kernel-deb FILE"}},
		{"missing kernel deb", image.Options{KernelDeb: "/nonexistent/linux.deb", BusyboxDeb: busybox},
			[]string{"unpack package", "/nonexistent/linux.deb", "no such file"}},
		{"kernel deb is not a package", image.Options{KernelDeb: notDeb, BusyboxDeb: busybox},
			[]string{"unpack " + notDeb, "dpkg-deb --show failed: dpkg-deb: error: "}},
		{"kernel deb without a kernel", image.Options{KernelDeb: busybox, BusyboxDeb: busybox},
			[]string{"kernel package " + busybox, "not a metapackage"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name != "no dir" {
				tt.opts.Dir = t.TempDir()
			}
			tt.opts.CacheDir = t.TempDir()
			img, err := image.Build(context.Background(), tt.opts)
			if err == nil {
				t.Fatalf("Build succeeded: %+v", img)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans several lines: %q", msg)
			}
			rest := msg
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("error %q lacks %q", msg, w)
				}
				rest = rest[i+len(w):]
			}
			if tt.opts.Dir != "" {
				if entries, _ := os.ReadDir(tt.opts.Dir); len(entries) != 0 {
					t.Errorf("failed build left %d files in the output directory", len(entries))
				}
			}
		})
	}
}

func TestLoad(t *testing.T) {
	img := testimage.Get(t)
	dir := filepath.Dir(img.Kernel)
	loaded, err := image.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Boot != image.BootKernel || loaded.Kernel != img.Kernel || loaded.Initrd != img.Initrd || loaded.Cmdline != img.Cmdline ||
		loaded.KernelVersion != img.KernelVersion || !loaded.Net || loaded.SSH {
		t.Errorf("Load(%s) = %+v, want %+v", dir, loaded, img)
	}

	tests := []struct {
		name   string
		files  []string // created empty in the image directory
		config string
		want   string // in the error, or "" for success
		check  func(*image.Image) bool
	}{
		{name: "no config", want: "no such file"},
		{name: "bad json", config: "{", want: "unexpected end of JSON"},
		{name: "missing files", config: `{"kernel":"kernel","initrd":"initrd","disk":"disk","cmdline":"x"}`, want: "kernel: no such file"},
		{name: "no cmdline", files: []string{"kernel", "initrd", "disk"}, config: `{"kernel":"kernel","initrd":"initrd","disk":"disk"}`, want: "lacks kernel or cmdline"},
		{name: "no disk", files: []string{"kernel"}, config: `{"kernel":"kernel","cmdline":"x"}`, want: "names no disk"},
		{name: "unknown boot", files: []string{"disk"}, config: `{"boot":"uefi","disk":"disk"}`, want: `boot "uefi"`},
		{name: "bios with kernel", files: []string{"kernel", "disk"}, config: `{"boot":"bios","kernel":"kernel","disk":"disk"}`, want: "boots by BIOS"},
		{
			name: "written before boot kinds", files: []string{"kernel", "initrd", "disk"},
			config: `{"kernel":"kernel","initrd":"initrd","disk":"disk","cmdline":"c","ready_marker":"M","kernel_version":"v","modules":["m"],"packages":["p=1"]}`,
			check: func(i *image.Image) bool {
				return i.Boot == image.BootKernel && i.ReadyMarker == "M" && i.Initrd != "" && !i.Net && !i.SSH && !i.Agent
			},
		},
		{
			name: "bios", files: []string{"disk"}, config: `{"boot":"bios","disk":"disk","net":true,"ssh":true,"agent":true}`,
			check: func(i *image.Image) bool {
				return i.Boot == image.BootBIOS && i.Kernel == "" && i.Initrd == "" && i.Cmdline == "" && i.ReadyMarker == "" && i.Net && i.SSH && i.Agent
			},
		},
		{
			name: "kernel without initrd or marker", files: []string{"kernel", "disk"}, config: `{"boot":"kernel","kernel":"kernel","disk":"disk","cmdline":"c"}`,
			check: func(i *image.Image) bool { return i.Initrd == "" && i.ReadyMarker == "" && i.Kernel != "" },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tt.config != "" {
				if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(tt.config), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			img, err := image.Load(dir)
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("got error %v, want one containing %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(img) {
				t.Errorf("Load = %+v", img)
			}
		})
	}
}

func TestCopySparse(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	const size = 64 << 20
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("sbuml"), 1000)
	for _, off := range []int64{0, 5<<20 + 17, size - int64(len(data))} {
		if _, err := f.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	// An allocated but zero range must become a hole too.
	if _, err := f.WriteAt(make([]byte, 4<<20), 20<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()

	dst := filepath.Join(dir, "dst")
	if err := image.CopySparse(dst, src); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("copy differs from the source")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dst, &st); err != nil {
		t.Fatal(err)
	}
	if used := st.Blocks * 512; used > 1<<20 {
		t.Errorf("copy uses %d bytes on disk, want under 1 MiB", used)
	}

	if err := image.CopySparse(dst, filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "copy disk") {
		t.Errorf("copying a missing file: %v", err)
	}
}

// TestFailedBuildUnloadsOldImage checks that a build that fails after it
// started replacing files leaves no loadable, possibly mixed image behind.
func TestFailedBuildUnloadsOldImage(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"kernel", "initrd", "disk"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	config := `{"kernel":"kernel","initrd":"initrd","disk":"disk","cmdline":"c","ready_marker":"m","kernel_version":"v"}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := image.Load(dir); err != nil {
		t.Fatalf("old image does not load: %v", err)
	}
	_, err := image.Build(context.Background(), image.Options{Dir: dir, KernelDeb: "/nonexistent.deb", BusyboxDeb: "/nonexistent.deb"})
	if err == nil {
		t.Fatal("Build succeeded")
	}
	if _, err := image.Load(dir); err == nil {
		t.Error("the old image still loads after a failed build")
	}
}

// BenchmarkBuild measures a build from cached packages.
func BenchmarkBuild(b *testing.B) {
	testimage.Get(b)
	debs, err := testimage.DebCacheDir()
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	for b.Loop() {
		if _, err := image.Build(context.Background(), image.Options{Dir: dir, CacheDir: debs}); err != nil {
			b.Fatal(err)
		}
	}
}
