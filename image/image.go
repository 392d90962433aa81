// Package image builds the default sbuml guest: a Debian cloud kernel, an
// initramfs holding busybox-static, the virtio modules and an /init script,
// and an empty-ish ext4 root disk.
//
// Everything comes from Debian packages fetched with apt-get (or given as
// .deb files), and the same packages always produce the same bytes, so
// images dedupe in the content-addressed store. See docs/image.md.
package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/sbuml/sbuml/internal/atomicfile"
)

// ReadyMarker is the line /init prints on the console once the machine is
// set up and a shell is about to start.
const ReadyMarker = "SBUML-READY"

// Cmdline is the kernel command line the image is built for: the console
// on the first serial port, quiet boot (the ready marker still prints), an
// immediate reboot on panic so a crashed guest ends QEMU under -no-reboot
// instead of hanging, and no_timer_check, without which the kernel's IO-APIC
// timer check fails ("IO-APIC + timer doesn't work!") when TCG runs on a
// loaded host.
const Cmdline = "console=ttyS0 quiet panic=-1 no_timer_check"

// DefaultKernelPackage is the Debian package the kernel comes from. It is a
// metapackage; Build resolves it to the linux-image-<version> package it
// depends on.
const DefaultKernelPackage = "linux-image-cloud-amd64"

// BusyboxPackage is the Debian package the guest's userland comes from.
const BusyboxPackage = "busybox-static"

// DefaultDiskSize is the size of the root disk when Options.DiskSize is 0.
const DefaultDiskSize = 256 << 20

// minDiskSize is the smallest root disk Build makes; ext4 with a journal
// needs a few MiB and the disk should have room to be useful.
const minDiskSize = 16 << 20

// DefaultModules are the kernel modules /init loads, besides their
// dependencies: PCI transport, disk, console and network for virtio.
var DefaultModules = []string{"virtio_pci", "virtio_blk", "virtio_console", "virtio_net"}

// Options configures Build.
type Options struct {
	// Dir is the output directory. It is created if missing; existing
	// image files in it are replaced.
	Dir string
	// KernelDeb is the path of a linux-image-<version> .deb to use. If
	// empty, KernelPackage is downloaded with apt-get into CacheDir.
	KernelDeb string
	// KernelPackage names the kernel package to download when KernelDeb
	// is empty; DefaultKernelPackage if empty.
	KernelPackage string
	// BusyboxDeb is the path of a busybox-static .deb to use. If empty,
	// BusyboxPackage is downloaded with apt-get into CacheDir.
	BusyboxDeb string
	// CacheDir keeps downloaded packages between builds. If empty, it is
	// the "sbuml/debs" directory under os.UserCacheDir.
	CacheDir string
	// DiskSize is the size of the root disk in bytes, a multiple of 4096
	// and at least 16 MiB; DefaultDiskSize if 0.
	DiskSize int64
	// Modules replaces DefaultModules when not empty. Dependencies are
	// added automatically; modules built into the kernel are skipped.
	Modules []string
	// Agent is the path of a sbuml-guest binary (static, built with
	// CGO_ENABLED=0) to add as /usr/bin/sbuml-guest, with a boot script
	// that starts its daemon when the machine has the agent's port. The
	// binary is not part of RecipeHash: a cache of built images must key
	// on it too.
	Agent string
	// ExtraFiles are added to the initramfs after everything else, so
	// they may also replace its files (not directories). An executable in
	// etc/sbuml/rc.d/ runs at boot before the ready marker.
	ExtraFiles []File
	// Progress receives one line per build step when not nil.
	Progress io.Writer
}

// File is a regular file to add to the initramfs.
type File struct {
	// Path is the file's path inside the initramfs, relative, with
	// slashes, such as "usr/bin/sbuml-guest".
	Path string
	// Mode holds the permission bits; other bits are ignored.
	Mode fs.FileMode
	// Data is the file's contents.
	Data []byte
}

