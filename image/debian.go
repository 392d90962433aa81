package image

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DebianSuite is the Debian release BuildDebian installs.
const DebianSuite = "bookworm"

// DebianCmdline is the kernel command line of the Debian image: the root
// file system is the whole first virtio disk, mounted read-write by the
// initramfs; net.ifnames=0 keeps the first network card's name eth0, which
// /etc/network/interfaces configures. The rest is as in Cmdline.
const DebianCmdline = "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet panic=-1 no_timer_check"

// DebianPackages are installed on top of debootstrap's minbase variant:
// the cloud kernel (whose initramfs initramfs-tools makes), systemd with
// D-Bus (which systemctl poweroff, hostnamectl and the like talk to), DHCP
// networking with ifupdown, an ssh server and a few everyday tools.
var DebianPackages = []string{
	"linux-image-cloud-amd64", "systemd-sysv", "dbus", "udev", "kmod",
	"ifupdown", "isc-dhcp-client", "iproute2", "iputils-ping",
	"openssh-server", "ca-certificates", "wget", "procps", "less",
}

// DefaultDebianDiskSize is the size of the Debian image's root disk when
// DebianOptions.DiskSize is 0. The system takes about 300 MiB of it.
const DefaultDebianDiskSize = 2 << 30

// minDebianDiskSize is the smallest root disk BuildDebian makes.
const minDebianDiskSize = 512 << 20

// debianDiskUUID and debianDiskLabel name the Debian root file system;
// /etc/fstab finds it by the UUID, so it mounts whether it is the whole
// disk (/dev/vda) or a partition of a bootable disk (/dev/vda2).
const (
	debianDiskUUID  = "7d3f4a2e-95c1-4b8a-a0e6-2c5d8e1f9b34"
	debianDiskLabel = "debian"
)

// debianFiles holds the files BuildDebian adds to the system: boot/ before
// the packages are configured (the initramfs settings), system/ after,
// agent/ when the image gets the agent.
//
//go:embed debian
var debianFiles embed.FS

// debianFormatVersion changes whenever BuildDebian's output changes in a
// way DebianOptions.RecipeHash cannot see (the Go code, not the data).
const debianFormatVersion = 1

// DebianOptions configures BuildDebian.
type DebianOptions struct {
	// Dir is the output directory. It is created if missing; existing
	// image files in it are replaced.
	Dir string
	// Mirror is the Debian archive to install from; if empty, the one
	// the host's apt uses for DebianSuite (see HostMirror).
	Mirror string
	// CacheDir keeps the downloaded .deb files between builds, so a
	// rebuild downloads only the archive's package lists. If empty, it
	// is the "sbuml/debootstrap" directory under os.UserCacheDir.
	CacheDir string
	// AuthorizedKeys are ssh public keys ("ssh-ed25519 AAAA… comment")
	// that may log in as root.
	AuthorizedKeys []string
	// Agent is the path of a sbuml-guest binary to install as
	// /usr/local/bin/sbuml-guest, started at boot by sbuml-guest.service.
	// Empty: no agent.
	Agent string
	// DiskSize is the size of the root disk in bytes, a multiple of
	// 1 MiB and at least 512 MiB; DefaultDebianDiskSize if 0.
	DiskSize int64
	// Progress receives one line per build step when not nil.
	Progress io.Writer
}

// check validates the options that do not depend on the host.
func (o *DebianOptions) check() error {
	if o.Dir == "" {
		return errors.New("no output directory")
	}
	if o.DiskSize < minDebianDiskSize || o.DiskSize%(1<<20) != 0 {
		return fmt.Errorf("disk size %d must be a multiple of 1 MiB and at least %d MiB", o.DiskSize, minDebianDiskSize>>20)
	}
	for _, k := range o.AuthorizedKeys {
		if len(strings.Fields(k)) < 2 || strings.ContainsAny(k, "\r\n") {
			return fmt.Errorf("authorized key %q is not one line like \"ssh-ed25519 AAAA… comment\"", k)
		}
	}
	if o.Agent != "" {
		if fi, err := os.Stat(o.Agent); err != nil || !fi.Mode().IsRegular() {
			return fmt.Errorf("agent binary %s is not a regular file (%v)", o.Agent, err)
		}
	}
	return nil
}

// setDefaults fills the fields left empty.
func (o *DebianOptions) setDefaults() error {
	if o.DiskSize == 0 {
		o.DiskSize = DefaultDebianDiskSize
	}
	if o.Mirror == "" {
		o.Mirror = HostMirror()
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.CacheDir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			return fmt.Errorf("no package cache directory: %w", err)
		}
		o.CacheDir = filepath.Join(cache, "sbuml", "debootstrap")
	}
	var err error
	o.CacheDir, err = filepath.Abs(o.CacheDir) // debootstrap wants it absolute
	return err
}

