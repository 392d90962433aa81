package image_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sbuml/sbuml/image"
	"github.com/sbuml/sbuml/internal/testimage"
)

// writeDisk writes a sparse raw disk of size bytes whose first sector is
// boot (nil: a hole) and with some data at 1 MiB.
func writeDisk(t *testing.T, name string, size int64, boot []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(boot, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte("data"), 1024), 1<<20); err != nil {
		t.Fatal(err)
	}
	return p
}

// bootSector is a first sector with the boot signature.
func bootSector() []byte {
	s := make([]byte, 512)
	copy(s, "\xeb\x63\x90 boot code")
	s[510], s[511] = 0x55, 0xAA
	return s
}

func TestImportBIOSDisk(t *testing.T) {
	raw := writeDisk(t, "disk.raw", 8<<20, bootSector())
	if err := os.Chmod(raw, 0o600); err != nil { // image files get mode 0644 whatever their source's
		t.Fatal(err)
	}
	qcow2 := filepath.Join(t.TempDir(), "disk.qcow2")
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert (apt-get install qemu-utils): %v: %s", err, out)
	}
	want, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{raw, qcow2} {
		dir := filepath.Join(t.TempDir(), "image")
		img, err := image.Import(context.Background(), image.ImportOptions{Dir: dir, Disk: src, ReadyMarker: "login:"})
		if err != nil {
			t.Fatal(err)
		}
		if img.Boot != image.BootBIOS || img.Kernel != "" || img.Initrd != "" || img.Cmdline != "" || img.ReadyMarker != "login:" {
			t.Errorf("Import(%s) = %+v", src, img)
		}
		got, err := os.ReadFile(img.Disk)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("imported disk of %s differs from the raw disk", filepath.Base(src))
		}
		if fi, err := os.Stat(img.Disk); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("imported disk of %s: %v, %v; want mode 0644", filepath.Base(src), fi, err)
		}
		if loaded, err := image.Load(dir); err != nil || !reflect.DeepEqual(loaded, img) {
			t.Errorf("Load after Import = %+v, %v; want %+v", loaded, err, img)
		}
	}
}

func TestImportKernel(t *testing.T) {
	tiny := testimage.Get(t)
	dir := filepath.Join(t.TempDir(), "image")
	img, err := image.Import(context.Background(), image.ImportOptions{Dir: dir, Disk: tiny.Disk, Kernel: tiny.Kernel, Initrd: tiny.Initrd})
	if err != nil {
		t.Fatal(err)
	}
	if img.Boot != image.BootKernel || img.KernelVersion != tiny.KernelVersion || img.Cmdline != image.DefaultImportCmdline || img.ReadyMarker != "" {
		t.Errorf("Import = %+v; want kernel %s, cmdline %q and no ready marker", img, tiny.KernelVersion, image.DefaultImportCmdline)
	}
	for _, f := range [][2]string{{img.Kernel, tiny.Kernel}, {img.Initrd, tiny.Initrd}, {img.Disk, tiny.Disk}} {
		a, _ := os.ReadFile(f[0])
		b, _ := os.ReadFile(f[1])
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("%s differs from %s", f[0], f[1])
		}
	}
}

func TestImportErrors(t *testing.T) {
	tiny := testimage.Get(t)
	noSig := writeDisk(t, "nosig.raw", 4<<20, nil)
	vmdk := writeDisk(t, "disk.vmdk", 4<<20, []byte("KDMV\x01\x00\x00\x00"))
	tests := []struct {
		name string
		opts image.ImportOptions
		want string
	}{
		{"no disk", image.ImportOptions{}, "a disk are needed"},
		{"no boot signature", image.ImportOptions{Disk: noSig}, "no boot signature"},
		{"vmdk", image.ImportOptions{Disk: vmdk}, "is a VMDK disk; convert it first: qemu-img convert -O raw"},
		{"initrd without kernel", image.ImportOptions{Disk: tiny.Disk, Initrd: tiny.Initrd}, "needs a kernel"},
		{"cmdline without kernel", image.ImportOptions{Disk: tiny.Disk, Cmdline: "quiet"}, "needs a kernel"},
		{"not a kernel", image.ImportOptions{Disk: tiny.Disk, Kernel: tiny.Initrd}, "is not a Linux bzImage"},
		{"missing disk", image.ImportOptions{Disk: "/nonexistent/disk"}, "no such file"},
		{"marker of two lines", image.ImportOptions{Disk: tiny.Disk, ReadyMarker: "a\nb"}, "must be one line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.opts.Disk != "" {
				tt.opts.Dir = filepath.Join(t.TempDir(), "image")
			}
			_, err := image.Import(context.Background(), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Import: %v, want one line containing %q", err, tt.want)
			}
		})
	}
}

func TestKernelRelease(t *testing.T) {
	tiny := testimage.Get(t)
	if got, err := image.KernelRelease(tiny.Kernel); err != nil || got != tiny.KernelVersion {
		t.Errorf("KernelRelease(%s) = %q, %v; want %q", tiny.Kernel, got, err, tiny.KernelVersion)
	}
	if _, err := image.KernelRelease(tiny.Initrd); err == nil {
		t.Errorf("KernelRelease of an initrd succeeded")
	}
}
