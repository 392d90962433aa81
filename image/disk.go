package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// diskUUID is the file system UUID and directory hash seed of every disk,
// fixed so that builds are reproducible. Each machine's disk is a copy of
// the image's, so sharing a UUID between machines is expected.
const diskUUID = "3f0e5c62-8a51-4d8e-b0b7-5b3d5d0c2a71"

// diskLabel is the ext4 volume label of the root disk.
const diskLabel = "sbuml"

// makeDisk writes a sparse raw ext4 image of size bytes to dst, holding the
// embedded disk files. scratch is a directory it may use for the source
// tree.
func makeDisk(ctx context.Context, dst string, size int64, scratch string) error {
	t := newTree()
	t.add("etc/sbuml/rc.d", fs.ModeDir|0o755, nil)
	if err := t.addEmbedded("files/disk"); err != nil {
		return fmt.Errorf("make disk: %w", err)
	}
	if err := t.writeDir(scratch); err != nil {
		return fmt.Errorf("make disk: %w", err)
	}

	tmp, err := createSparse(dst, size)
	if err != nil {
		return fmt.Errorf("make disk: %w", err)
	}
	defer os.Remove(tmp)
	env := append(os.Environ(), "E2FSPROGS_FAKE_TIME="+strconv.Itoa(epoch))
	if err := formatExt4(ctx, env, tmp, scratch, diskLabel, diskUUID); err != nil {
		return fmt.Errorf("make disk: %w", err)
	}

	// mke2fs -d copies owners and times from the source tree; ctime cannot
	// be set there, so set every inode's times and owner with debugfs.
	var script bytes.Buffer
	for _, name := range append([]string{"", "lost+found"}, t.names()...) {
		for _, field := range []string{"atime", "mtime", "ctime", "crtime"} {
			fmt.Fprintf(&script, "set_inode_field \"/%s\" %s @%d\n", name, field, epoch)
		}
		fmt.Fprintf(&script, "set_inode_field \"/%s\" uid 0\nset_inode_field \"/%s\" gid 0\n", name, name)
	}
	stderr, err := runTool(ctx, env, &script, "debugfs", "-w", "-f", "-", tmp)
	if err != nil {
		return fmt.Errorf("make disk: %w", err)
	}
	if msg := debugfsError(stderr); msg != "" {
		return fmt.Errorf("make disk: debugfs -w %s: %s", tmp, msg)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("make disk: %w", err)
	}
	return nil
}

// createSparse creates a hole-only file of size bytes and mode 0644 next
// to dst, to be renamed to dst once written, and returns its name.
func createSparse(dst string, size int64) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+"-")
	if err != nil {
		return "", err
	}
	err = f.Chmod(0o644)
	if err == nil {
		err = f.Truncate(size)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// formatExt4 makes an ext4 file system filling the file disk, holding a
// copy of the tree src, with a fixed label and UUID (also the directory
// hash seed, so that the same tree gives the same bytes).
//
// The journal is not zeroed (lazy_journal_init) because the file is all
// holes; inode tables are marked zeroed (lazy_itable_init=0, which costs
// nothing on a file mke2fs can punch holes in) so the guest kernel does
// not start zeroing them in the background after mounting.
func formatExt4(ctx context.Context, env []string, disk, src, label, uuid string) error {
	opts := "root_owner=0:0,hash_seed=" + uuid + ",lazy_itable_init=0,lazy_journal_init=1"
	_, err := runTool(ctx, env, nil, "mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0",
		"-L", label, "-U", uuid, "-E", opts, "-d", src, disk)
	return err
}

// runTool runs a program with env and stdin and returns its standard
// error. On failure the error names the command line and its most telling
// error line.
func runTool(ctx context.Context, env []string, stdin io.Reader, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.Stdin = stdin
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		line := strings.Join(append([]string{name}, args...), " ")
		if isNotFound(err) {
			return "", missingTool(name)
		}
		if msg := errorLine(stderr.String()); msg != "" {
			return "", fmt.Errorf("%s failed: %s", line, msg)
		}
		return "", fmt.Errorf("%s failed: %w", line, err)
	}
	return stderr.String(), nil
}

// debugfsError returns the first line of debugfs's error output other than
// its version banner; debugfs exits 0 even when a command fails.
func debugfsError(stderr string) string {
	for _, line := range strings.Split(stderr, "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "debugfs ") {
			return line
		}
	}
	return ""
}

// Linux lseek whence values for finding data in sparse files.
const (
	seekData = 3
	seekHole = 4
)

// CopySparse copies the file src to dst, keeping holes: ranges of src that
// are holes or all zeros become holes in dst. Use it to give each machine
// a private copy of an Image's Disk.
func CopySparse(dst, src string) (err error) {
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("copy disk: %w", err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("copy disk: %w", err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("copy disk %s: %w", dst, cerr)
		}
	}()
	if err := out.Truncate(fi.Size()); err != nil {
		return fmt.Errorf("copy disk %s: %w", dst, err)
	}
	return copySparseInto(out, 0, src)
}

// copySparseInto writes the data of the file src into out at offset at,
// skipping src's holes and blocks of zeros, which out must already read
// as zeros.
func copySparseInto(out *os.File, at int64, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy disk: %w", err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return fmt.Errorf("copy disk: %w", err)
	}
	size := fi.Size()
	buf := make([]byte, 1<<20)
	zero := make([]byte, 64<<10)
	for off := int64(0); off < size; {
		start, err := in.Seek(off, seekData)
		if errors.Is(err, syscall.ENXIO) {
			break // only a hole remains
		}
		if errors.Is(err, syscall.EINVAL) {
			start = off // no hole support: scan everything for zeros
		} else if err != nil {
			return fmt.Errorf("copy disk %s: %w", src, err)
		}
		end, err := in.Seek(start, seekHole)
		if err != nil {
			end = size
		}
		if err := copyRange(out, in, at, start, end, buf, zero); err != nil {
			return fmt.Errorf("copy disk %s to %s: %w", src, out.Name(), err)
		}
		off = end
	}
	return nil
}

// copyRange copies bytes [start, end) of in to the same offsets plus at
// of out, skipping blocks of zeros.
func copyRange(out, in *os.File, at, start, end int64, buf, zero []byte) error {
	for off := start; off < end; {
		n := int64(len(buf))
		if end-off < n {
			n = end - off
		}
		if _, err := in.ReadAt(buf[:n], off); err != nil {
			return err
		}
		for b := int64(0); b < n; b += int64(len(zero)) {
			chunk := buf[b:min(b+int64(len(zero)), n)]
			if bytes.Equal(chunk, zero[:len(chunk)]) {
				continue
			}
			if _, err := out.WriteAt(chunk, at+off+b); err != nil {
				return err
			}
		}
		off += n
	}
	return nil
}
