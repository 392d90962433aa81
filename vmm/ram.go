package vmm

import (
	"errors"
	"fmt"
	"github.com/sbuml/sbuml/internal/units"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// RAMSidecarSuffix names a directory beside the RAM file (the file's name
// plus this suffix) in which the caller keeps what goes with this RAM and
// no other (sbuml: a copy of the RAM of the machine's last snapshot). Halt
// removes it with the RAM file.
const RAMSidecarSuffix = ".last"

// NewRAMFile makes a fresh directory for one machine's RAM under root
// (DefaultRAMRoot if empty) and returns the path of the RAM file in it; the
// file itself is not created. A machine booted with this path as
// Config.RAMFile owns the directory, and Halt removes both.
func NewRAMFile(root, name string) (string, error) {
	if root == "" {
		root = DefaultRAMRoot
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("make ram directory: %w", err)
	}
	d, err := os.MkdirTemp(root, name+"-")
	if err != nil {
		return "", fmt.Errorf("make ram directory: %w", err)
	}
	return filepath.Join(d, RAMFileName), nil
}

// checkFree fails with one clear line if the file system holding dir has
// less than need bytes available.
func checkFree(dir string, need int64, what string) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", dir, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free < need {
		return fmt.Errorf("not enough space for %s in %s: %s free, %s needed", what, dir, units.Bytes(free), units.Bytes(need))
	}
	return nil
}

// ficlone is the FICLONE ioctl: make dst share src's extents.
const ficlone = 0x40049409

// Whence values for lseek that find data and holes in sparse files.
const (
	seekData = 3
	seekHole = 4
)

// CloneFile copies src to a new file dst. It asks the file system for a
// copy-on-write clone first and otherwise copies only the data regions, so
// holes (untouched guest RAM, unwritten disk blocks) stay holes. dst must
// not exist.
func CloneFile(dst, src string) (err error) {
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("clone %s: %w", src, err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		return fmt.Errorf("clone %s: %w", src, err)
	}
	err = CloneInto(out, src)
	if cerr := out.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("clone %s to %s: %w", src, dst, cerr)
	}
	if err != nil {
		os.Remove(dst)
	}
	return err
}

// CloneInto makes the open file out a copy of src, as CloneFile does. out
// must hold no data (new, or only holes: a file truncated to any length),
// since only src's data regions are written; it ends up as long as src.
// Another process may have out open meanwhile (a QEMU starting on a RAM
// file or disk being filled): it sees the data arrive.
func CloneInto(out *os.File, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("clone %s: %w", src, err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return fmt.Errorf("clone %s: %w", src, err)
	}
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, out.Fd(), ficlone, in.Fd()); e == 0 {
		return nil
	}
	if err := copySparse(out, in, fi.Size()); err != nil {
		return fmt.Errorf("clone %s to %s: %w", src, out.Name(), err)
	}
	return nil
}

func copySparse(out, in *os.File, size int64) error {
	var off int64
	for off < size {
		data, err := in.Seek(off, seekData)
		if err != nil {
			if errors.Is(err, syscall.ENXIO) { // only a hole remains
				break
			}
			if errors.Is(err, syscall.EINVAL) { // no SEEK_DATA here: copy all
				data = off
			} else {
				return err
			}
		}
		hole, err := in.Seek(data, seekHole)
		if err != nil {
			hole = size
		}
		if _, err := in.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := out.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := io.CopyN(out, in, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return out.Truncate(size)
}
