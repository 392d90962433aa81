package image

import (
	"errors"
	"fmt"
	"os/exec"
)

// A Tool is a program that building, importing or exporting images runs.
type Tool struct {
	Name    string // the program
	Package string // the Debian package that provides it
	For     string // what needs it
}

// Tools lists the programs this package runs, for sbuml doctor.
var Tools = []Tool{
	{"apt-get", "apt", "tiny: fetching the kernel and busybox packages"},
	{"dpkg-deb", "dpkg", "tiny: unpacking them"},
	{"mke2fs", "e2fsprogs", "the root disks of tiny and debian"},
	{"debugfs", "e2fsprogs", "the root disks of tiny and debian"},
	{"e2fsck", "e2fsprogs", "growing disks, bootable disks"},
	{"resize2fs", "e2fsprogs", "growing disks (--disk-size)"},
	{"debootstrap", "debootstrap", "the debian image"},
	{"chroot", "coreutils", "the debian image"},
	{"qemu-img", "qemu-utils", "importing qcow2 disks"},
	{"sfdisk", "fdisk", "image export (disks that boot by BIOS)"},
	{"mkfs.fat", "dosfstools", "image export"},
	{"mcopy", "mtools", "image export"},
	{"syslinux", "syslinux", "image export"},
}

// missingTool returns the error for a program that is not installed: one
// line naming the Debian package to install.
func missingTool(name string) error {
	var pkg string
	for _, t := range Tools {
		if t.Name == name {
			pkg = t.Package
		}
	}
	if pkg == "" {
		return fmt.Errorf("%s not found in PATH", name)
	}
	return fmt.Errorf("%s not found in PATH: install the Debian package %s (apt-get install %s)", name, pkg, pkg)
}

// needTools checks that the programs are installed before a long
// operation starts, so that it fails at once and says what to install.
func needTools(names ...string) error {
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			return missingTool(name)
		}
	}
	return nil
}

// isNotFound reports whether err says a program was not found.
func isNotFound(err error) bool {
	return errors.Is(err, exec.ErrNotFound)
}
