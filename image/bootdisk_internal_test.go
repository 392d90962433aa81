package image

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBootDiskCmdline(t *testing.T) {
	tests := []struct{ in, want string }{
		{"console=ttyS0 quiet", "console=ttyS0 quiet root=/dev/vda2"},
		{"root=/dev/vda rw console=ttyS0", "root=/dev/vda2 rw console=ttyS0"},
		{"  root=UUID=x   rw ", "root=/dev/vda2 rw"},
		{"", "root=/dev/vda2"},
		{"rootwait root=/dev/sda1", "rootwait root=/dev/vda2"},
	}
	for _, tt := range tests {
		if got := bootDiskCmdline(tt.in); got != tt.want {
			t.Errorf("bootDiskCmdline(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSyslinuxConfig(t *testing.T) {
	img := &Image{Kernel: "/k", Initrd: "/i", Cmdline: "console=ttyS0"}
	cfg := syslinuxConfig(img)
	for _, want := range []string{"SERIAL 0 115200\n", "PROMPT 0\n", "DEFAULT sbuml\n", "LINUX /vmlinuz\n", "INITRD /initrd\n", "APPEND console=ttyS0 root=/dev/vda2\n"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("syslinux.cfg lacks %q:\n%s", want, cfg)
		}
	}
	img.Initrd = ""
	if cfg := syslinuxConfig(img); strings.Contains(cfg, "INITRD") {
		t.Errorf("syslinux.cfg of a kernel without initrd names one:\n%s", cfg)
	}
}

func TestPlanBootDisk(t *testing.T) {
	dir := t.TempDir()
	sized := func(name string, size int64) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, size); err != nil {
			t.Fatal(err)
		}
		return p
	}
	small := &Image{Kernel: sized("k", 5<<20), Initrd: sized("i", 3<<20), Disk: sized("d", 100<<20+1)}
	big := &Image{Kernel: sized("bk", 20<<20), Initrd: sized("bi", 60<<20), Disk: sized("bd", 256<<20)}
	tests := []struct {
		name     string
		img      *Image
		rootSize int64
		want     bootDiskLayout
		err      string
	}{
		{"small files: the smallest FAT16", small, 0, bootDiskLayout{bootSize: 32 << 20, rootStart: 33 << 20, rootSize: 101 << 20}, ""},
		{"large files: room to spare", big, 0, bootDiskLayout{bootSize: 104 << 20, rootStart: 105 << 20, rootSize: 256 << 20}, ""},
		{"larger root", small, 1 << 30, bootDiskLayout{bootSize: 32 << 20, rootStart: 33 << 20, rootSize: 1 << 30}, ""},
		{"root smaller than the disk", big, 128 << 20, bootDiskLayout{}, "at least the image disk's 256 MiB"},
		{"root not in MiB", big, 300<<20 + 512, bootDiskLayout{}, "multiple of 1 MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := planBootDisk(tt.img, tt.rootSize)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("planBootDisk: %v, want an error containing %q", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("planBootDisk = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestMakeBootableDiskErrors(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk")
	if err := os.WriteFile(disk, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		img  *Image
		path string
		want string
	}{
		{"bios image", &Image{Boot: BootBIOS, Disk: disk}, "", "must boot by kernel"},
		{"no disk", &Image{Boot: BootKernel, Kernel: disk}, "", "must boot by kernel and have a disk"},
		{"no sfdisk", &Image{Boot: BootKernel, Kernel: disk, Disk: disk}, t.TempDir(), "sfdisk not found in PATH: install the Debian package fdisk"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.path != "" {
				t.Setenv("PATH", tt.path)
			}
			out := filepath.Join(t.TempDir(), "out.raw")
			err := MakeBootableDisk(t.Context(), tt.img, out, BootDiskOptions{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("MakeBootableDisk: %v, want an error containing %q", err, tt.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("a failed MakeBootableDisk left %s (%v)", out, err)
			}
		})
	}
}