// check reports whether the file's path is clean, relative and inside
// the archive.
func (f File) check() error {
	if f.Path == "" || f.Path == "." || path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == ".." || strings.HasPrefix(f.Path, "../") {
		return fmt.Errorf("extra file path %q must be relative and clean, like usr/bin/tool", f.Path)
	}
	return nil
}

// How an image boots: the values of Image.Boot.
const (
	// BootKernel images are started by QEMU loading Kernel and Initrd
	// with Cmdline (-kernel, -initrd, -append); Disk is the root disk.
	BootKernel = "kernel"
	// BootBIOS images are a Disk only: the firmware runs the boot loader
	// in the disk's master boot record, as on a PC.
	BootBIOS = "bios"
)

// Image is a built guest image. The paths are absolute.
type Image struct {
	// Boot is BootKernel or BootBIOS.
	Boot string
	// Kernel is the bzImage to pass to QEMU's -kernel; empty for
	// BootBIOS.
	Kernel string
	// Initrd is the initramfs for -initrd; empty for BootBIOS and for a
	// kernel that boots without one. Build makes an uncompressed newc
	// cpio archive.
	Initrd string
	// Disk is the raw, sparse root disk: an ext4 file system for the
	// images Build and BuildDebian make, a partitioned disk with a boot
	// loader for BootBIOS. Boot a private copy of it (see CopySparse)
	// when the image is shared.
	Disk string
	// Cmdline is the kernel command line for -append; empty for BootBIOS.
	Cmdline string
	// ReadyMarker is printed on the console when the guest is ready. It
	// may be empty (an imported image may print none): callers then take
	// a started QEMU as ready.
	ReadyMarker string
	// Net says the guest configures a virtio network card by itself
	// (DHCP on eth0).
	Net bool
	// SSH says the guest runs an ssh server on port 22 that lets root in
	// with the keys the image was built with.
	SSH bool
	// Agent says the guest runs sbuml-guest daemon, the in-guest agent.
	Agent bool
	// KernelVersion is the kernel release, as uname -r prints it.
	KernelVersion string
	// Modules lists the modules /init loads, in load order.
	Modules []string
	// Packages lists the Debian packages the image was built from, as
	// "name=version".
	Packages []string
}

// File names inside an image directory.
const (
	kernelFile = "kernel"
	initrdFile = "initrd"
	diskFile   = "disk"
	configFile = "config.json"
)

// config is the on-disk form of an Image, stored as Dir/config.json.
// Paths are relative to the image directory. Images written before Boot
// existed have none and boot by kernel.
type config struct {
	Boot          string   `json:"boot,omitempty"`
	Kernel        string   `json:"kernel,omitempty"`
	Initrd        string   `json:"initrd,omitempty"`
	Disk          string   `json:"disk"`
	Cmdline       string   `json:"cmdline,omitempty"`
	ReadyMarker   string   `json:"ready_marker,omitempty"`
	Net           bool     `json:"net,omitempty"`
	SSH           bool     `json:"ssh,omitempty"`
	Agent         bool     `json:"agent,omitempty"`
	KernelVersion string   `json:"kernel_version,omitempty"`
	Modules       []string `json:"modules,omitempty"`
	Packages      []string `json:"packages,omitempty"`
}

// check reports what makes c unbootable, naming the image directory.
func (c *config) check(dir string) error {
	switch c.Boot {
	case BootKernel:
		if c.Kernel == "" || c.Cmdline == "" {
			return fmt.Errorf("image %s: %s lacks kernel or cmdline", dir, configFile)
		}
	case BootBIOS:
		if c.Kernel != "" || c.Initrd != "" || c.Cmdline != "" {
			return fmt.Errorf("image %s: %s names a kernel, initrd or cmdline for an image that boots by BIOS", dir, configFile)
		}
	default:
		return fmt.Errorf("image %s: %s has boot %q, want %q or %q", dir, configFile, c.Boot, BootKernel, BootBIOS)
	}
	if c.Disk == "" {
		return fmt.Errorf("image %s: %s names no disk", dir, configFile)
	}
	return nil
}

// inDir returns the absolute path of a file named in config.json, or ""
// for none.
func inDir(dir, name string) string {
	if name == "" {
		return ""
	}
	return filepath.Join(dir, name)
}

