package image

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/sbuml/sbuml/internal/atomicfile"
)

// initramfsDirs are the directories /init and busybox expect to exist.
var initramfsDirs = []string{
	"bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run",
	"mnt", "root", "etc/sbuml/rc.d",
}

// writeInitramfs writes the initramfs to dst and returns its size. It holds
// busybox as /bin/busybox (/init installs the applet links at boot), the
// modules under /lib/modules/<version> with a modules.dep for modprobe,
// their load order in /etc/sbuml/modules, the embedded /init and /etc, and
// the extra files, which may replace any of those files.
func writeInitramfs(ctx context.Context, dst string, kernel *kernelTree, modules []module, busybox string, extra []File) (int64, error) {
	t := newTree()
	for _, dir := range initramfsDirs {
		t.add(dir, fs.ModeDir|0o755, nil)
	}
	t.add("tmp", fs.ModeDir|fs.ModeSticky|0o777, nil)
	t.add("root", fs.ModeDir|0o700, nil)
	// The kernel opens /dev/console for init before devtmpfs is mounted.
	t.addDevice("dev/console", fs.ModeDevice|fs.ModeCharDevice|0o600, 5, 1)
	t.addDevice("dev/null", fs.ModeDevice|fs.ModeCharDevice|0o666, 1, 3)

	bb, err := os.ReadFile(busybox)
	if err != nil {
		return 0, fmt.Errorf("write initrd: %w", err)
	}
	t.add("bin/busybox", 0o755, bb)
	if err := t.addEmbedded("files/initramfs", "init", "etc/udhcpc/default.script"); err != nil {
		return 0, fmt.Errorf("write initrd: %w", err)
	}

	modDir := "lib/modules/" + kernel.version
	t.add(modDir, fs.ModeDir|0o755, nil)
	var order strings.Builder
	for _, m := range modules {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		t.add(modDir+"/"+m.rel, 0o644, m.data)
		fmt.Fprintln(&order, m.rel)
	}
	t.add("etc/sbuml/modules", 0o644, []byte(order.String()))
	t.add(modDir+"/modules.dep", 0o644, modulesDep(modules))
	if builtin, err := os.ReadFile(filepath.Join(kernel.modDir, "modules.builtin")); err == nil {
		t.add(modDir+"/modules.builtin", 0o644, builtin)
	}

	for _, f := range extra {
		if e, ok := t.entries[f.Path]; ok && e.hdr.Mode.IsDir() {
			return 0, fmt.Errorf("write initrd: extra file %s would replace a directory", f.Path)
		}
		t.add(f.Path, f.Mode.Perm(), f.Data)
	}

	var size int64
	err = atomicfile.Write(dst, 0o644, func(w io.Writer) error {
		cw := &countingWriter{w: w}
		bw := bufio.NewWriterSize(cw, 1<<20)
		if err := t.writeCpio(bw); err != nil {
			return err
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		size = cw.n
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("write initrd: %w", err)
	}
	return size, nil
}

// modulesDep renders modules.dep as depmod would for the given modules:
// each module followed by all the modules it needs, directly or not, in
// the order modprobe loads them from the end of the line backwards.
func modulesDep(modules []module) []byte {
	index := make(map[string]int, len(modules))
	for i, m := range modules {
		index[m.name] = i
	}
	var b strings.Builder
	for _, m := range modules {
		need := make(map[int]bool)
		var walk func(names []string)
		walk = func(names []string) {
			for _, n := range names {
				if i, ok := index[n]; ok && !need[i] {
					need[i] = true
					walk(modules[i].deps)
				}
			}
		}
		walk(m.deps)
		b.WriteString(m.rel + ":")
		for i := len(modules) - 1; i >= 0; i-- {
			if need[i] {
				b.WriteString(" " + modules[i].rel)
			}
		}
		b.WriteString("\n")
	}
	return []byte(b.String())
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
