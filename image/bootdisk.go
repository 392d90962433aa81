package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// The layout of a bootable disk: an MBR partition table with the boot
// partition (FAT16, syslinux, kernel, initrd) first, from 1 MiB, and the
// root partition (the image's ext4 disk) right after it, both aligned to
// 1 MiB.
const (
	bootPartStart = 1 << 20
	minBootPart   = 32 << 20 // FAT16 wants at least 4085 clusters
	sectorSize    = 512
	bootPartLabel = "SBUMLBOOT"
	bootDiskID    = "0x5b0a7d1e" // the MBR's disk identifier, fixed for reproducibility
	// BootDiskRoot is the root partition of a bootable disk as the guest
	// kernel sees it when the disk is the first virtio disk.
	BootDiskRoot = "/dev/vda2"
)

// mbrPaths are where Debian's syslinux-common and syslinux packages put
// syslinux's master boot record code.
var mbrPaths = []string{"/usr/lib/syslinux/mbr/mbr.bin", "/usr/lib/SYSLINUX/mbr.bin"}

// BootDiskOptions configures MakeBootableDisk.
type BootDiskOptions struct {
	// RootSize is the size of the root partition in bytes, a multiple of
	// 1 MiB; its ext4 file system is grown to fill it. 0 keeps the size
	// of the image's disk (rounded up to 1 MiB).
	RootSize int64
}

// MakeBootableDisk writes to out a raw disk that boots the kernel-boot
// image img by BIOS, with its own boot loader: a master boot record
// (syslinux's mbr.bin) and an MBR partition table; partition 1, active,
// FAT16 holding syslinux, the kernel, the initrd and syslinux.cfg, whose
// kernel command line is img's with root= naming partition 2
// (BootDiskRoot); partition 2 a copy of img's disk. Nothing is mounted:
// the tools write into the file at the partitions' offsets (sfdisk,
// mkfs.fat --offset, syslinux --offset, mcopy -i FILE@@OFFSET). The disk
// is sparse.
func MakeBootableDisk(ctx context.Context, img *Image, out string, opts BootDiskOptions) error {
	if img.Boot != BootKernel || img.Kernel == "" || img.Disk == "" {
		return fmt.Errorf("make bootable disk %s: the image must boot by kernel and have a disk (boot %q)", out, img.Boot)
	}
	if err := needTools("sfdisk", "mkfs.fat", "syslinux", "mcopy"); err != nil {
		return fmt.Errorf("make bootable disk: %w", err)
	}
	mbr, err := readMBRCode()
	if err != nil {
		return fmt.Errorf("make bootable disk: %w", err)
	}
	l, err := planBootDisk(img, opts.RootSize)
	if err != nil {
		return fmt.Errorf("make bootable disk %s: %w", out, err)
	}
	tmp, err := createSparse(out, l.size())
	if err != nil {
		return fmt.Errorf("make bootable disk: %w", err)
	}
	defer os.Remove(tmp)
	steps := []func() error{
		func() error { return l.partition(ctx, tmp, mbr) },
		func() error { return l.writeBootPartition(ctx, tmp, img) },
		func() error { return l.writeRootPartition(ctx, tmp, img.Disk) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return fmt.Errorf("make bootable disk %s: %w", out, err)
		}
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("make bootable disk: %w", err)
	}
	return nil
}

// readMBRCode returns the boot code part (440 bytes) of syslinux's MBR.
func readMBRCode() ([]byte, error) {
	for _, p := range mbrPaths {
		data, err := os.ReadFile(p)
		if err == nil && len(data) >= 440 {
			return data[:440], nil
		}
	}
	return nil, fmt.Errorf("no syslinux MBR at %s: install the Debian package syslinux-common", mbrPaths[0])
}

// bootDiskLayout is where the partitions of a bootable disk go, in bytes.
type bootDiskLayout struct {
	bootSize, rootStart, rootSize int64
}

func (l bootDiskLayout) size() int64 { return l.rootStart + l.rootSize }

// planBootDisk sizes the boot partition for the kernel and initrd with
// room to spare, and the root partition for the image's disk.
func planBootDisk(img *Image, rootSize int64) (bootDiskLayout, error) {
	var files int64
	for _, f := range []string{img.Kernel, img.Initrd} {
		if f == "" {
			continue
		}
		fi, err := os.Stat(f)
		if err != nil {
			return bootDiskLayout{}, err
		}
		files += fi.Size()
	}
	fi, err := os.Stat(img.Disk)
	if err != nil {
		return bootDiskLayout{}, err
	}
	diskSize := roundUp(fi.Size(), 1<<20)
	switch {
	case rootSize == 0:
		rootSize = diskSize
	case rootSize%(1<<20) != 0 || rootSize < diskSize:
		return bootDiskLayout{}, fmt.Errorf("root partition size %d: want a multiple of 1 MiB, at least the image disk's %d MiB", rootSize, diskSize>>20)
	}
	boot := max(minBootPart, roundUp(files+files/4+(4<<20), 1<<20))
	return bootDiskLayout{bootSize: boot, rootStart: bootPartStart + boot, rootSize: rootSize}, nil
}

func roundUp(n, unit int64) int64 { return (n + unit - 1) / unit * unit }