// writeConfig writes c as dir/config.json, atomically, and loads the
// image it describes.
func writeConfig(dir string, c config) (*Image, error) {
	data, err := json.MarshalIndent(c, "", "\t")
	if err != nil {
		return nil, fmt.Errorf("write image config: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, configFile), append(data, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("write image config: %w", err)
	}
	return Load(dir)
}

// Load reads the image that Build, BuildDebian, Import or
// MakeBootableDisk wrote to dir.
func Load(dir string) (*Image, error) {
	path := filepath.Join(dir, configFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load image: %w", err)
	}
	var c config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("load image %s: %w", path, err)
	}
	if c.Boot == "" {
		c.Boot = BootKernel
	}
	if err := c.check(dir); err != nil {
		return nil, fmt.Errorf("load %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("load image %s: %w", dir, err)
	}
	img := &Image{
		Boot:          c.Boot,
		Kernel:        inDir(abs, c.Kernel),
		Initrd:        inDir(abs, c.Initrd),
		Disk:          inDir(abs, c.Disk),
		Cmdline:       c.Cmdline,
		ReadyMarker:   c.ReadyMarker,
		Net:           c.Net,
		SSH:           c.SSH,
		Agent:         c.Agent,
		KernelVersion: c.KernelVersion,
		Modules:       c.Modules,
		Packages:      c.Packages,
	}
	for _, f := range []string{img.Kernel, img.Initrd, img.Disk} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("load image %s: %w", dir, err)
		}
	}
	return img, nil
}

// Build fetches the kernel and busybox packages and writes the image files
// kernel, initrd, disk and config.json into opts.Dir.
func Build(ctx context.Context, opts Options) (*Image, error) {
	if opts.Dir == "" {
		return nil, errors.New("build image: no output directory")
	}
	if opts.DiskSize == 0 {
		opts.DiskSize = DefaultDiskSize
	}
	if opts.DiskSize < minDiskSize || opts.DiskSize%4096 != 0 {
		return nil, fmt.Errorf("build image: disk size %d must be a multiple of 4096 and at least %d MiB", opts.DiskSize, minDiskSize>>20)
	}
	if opts.Agent != "" {
		agent, err := agentFiles(opts.Agent)
		if err != nil {
			return nil, err
		}
		opts.ExtraFiles = append(agent, opts.ExtraFiles...)
	}
	for _, f := range opts.ExtraFiles {
		if err := f.check(); err != nil {
			return nil, fmt.Errorf("build image: %w", err)
		}
	}
	if opts.KernelPackage == "" {
		opts.KernelPackage = DefaultKernelPackage
	}
	if len(opts.Modules) == 0 {
		opts.Modules = DefaultModules
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	if opts.CacheDir == "" && (opts.KernelDeb == "" || opts.BusyboxDeb == "") {
		cache, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("build image: no package cache directory: %w", err)
		}
		opts.CacheDir = filepath.Join(cache, "sbuml", "debs")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("build image %s: %w", opts.Dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("build image: %w", err)
	}
	// An image whose files are half replaced must not load.
	if err := os.Remove(filepath.Join(dir, configFile)); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("build image: %w", err)
	}
	work, err := os.MkdirTemp(dir, ".build-")
	if err != nil {
		return nil, fmt.Errorf("build image: %w", err)
	}
	defer os.RemoveAll(work)

	b := &builder{opts: opts, dir: dir, work: work}
	return b.build(ctx)
}

// builder carries the state of one Build.
type builder struct {
	opts Options
	dir  string // output directory
	work string // scratch directory inside dir, removed at the end
}

func (b *builder) progressf(format string, args ...any) {
	fmt.Fprintf(b.opts.Progress, format+"\n", args...)
}

