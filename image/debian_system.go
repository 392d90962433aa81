package image

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// The systemd units of the Debian image, as links under
// /etc/systemd/system: what the image enables on top of what the
// packages enable, what it disables (periodic maintenance and jobs that
// only slow the boot down) and what it masks.
var (
	debianEnable = []string{
		"multi-user.target.wants/sbuml-ready.service",
		"ssh.service.wants/sbuml-ssh-hostkey.service",
	}
	debianDisable = []string{
		"timers.target.wants/apt-daily.timer",
		"timers.target.wants/apt-daily-upgrade.timer",
		"timers.target.wants/dpkg-db-backup.timer",
		"timers.target.wants/e2scrub_all.timer",
		"timers.target.wants/fstrim.timer",
		"multi-user.target.wants/e2scrub_reap.service",
		"sysinit.target.wants/systemd-pstore.service",
		// ifupdown's "ifup -a" at boot: lo is up anyway (systemd brings
		// it up) and eth0 is brought up by udev when it appears.
		"multi-user.target.wants/networking.service",
		"network-online.target.wants/networking.service",
	}
	// getty-static starts gettys on tty2 to tty6 when there is no dbus.
	debianMask = []string{"getty-static.service"}
)

// configure turns the freshly installed system into the sbuml Debian
// image: host name, file systems, network, console, ssh, units, agent.
func (b *debianBuilder) configure() error {
	if err := writeEmbedded(b.root, "debian/system"); err != nil {
		return err
	}
	files := []struct {
		name string
		mode fs.FileMode
		data string
	}{
		{"etc/hostname", 0o644, "sbuml\n"},
		{"etc/hosts", 0o644, "127.0.0.1\tlocalhost\n127.0.1.1\tsbuml\n::1\tlocalhost ip6-localhost ip6-loopback\n"},
		{"etc/fstab", 0o644, "# The root file system, by UUID: /dev/vda, or /dev/vda2 on a bootable disk.\nUUID=" + debianDiskUUID + " / ext4 rw,noatime 0 0\n"},
		{"etc/resolv.conf", 0o644, ""}, // debootstrap copied the host's; dhclient writes the guest's
		{"root/.ssh/authorized_keys", 0o600, strings.Join(append(b.opts.AuthorizedKeys, ""), "\n")},
	}
	for _, f := range files {
		if err := writeRootFile(b.root, f.name, f.mode, []byte(f.data)); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(b.root, "root/.ssh"), 0o700); err != nil {
		return err
	}
	if b.opts.Agent != "" {
		if err := b.installAgent(); err != nil {
			return err
		}
	}
	return setUnits(filepath.Join(b.root, "etc/systemd/system"), debianEnable, debianDisable, debianMask)
}

// installAgent copies the agent binary, its unit and the udev rule that
// starts it into the system.
func (b *debianBuilder) installAgent() error {
	data, err := os.ReadFile(b.opts.Agent)
	if err != nil {
		return err
	}
	if err := writeRootFile(b.root, "usr/local/bin/sbuml-guest", 0o755, data); err != nil {
		return err
	}
	return writeEmbedded(b.root, "debian/agent")
}

// setUnits makes the enablement links in dir (/etc/systemd/system):
// target.wants/unit pointing at the unit, removes the disabled ones and
// masks units by linking them to /dev/null.
func setUnits(dir string, enable, disable, mask []string) error {
	for _, l := range enable {
		if err := os.MkdirAll(filepath.Join(dir, path.Dir(l)), 0o755); err != nil {
			return err
		}
		if err := replaceSymlink("/etc/systemd/system/"+path.Base(l), filepath.Join(dir, l)); err != nil {
			return err
		}
	}
	for _, l := range disable {
		if err := os.Remove(filepath.Join(dir, l)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	for _, u := range mask {
		if err := replaceSymlink("/dev/null", filepath.Join(dir, u)); err != nil {
			return err
		}
	}
	return nil
}

func replaceSymlink(target, link string) error {
	if err := os.Remove(link); err != nil && !os.IsNotExist(err) {
		return err
	}
	return os.Symlink(target, link)
}

// writeEmbedded copies the embedded tree under dir into root. Scripts
// (files starting with "#!") get mode 0755, the others 0644.
func writeEmbedded(root, dir string) error {
	return fs.WalkDir(debianFiles, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := debianFiles.ReadFile(p)
		if err != nil {
			return err
		}
		mode := fs.FileMode(0o644)
		if bytes.HasPrefix(data, []byte("#!")) {
			mode = 0o755
		}
		return writeRootFile(root, strings.TrimPrefix(p, dir+"/"), mode, data)
	})
}

// writeRootFile writes the file name (relative, slashes) below root,
// creating its directories.
func writeRootFile(root, name string, mode fs.FileMode, data []byte) error {
	p := filepath.Join(root, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		return err
	}
	return os.Chmod(p, mode) // WriteFile keeps an existing file's mode
}

// bootFiles are the kernel and initramfs a Debian system installed.
type bootFiles struct {
	kernel, initrd, version string
}

// findBootFiles finds the one kernel in root/boot and its initramfs.
func findBootFiles(root string) (bootFiles, error) {
	kernels, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(kernels) != 1 {
		return bootFiles{}, fmt.Errorf("want one kernel in %s/boot, found %d", root, len(kernels))
	}
	version := strings.TrimPrefix(filepath.Base(kernels[0]), "vmlinuz-")
	initrd := filepath.Join(root, "boot", "initrd.img-"+version)
	if _, err := os.Stat(initrd); err != nil {
		return bootFiles{}, fmt.Errorf("no initramfs for kernel %s: %w", version, err)
	}
	return bootFiles{kernel: kernels[0], initrd: initrd, version: version}, nil
}

// installedPackages lists the packages dpkg installed in root, as
// "name=version", sorted.
func installedPackages(root string) ([]string, error) {
	data, err := os.ReadFile(filepath.Join(root, "var/lib/dpkg/status"))
	if err != nil {
		return nil, fmt.Errorf("list installed packages: %w", err)
	}
	var pkgs []string
	var name, version, status string
	flush := func() {
		if name != "" && status == "install ok installed" {
			pkgs = append(pkgs, name+"="+version)
		}
		name, version, status = "", "", ""
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			flush()
			continue
		}
		field, value, _ := strings.Cut(line, ": ")
		switch field {
		case "Package":
			name = value
		case "Version":
			version = value
		case "Status":
			status = value
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("list installed packages: %w", err)
	}
	slices.Sort(pkgs)
	return pkgs, nil
}

// cleanDebian removes from the system what only the build needed or what
// each machine must make for itself: downloaded packages and lists (an
// apt-get update fetches them again), the build's logs, backup files, and
// the ssh host keys (sbuml-ssh-hostkey.service makes one at first boot).
func cleanDebian(root string) error {
	globs := []string{
		"var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*_*",
		"var/log/bootstrap.log", "var/log/dpkg.log", "var/log/alternatives.log", "var/log/apt/*",
		"var/cache/debconf/*-old", "var/lib/dpkg/*-old", "etc/ssh/ssh_host_*",
	}
	for _, g := range globs {
		matches, err := filepath.Glob(filepath.Join(root, g))
		if err != nil {
			return err
		}
		for _, m := range matches {
			if err := os.Remove(m); err != nil {
				return err
			}
		}
	}
	return nil
}

// allocated returns the bytes a file takes on its file system.
func allocated(name string) int64 {
	fi, err := os.Stat(name)
	if err != nil {
		return 0
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}
