package image

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// bootstrap installs the packages into b.root in debootstrap's two
// stages: the first downloads (into the cache) and unpacks them, the
// second, inside the chroot, installs and configures them. Between the
// two the initramfs settings are put in place, so that the kernel
// package's initramfs is made once, the way the image wants it.
func (b *debianBuilder) bootstrap(ctx context.Context) error {
	include := strings.Join(DebianPackages, ",")
	unlock, err := lockFile(filepath.Join(b.opts.CacheDir, ".lock"))
	if err != nil {
		return fmt.Errorf("build debian image: %w", err)
	}
	err = b.debootstrap(ctx, "", "debootstrap --foreign", "debootstrap", "--foreign", "--variant=minbase",
		"--cache-dir="+b.opts.CacheDir, "--include="+include, DebianSuite, b.root, b.opts.Mirror)
	unlock()
	if err != nil {
		return fmt.Errorf("%w (is %s reachable? another mirror: DebianOptions.Mirror)", err, b.opts.Mirror)
	}
	b.progressf("debootstrap: fetched and unpacked %s from %s", DebianSuite, b.opts.Mirror)

	if err := writeEmbedded(b.root, "debian/boot"); err != nil {
		return fmt.Errorf("build debian image: %w", err)
	}
	if err := b.debootstrap(ctx, b.root, "debootstrap --second-stage", "/debootstrap/debootstrap", "--second-stage"); err != nil {
		return err
	}
	b.progressf("debootstrap: installed the packages")
	return nil
}

// debootstrap runs a stage of debootstrap, in a chroot into root unless
// root is empty, with its own process group so that cancelling ctx stops
// all of it: SIGTERM first, which lets debootstrap unmount what it
// mounted, SIGKILL if it is still there 30 s later.
func (b *debianBuilder) debootstrap(ctx context.Context, root, what, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if root != "" {
		cmd.SysProcAttr.Chroot = root
		cmd.Dir = "/"
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C"}
	}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err == nil {
		return nil
	}
	if isNotFound(err) {
		return fmt.Errorf("build debian image: %w", missingTool(name))
	}
	if ctx.Err() != nil {
		return fmt.Errorf("build debian image: %s: %w", what, ctx.Err())
	}
	msg := debootstrapError(out.String())
	if msg == "" {
		msg = err.Error()
	}
	if log := b.keepLog(); log != "" {
		msg += "; log in " + log
	}
	return fmt.Errorf("build debian image: %s failed: %s", what, msg)
}

// keepLog copies debootstrap's log out of the scratch directory, which is
// removed, into the output directory, and returns its path; "" if there
// is none.
func (b *debianBuilder) keepLog() string {
	src := filepath.Join(b.root, "debootstrap", "debootstrap.log")
	dst := filepath.Join(b.dir, "debootstrap.log")
	if copyFile(dst, src) != nil {
		return ""
	}
	return dst
}

// debootstrapError picks the line of debootstrap's output worth reporting:
// its first error ("E: …"), else the last warning ("W: …").
func debootstrapError(out string) string {
	var warning string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "E: ") {
			return strings.TrimPrefix(line, "E: ")
		}
		if strings.HasPrefix(line, "W: ") {
			warning = strings.TrimPrefix(line, "W: ")
		}
	}
	return warning
}

// removeBuildDir removes a scratch directory that a chroot was built in.
// Whatever is still mounted below it (debootstrap mounts /proc and /sys
// in the chroot and unmounts them when it ends, but not if it was
// killed) is unmounted first; if something stays mounted, nothing is
// removed, since removing files through a mount of the host's /dev or
// /sys would remove the host's.
func removeBuildDir(dir string) error {
	mounts, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	for _, m := range mounts {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
	if mounts, err = mountsUnder(dir); err != nil {
		return err
	}
	if len(mounts) > 0 {
		return fmt.Errorf("%s is still mounted; unmount it (umount -R) and remove %s", mounts[0], dir)
	}
	return os.RemoveAll(dir)
}

// mountsUnder returns the mount points at or below dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("list mounts: %w", err)
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		p := unescapeMountinfo(fields[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			mounts = append(mounts, p)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("list mounts: %w", err)
	}
	slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
	return mounts, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) that
// /proc/self/mountinfo writes in paths.
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// lockFile takes an exclusive lock on path, waiting for other processes,
// and returns the function that releases it.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
