package image

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// DefaultImportCmdline is the kernel command line of an imported kernel
// when none is given: the console on the first serial port (sbuml reads
// and types into it) and the first virtio disk as the root file system.
const DefaultImportCmdline = "console=ttyS0 root=/dev/vda rw"

// ImportOptions describes a system to make into an image: a disk that
// boots by BIOS with its own boot loader (Disk alone), or a kernel, an
// optional initrd and a root disk (Kernel set).
type ImportOptions struct {
	// Dir is the output directory, created if missing.
	Dir string
	// Disk is the root disk: a raw disk, taken as it is (holes stay
	// holes), or a qcow2 disk, converted to raw with qemu-img.
	Disk string
	// Kernel is a Linux bzImage; empty for a disk that boots by BIOS.
	Kernel string
	// Initrd is the kernel's initramfs, if it needs one.
	Initrd string
	// Cmdline is the kernel command line; DefaultImportCmdline if empty.
	Cmdline string
	// ReadyMarker is a line the guest prints on the serial console once
	// it is up; empty if it prints none.
	ReadyMarker string
	// Progress receives one line per slow step when not nil.
	Progress io.Writer
}

// Import writes the image files (disk, and kernel and initrd when given)
// and config.json into opts.Dir. The disk is a qcow2 disk if it starts
// with qcow2's magic, else raw. A disk that boots by BIOS must carry a
// boot signature; a kernel must be a bzImage.
func Import(ctx context.Context, opts ImportOptions) (*Image, error) {
	c, err := opts.config()
	if err != nil {
		return nil, fmt.Errorf("import image: %w", err)
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("import image: %w", err)
	}
	if err := importDisk(ctx, filepath.Join(opts.Dir, diskFile), opts.Disk, opts.Progress); err != nil {
		return nil, fmt.Errorf("import image: %w", err)
	}
	if c.Boot == BootBIOS {
		if err := checkBootSector(filepath.Join(opts.Dir, diskFile)); err != nil {
			return nil, fmt.Errorf("import image: disk %s: %w; import it with its kernel instead", opts.Disk, err)
		}
	}
	for _, f := range []struct{ dst, src string }{{c.Kernel, opts.Kernel}, {c.Initrd, opts.Initrd}} {
		if f.src == "" {
			continue
		}
		if err := linkOrCopy(filepath.Join(opts.Dir, f.dst), f.src); err != nil {
			return nil, fmt.Errorf("import image: %w", err)
		}
	}
	return writeConfig(opts.Dir, c)
}

// config checks the options and returns the image's configuration.
func (o ImportOptions) config() (config, error) {
	if o.Dir == "" || o.Disk == "" {
		return config{}, errors.New("an output directory and a disk are needed")
	}
	if strings.ContainsAny(o.ReadyMarker, "\r\n") {
		return config{}, fmt.Errorf("ready marker %q must be one line", o.ReadyMarker)
	}
	c := config{Boot: BootBIOS, Disk: diskFile, ReadyMarker: o.ReadyMarker}
	if o.Kernel == "" {
		if o.Initrd != "" || o.Cmdline != "" {
			return config{}, errors.New("an initrd or a kernel command line needs a kernel")
		}
		return c, nil
	}
	version, err := KernelRelease(o.Kernel)
	if err != nil {
		return config{}, err
	}
	c.Boot, c.Kernel, c.KernelVersion, c.Cmdline = BootKernel, kernelFile, version, o.Cmdline
	if c.Cmdline == "" {
		c.Cmdline = DefaultImportCmdline
	}
	if o.Initrd != "" {
		c.Initrd = initrdFile
	}
	return c, nil
}

// Disk formats, told by the first bytes of the file.
var (
	qcow2Magic = []byte("QFI\xfb")
	// formats qemu-img could convert, which Import does not take.
	otherMagics = map[string]string{"KDMV": "VMDK", "vhdxfile": "VHDX", "<<< ": "VDI"}
)

// importDisk puts the disk src at dst as a raw disk: converted with
// qemu-img if it is qcow2, else linked or copied sparsely.
func importDisk(ctx context.Context, dst, src string, progress io.Writer) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	head := make([]byte, 8)
	n, _ := io.ReadFull(f, head)
	f.Close()
	head = head[:n]
	for magic, format := range otherMagics {
		if bytes.HasPrefix(head, []byte(magic)) {
			return fmt.Errorf("disk %s is a %s disk; convert it first: qemu-img convert -O raw %s DISK.raw", src, format, src)
		}
	}
	if !bytes.HasPrefix(head, qcow2Magic) {
		return linkOrCopy(dst, src)
	}
	if progress != nil {
		fmt.Fprintf(progress, "converting the qcow2 disk %s to raw\n", src)
	}
	if err := needTools("qemu-img"); err != nil {
		return err
	}
	os.Remove(dst)
	if _, err := runTool(ctx, nil, nil, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", src, dst); err != nil {
		return err
	}
	return os.Chmod(dst, 0o644)
}

// linkOrCopy makes dst a hard link to src, or a sparse copy where a link
// cannot be made (another file system) or would not have mode 0644.
// Every image file has that mode, so that the same files make the same
// snapshot whatever the modes of the files they came from.
func linkOrCopy(dst, src string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	os.Remove(dst)
	if fi.Mode().Perm() == 0o644 && os.Link(src, dst) == nil {
		return nil
	}
	if err := CopySparse(dst, src); err != nil {
		return err
	}
	return os.Chmod(dst, 0o644)
}

// checkBootSector checks that a disk's first sector ends with the boot
// signature 0x55 0xAA, without which a PC BIOS does not boot it.
func checkBootSector(disk string) error {
	f, err := os.Open(disk)
	if err != nil {
		return err
	}
	defer f.Close()
	sig := make([]byte, 2)
	if _, err := f.ReadAt(sig, 510); err != nil || sig[0] != 0x55 || sig[1] != 0xAA {
		return errors.New("no boot signature (0x55 0xAA at byte 510), so a PC BIOS will not boot it")
	}
	return nil
}

// KernelRelease returns the release of a Linux bzImage ("6.1.0-50-cloud-
// amd64"), read from its setup header, and fails for a file that is not
// a bzImage.
func KernelRelease(kernel string) (string, error) {
	f, err := os.Open(kernel)
	if err != nil {
		return "", err
	}
	defer f.Close()
	hdr := make([]byte, 0x210)
	if _, err := io.ReadFull(f, hdr); err != nil || string(hdr[0x202:0x206]) != "HdrS" {
		return "", fmt.Errorf("kernel %s is not a Linux bzImage (no \"HdrS\" setup header)", kernel)
	}
	// kernel_version: the offset of the version string, less 0x200.
	off := int64(binary.LittleEndian.Uint16(hdr[0x20e:])) + 0x200
	version := make([]byte, 256)
	n, _ := f.ReadAt(version, off)
	release, _, _ := strings.Cut(string(version[:n]), " ")
	release, _, _ = strings.Cut(release, "\x00")
	if off == 0x200 || release == "" {
		return "", fmt.Errorf("kernel %s has no version string", kernel)
	}
	return release, nil
}