// partition writes the partition table with sfdisk and then the MBR boot
// code in front of it.
func (l bootDiskLayout) partition(ctx context.Context, disk string, mbr []byte) error {
	script := fmt.Sprintf("label: dos\nlabel-id: %s\nstart=%d, size=%d, type=e, bootable\nstart=%d, size=%d, type=83\n",
		bootDiskID, bootPartStart/sectorSize, l.bootSize/sectorSize, l.rootStart/sectorSize, l.rootSize/sectorSize)
	if _, err := runTool(ctx, nil, strings.NewReader(script), "sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", disk); err != nil {
		return err
	}
	f, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(mbr, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// writeBootPartition formats partition 1 as FAT16, installs syslinux on
// it and copies the kernel, the initrd and syslinux.cfg into it.
func (l bootDiskLayout) writeBootPartition(ctx context.Context, disk string, img *Image) error {
	off := strconv.FormatInt(bootPartStart, 10)
	if _, err := runTool(ctx, nil, nil, "mkfs.fat", "-F", "16", "-n", bootPartLabel, "--invariant",
		"--offset", strconv.FormatInt(bootPartStart/sectorSize, 10), disk, strconv.FormatInt(l.bootSize>>10, 10)); err != nil {
		return err
	}
	if _, err := runTool(ctx, nil, nil, "syslinux", "--install", "--offset", off, disk); err != nil {
		return err
	}
	cfg, err := os.CreateTemp(filepath.Dir(disk), ".syslinux.cfg-")
	if err != nil {
		return err
	}
	defer os.Remove(cfg.Name())
	_, err = io.WriteString(cfg, syslinuxConfig(img))
	if cerr := cfg.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	files := [][2]string{{img.Kernel, "::/vmlinuz"}, {cfg.Name(), "::/syslinux.cfg"}}
	if img.Initrd != "" {
		files = append(files, [2]string{img.Initrd, "::/initrd"})
	}
	for _, f := range files {
		if _, err := runTool(ctx, nil, nil, "mcopy", "-i", disk+"@@"+off, f[0], f[1]); err != nil {
			return err
		}
	}
	return nil
}

// syslinuxConfig boots the image's kernel at once, with its output on the
// first serial port too, so that a boot loader error shows on the console.
func syslinuxConfig(img *Image) string {
	var b strings.Builder
	b.WriteString("SERIAL 0 115200\nPROMPT 0\nTIMEOUT 0\nDEFAULT sbuml\nLABEL sbuml\n  LINUX /vmlinuz\n")
	if img.Initrd != "" {
		b.WriteString("  INITRD /initrd\n")
	}
	fmt.Fprintf(&b, "  APPEND %s\n", bootDiskCmdline(img.Cmdline))
	return b.String()
}

// bootDiskCmdline points root= at the bootable disk's root partition,
// replacing the one in cmdline or adding one.
func bootDiskCmdline(cmdline string) string {
	fields := strings.Fields(cmdline)
	found := false
	for i, f := range fields {
		if strings.HasPrefix(f, "root=") {
			fields[i], found = "root="+BootDiskRoot, true
		}
	}
	if !found {
		fields = append(fields, "root="+BootDiskRoot)
	}
	return strings.Join(fields, " ")
}

// writeRootPartition copies the image's disk into partition 2, growing
// its ext4 file system first (in a scratch copy) if the partition is
// larger.
func (l bootDiskLayout) writeRootPartition(ctx context.Context, disk, root string) error {
	fi, err := os.Stat(root)
	if err != nil {
		return err
	}
	if l.rootSize > fi.Size() {
		grown, err := createSparse(disk, 0)
		if err != nil {
			return err
		}
		defer os.Remove(grown)
		if err := CopySparse(grown, root); err != nil {
			return err
		}
		if err := growExt4(ctx, grown, l.rootSize); err != nil {
			return err
		}
		root = grown
	}
	f, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	err = copySparseInto(f, l.rootStart, root)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// growExt4 enlarges a raw disk file holding an ext4 file system, and the
// file system with it, to size bytes. The file system is checked first:
// one that was not cleanly unmounted has a journal to replay, and
// resizing it before would leave the replay to write old metadata over
// the new.
func growExt4(ctx context.Context, disk string, size int64) error {
	fi, err := os.Stat(disk)
	if err != nil {
		return fmt.Errorf("grow disk: %w", err)
	}
	if size < fi.Size() {
		return fmt.Errorf("grow disk %s: %d bytes is smaller than its %d", disk, size, fi.Size())
	}
	if err := checkExt4(ctx, disk); err != nil {
		return fmt.Errorf("grow disk: %w", err)
	}
	if err := os.Truncate(disk, size); err != nil {
		return fmt.Errorf("grow disk: %w", err)
	}
	if _, err := runTool(ctx, nil, nil, "resize2fs", disk); err != nil {
		return fmt.Errorf("grow disk: %w", err)
	}
	return nil
}

// checkExt4 runs e2fsck on an ext4 disk file, fixing what it finds. Its
// exit status 1 means it corrected errors, which is fine.
func checkExt4(ctx context.Context, disk string) error {
	cmd := exec.CommandContext(ctx, "e2fsck", "-f", "-y", disk)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err == nil || errors.As(err, &exit) && exit.ExitCode() == 1 {
		return nil
	}
	if isNotFound(err) {
		return missingTool("e2fsck")
	}
	return fmt.Errorf("e2fsck -f -y %s failed (%v): %s", disk, err, lastLine(string(out)))
}

// lastLine returns the last non-empty line of a program's output.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
