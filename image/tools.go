package image

import (
	"errors"
	"fmt"
	"os/exec"
)

// toolPackages names the Debian package that provides each program this
// package runs, for the error that says what to install.
var toolPackages = map[string]string{
	"chroot":      "coreutils",
	"debootstrap": "debootstrap",
	"debugfs":     "e2fsprogs",
	"e2fsck":      "e2fsprogs",
	"mcopy":       "mtools",
	"mke2fs":      "e2fsprogs",
	"mkfs.fat":    "dosfstools",
	"qemu-img":    "qemu-utils",
	"resize2fs":   "e2fsprogs",
	"sfdisk":      "fdisk",
	"syslinux":    "syslinux",
}

// missingTool returns the error for a program that is not installed: one
// line naming the Debian package to install.
func missingTool(name string) error {
	pkg := toolPackages[name]
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
