package image_test

import (
	"bytes"
	"context"
	"debug/elf"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/sbuml/sbuml/image"
	"github.com/sbuml/sbuml/image/cpio"
	"github.com/sbuml/sbuml/internal/testimage"
)

// readInitrd returns the entries and contents of an initramfs in order.
func readInitrd(t *testing.T, file string) ([]*cpio.Header, map[string][]byte) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := cpio.NewReader(f)
	var hdrs []*cpio.Header
	data := make(map[string][]byte)
	for {
		hdr, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read %s: %v", file, err)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("read %s: %v", hdr.Name, err)
		}
		hdrs = append(hdrs, hdr)
		data[hdr.Name] = b
	}
	return hdrs, data
}

// TestInitrdContents reads the test image's initramfs: sorted entries,
// directories before their contents, one modification time, and the files
// the guest needs.
// It is long because it checks every entry of the one initramfs the test
// image has, in one pass.
func TestInitrdContents(t *testing.T) {
	img := testimage.Get(t)
	hdrs, data := readInitrd(t, img.Initrd)

	byName := make(map[string]*cpio.Header)
	var modTime int64 = -1
	for i, h := range hdrs {
		if i > 0 && hdrs[i-1].Name >= h.Name {
			t.Errorf("entries not sorted: %s after %s", h.Name, hdrs[i-1].Name)
		}
		if dir := path.Dir(h.Name); dir != "." && (byName[dir] == nil || !byName[dir].Mode.IsDir()) {
			t.Errorf("%s comes before its directory %s", h.Name, dir)
		}
		if h.UID != 0 || h.GID != 0 {
			t.Errorf("%s owned by %d:%d, want root", h.Name, h.UID, h.GID)
		}
		if modTime == -1 {
			modTime = h.ModTime
		}
		if h.ModTime != modTime || modTime == 0 {
			t.Errorf("%s has mtime %d, want the fixed image epoch %d", h.Name, h.ModTime, modTime)
		}
		byName[h.Name] = h
	}

	wantModes := map[string]fs.FileMode{
		"init":                      0o755,
		"bin/busybox":               0o755,
		"dev/console":               fs.ModeDevice | fs.ModeCharDevice | 0o600,
		"tmp":                       fs.ModeDir | fs.ModeSticky | 0o777,
		"etc/inittab":               0o644,
		"etc/udhcpc/default.script": 0o755,
		"etc/sbuml/modules":         0o644,
		"lib/modules/" + img.KernelVersion + "/modules.dep": 0o644,
	}
	for name, mode := range wantModes {
		if h := byName[name]; h == nil || h.Mode != mode {
			t.Errorf("%s: header %+v, want mode %v", name, h, mode)
		}
	}
	if h := byName["dev/console"]; h != nil && (h.Devmajor != 5 || h.Devminor != 1) {
		t.Errorf("dev/console is device %d:%d, want 5:1", h.Devmajor, h.Devminor)
	}

	init := string(data["init"])
	if !strings.HasPrefix(init, "#!/bin/busybox sh\n") || !strings.Contains(init, "echo "+img.ReadyMarker+"\n") {
		t.Errorf("/init lacks the busybox interpreter line or the ready marker:\n%s", init)
	}

	bb, err := elf.NewFile(bytes.NewReader(data["bin/busybox"]))
	if err != nil {
		t.Fatalf("bin/busybox: %v", err)
	}
	for _, p := range bb.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("bin/busybox is dynamically linked; the initramfs has no libc")
		}
	}

	order := strings.Fields(string(data["etc/sbuml/modules"]))
	if len(order) != len(img.Modules) {
		t.Fatalf("etc/sbuml/modules lists %d modules, config %d: %q vs %q", len(order), len(img.Modules), order, img.Modules)
	}
	for i, rel := range order {
		obj := data["lib/modules/"+img.KernelVersion+"/"+rel]
		f, err := elf.NewFile(bytes.NewReader(obj))
		if err != nil {
			t.Errorf("module %s: %v", rel, err)
			continue
		}
		info, err := f.Section(".modinfo").Data()
		if err != nil {
			t.Errorf("module %s: %v", rel, err)
			continue
		}
		fields := strings.Split(string(info), "\x00")
		if !slices.Contains(fields, "name="+img.Modules[i]) {
			t.Errorf("module %d is %s, want %s", i, rel, img.Modules[i])
		}
		for _, f := range fields {
			if strings.HasPrefix(f, "vermagic=") && !strings.HasPrefix(f, "vermagic="+img.KernelVersion+" ") {
				t.Errorf("module %s has %s, kernel is %s", rel, f, img.KernelVersion)
			}
		}
	}
	for _, m := range image.DefaultModules {
		if !slices.Contains(img.Modules, m) {
			t.Errorf("module %s missing from %q", m, img.Modules)
		}
	}
}