// RecipeHash identifies what BuildDebian makes of these options: the
// format version, the suite, the packages, the command line, the embedded
// files, the disk size, the authorized keys and the agent binary. The
// mirror is left out: every mirror serves the same packages. Caches of
// built images should include it in their key.
func (o DebianOptions) RecipeHash() (string, error) {
	if o.DiskSize == 0 {
		o.DiskSize = DefaultDebianDiskSize
	}
	h := sha256.New()
	fmt.Fprintf(h, "format %d\nsuite %s\npackages %s\ncmdline %s\nmarker %s\ndisk %d\n",
		debianFormatVersion, DebianSuite, strings.Join(DebianPackages, ","), DebianCmdline, ReadyMarker, o.DiskSize)
	for _, k := range o.AuthorizedKeys {
		fmt.Fprintf(h, "key %s\n", k)
	}
	if o.Agent != "" {
		f, err := os.Open(o.Agent)
		if err != nil {
			return "", fmt.Errorf("debian recipe: %w", err)
		}
		defer f.Close()
		io.WriteString(h, "agent\n")
		if _, err := io.Copy(h, f); err != nil {
			return "", fmt.Errorf("debian recipe: %w", err)
		}
	}
	err := fs.WalkDir(debianFiles, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := debianFiles.ReadFile(p)
		fmt.Fprintf(h, "file %s %d\n", p, len(data))
		h.Write(data)
		return err
	})
	if err != nil {
		panic("image: walk embedded files: " + err.Error()) // embedded data cannot fail to read
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// BuildDebian installs Debian (DebianSuite) with debootstrap into a
// scratch directory inside opts.Dir, configures it for sbuml and writes
// the image files kernel, initrd, disk (raw ext4 made with mke2fs -d: no
// mount, no loop device) and config.json into opts.Dir.
//
// It needs root: debootstrap installs the packages inside a chroot.
func BuildDebian(ctx context.Context, opts DebianOptions) (*Image, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, fmt.Errorf("build debian image: %w", err)
	}
	if err := opts.check(); err != nil {
		return nil, fmt.Errorf("build debian image: %w", err)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("build debian image: needs root (debootstrap installs the packages in a chroot); run it as root or with sudo")
	}
	if err := needTools("debootstrap", "mke2fs"); err != nil {
		return nil, fmt.Errorf("build debian image: %w", err)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("build debian image %s: %w", opts.Dir, err)
	}
	for _, d := range []string{dir, opts.CacheDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("build debian image: %w", err)
		}
	}
	// An image whose files are half replaced must not load.
	if err := os.Remove(filepath.Join(dir, configFile)); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("build debian image: %w", err)
	}
	work, err := os.MkdirTemp(dir, ".build-")
	if err != nil {
		return nil, fmt.Errorf("build debian image: %w", err)
	}
	b := &debianBuilder{opts: opts, dir: dir, work: work, root: filepath.Join(work, "root")}
	img, err := b.build(ctx)
	if cerr := removeBuildDir(work); cerr != nil {
		err = errors.Join(err, fmt.Errorf("build debian image: %w", cerr))
	}
	if err != nil {
		return nil, err
	}
	return img, nil
}

// debianBuilder carries the state of one BuildDebian.
type debianBuilder struct {
	opts DebianOptions
	dir  string // output directory
	work string // scratch directory inside dir, removed at the end
	root string // the system being built, inside work
	step time.Time
}

// progressf reports a finished step and how long it took.
func (b *debianBuilder) progressf(format string, args ...any) {
	fmt.Fprintf(b.opts.Progress, "%s (%v)\n", fmt.Sprintf(format, args...), time.Since(b.step).Round(100*time.Millisecond))
	b.step = time.Now()
}

func (b *debianBuilder) build(ctx context.Context) (*Image, error) {
	b.step = time.Now()
	if err := b.bootstrap(ctx); err != nil {
		return nil, err
	}
	if err := b.configure(); err != nil {
		return nil, fmt.Errorf("configure debian image: %w", err)
	}
	b.progressf("configured the system")
	boot, err := findBootFiles(b.root)
	if err != nil {
		return nil, fmt.Errorf("build debian image: %w", err)
	}
	packages, err := installedPackages(b.root)
	if err != nil {
		return nil, fmt.Errorf("build debian image: %w", err)
	}
	for _, f := range []struct{ dst, src string }{{kernelFile, boot.kernel}, {initrdFile, boot.initrd}} {
		if err := copyFile(filepath.Join(b.dir, f.dst), f.src); err != nil {
			return nil, fmt.Errorf("build debian image: %w", err)
		}
	}
	if err := cleanDebian(b.root); err != nil {
		return nil, fmt.Errorf("build debian image: %w", err)
	}
	if err := b.makeDisk(ctx); err != nil {
		return nil, err
	}
	return writeConfig(b.dir, config{
		Boot:          BootKernel,
		Kernel:        kernelFile,
		Initrd:        initrdFile,
		Disk:          diskFile,
		Cmdline:       DebianCmdline,
		ReadyMarker:   ReadyMarker,
		Net:           true,
		SSH:           true,
		Agent:         b.opts.Agent != "",
		KernelVersion: boot.version,
		Packages:      packages,
	})
}

// makeDisk writes the system as a sparse ext4 file system to dir/disk.
func (b *debianBuilder) makeDisk(ctx context.Context) error {
	dst := filepath.Join(b.dir, diskFile)
	tmp, err := createSparse(dst, b.opts.DiskSize)
	if err != nil {
		return fmt.Errorf("make debian disk: %w", err)
	}
	defer os.Remove(tmp)
	if err := formatExt4(ctx, os.Environ(), tmp, b.root, debianDiskLabel, debianDiskUUID); err != nil {
		return fmt.Errorf("make debian disk: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("make debian disk: %w", err)
	}
	b.progressf("wrote disk: ext4, %d MiB, %d MiB used", b.opts.DiskSize>>20, allocated(dst)>>20)
	return nil
}