func (b *builder) build(ctx context.Context) (*Image, error) {
	kernelDeb := b.opts.KernelDeb
	if kernelDeb == "" {
		var err error
		pkg := resolveKernelPackage(ctx, b.opts.KernelPackage)
		if kernelDeb, err = b.fetch(ctx, pkg, "--kernel-deb"); err != nil {
			return nil, err
		}
	}
	busyboxDeb := b.opts.BusyboxDeb
	if busyboxDeb == "" {
		var err error
		if busyboxDeb, err = b.fetch(ctx, BusyboxPackage, "--busybox-deb"); err != nil {
			return nil, err
		}
	}

	kernelPkg, err := unpackDeb(ctx, kernelDeb, filepath.Join(b.work, "kernel"))
	if err != nil {
		return nil, err
	}
	busyboxPkg, err := unpackDeb(ctx, busyboxDeb, filepath.Join(b.work, "busybox"))
	if err != nil {
		return nil, err
	}
	b.progressf("unpacked %s and %s", kernelPkg, busyboxPkg)

	kernel, err := openKernelTree(kernelPkg.root)
	if err != nil {
		return nil, fmt.Errorf("kernel package %s: %w", kernelDeb, err)
	}
	modules, err := kernel.resolve(ctx, b.opts.Modules)
	if err != nil {
		return nil, fmt.Errorf("kernel package %s: %w", kernelDeb, err)
	}
	busybox := filepath.Join(busyboxPkg.root, "bin", "busybox")
	if _, err := os.Stat(busybox); err != nil {
		return nil, fmt.Errorf("busybox package %s has no /bin/busybox: %w", busyboxDeb, err)
	}

	if err := copyFile(filepath.Join(b.dir, kernelFile), kernel.vmlinuz); err != nil {
		return nil, fmt.Errorf("write kernel: %w", err)
	}
	size, err := writeInitramfs(ctx, filepath.Join(b.dir, initrdFile), kernel, modules, busybox, b.opts.ExtraFiles)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(modules))
	for i, m := range modules {
		names[i] = m.name
	}
	b.progressf("wrote initrd: kernel %s, busybox, %d modules (%d KiB)", kernel.version, len(modules), size>>10)

	if err := makeDisk(ctx, filepath.Join(b.dir, diskFile), b.opts.DiskSize, filepath.Join(b.work, "disk")); err != nil {
		return nil, err
	}
	b.progressf("wrote disk: ext4, %d MiB", b.opts.DiskSize>>20)

	return writeConfig(b.dir, config{
		Boot:          BootKernel,
		Kernel:        kernelFile,
		Initrd:        initrdFile,
		Disk:          diskFile,
		Cmdline:       Cmdline,
		ReadyMarker:   ReadyMarker,
		Net:           true,
		Agent:         b.opts.Agent != "",
		KernelVersion: kernel.version,
		Modules:       names,
		Packages:      []string{kernelPkg.String(), busyboxPkg.String()},
	})
}

// fetch returns the path of package pkg's .deb in the cache, downloading it
// if needed. flag names the command-line flag that supplies it instead.
func (b *builder) fetch(ctx context.Context, pkg, flag string) (string, error) {
	path, cached, err := fetchDeb(ctx, pkg, b.opts.CacheDir)
	if err != nil {
		return "", fmt.Errorf("%w; is apt reachable (apt-get update)? or build the image from a .deb you have: sbuml image build %s FILE", err, flag)
	}
	how := "downloaded"
	if cached {
		how = "cached"
	}
	b.progressf("%s %s", how, filepath.Base(path))
	return path, nil
}

// formatVersion changes whenever Build's output for the same packages
// changes in a way RecipeHash cannot see (the Go code, not the data).
const formatVersion = 4

// RecipeHash identifies how Build turns packages into an image: the
// format version, the kernel command line, the default modules and the
// embedded /init and configuration files. Caches of built images should
// include it in their key, so a changed recipe builds a new image.
func RecipeHash() string {
	h := sha256.New()
	fmt.Fprintf(h, "format %d\ncmdline %s\nmodules %s\nmarker %s\n", formatVersion, Cmdline, strings.Join(DefaultModules, ","), ReadyMarker)
	err := fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "file %s %d\n", p, len(data))
		h.Write(data)
		return nil
	})
	if err != nil {
		panic("image: walk embedded files: " + err.Error()) // embedded data cannot fail to read
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}