func TestDisk(t *testing.T) {
	img := testimage.Get(t)
	fi, err := os.Stat(img.Disk)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != image.DefaultDiskSize {
		t.Errorf("disk is %d bytes, want %d", fi.Size(), image.DefaultDiskSize)
	}
	if used := fi.Sys().(*syscall.Stat_t).Blocks * 512; used > 4<<20 {
		t.Errorf("disk uses %d bytes on the host, want it sparse (under 4 MiB)", used)
	}
	if out, err := exec.Command("e2fsck", "-f", "-n", img.Disk).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn: %v\n%s", err, out)
	}
	out, err := exec.Command("debugfs", "-R", "cat /README", img.Disk).Output()
	if err != nil || !strings.Contains(string(out), "/mnt/etc/sbuml/rc.d/") {
		t.Errorf("debugfs cat /README: %v\n%s", err, out)
	}
	out, err = exec.Command("debugfs", "-R", "stat /etc/hostname", img.Disk).Output()
	if err != nil || !strings.Contains(string(out), "User:     0   Group:     0") || !strings.Contains(string(out), "ctime: 0x65920080") {
		t.Errorf("/etc/hostname is not owned by root with the fixed image time: %v\n%s", err, out)
	}
}

// TestBuildReproducible builds the image again from the same packages (and
// the same agent binary as testimage's) and expects the same bytes, so
// images dedupe in the store.
func TestBuildReproducible(t *testing.T) {
	shared := testimage.Get(t)
	debs, err := testimage.DebCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	agent := testimage.GuestAgent(t)
	build := func() *image.Image {
		img, err := image.Build(context.Background(), image.Options{Dir: t.TempDir(), CacheDir: debs, Agent: agent})
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	a := build()
	b := shared
	if !slices.Equal(a.Packages, shared.Packages) {
		t.Logf("packages changed since the shared image was built (%q, now %q); building twice", shared.Packages, a.Packages)
		b = build()
	}
	type meta struct {
		cmdline, marker, version string
		modules, packages        []string
	}
	ma := meta{a.Cmdline, a.ReadyMarker, a.KernelVersion, a.Modules, a.Packages}
	mb := meta{b.Cmdline, b.ReadyMarker, b.KernelVersion, b.Modules, b.Packages}
	if !reflect.DeepEqual(ma, mb) {
		t.Errorf("images differ in metadata:\n%+v\n%+v", ma, mb)
	}
	// testimage's disk is a copy of the shared one, byte for byte.
	for _, pair := range [][2]string{
		{a.Kernel, b.Kernel},
		{a.Initrd, b.Initrd},
		{a.Disk, b.Disk},
		{filepath.Join(filepath.Dir(a.Kernel), "config.json"), filepath.Join(filepath.Dir(b.Kernel), "config.json")},
	} {
		x, err := os.ReadFile(pair[0])
		if err != nil {
			t.Fatal(err)
		}
		y, err := os.ReadFile(pair[1])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x, y) {
			t.Errorf("%s and %s differ", pair[0], pair[1])
		}
	}
	entries, err := os.ReadDir(filepath.Dir(a.Kernel))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"config.json", "disk", "initrd", "kernel"}; !slices.Equal(names, want) {
		t.Errorf("output directory holds %q, want %q", names, want)
	}
}
