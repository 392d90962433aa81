package image

import (
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbuml/sbuml/image/cpio"
)

// fakeInitramfs writes an initramfs from a fake kernel and busybox with
// the given extra files and returns its entries and contents.
func fakeInitramfs(t *testing.T, extra []File) (map[string]*cpio.Header, map[string]string, error) {
	t.Helper()
	root := fakeKernel(t, nil, map[string][]string{
		"drivers/virtio/virtio.ko":    {"name=virtio", "depends="},
		"drivers/block/virtio_blk.ko": {"name=virtio_blk", "depends=virtio"},
	})
	k, err := openKernelTree(root)
	if err != nil {
		t.Fatal(err)
	}
	mods, err := k.resolve(context.Background(), []string{"virtio_blk"})
	if err != nil {
		t.Fatal(err)
	}
	busybox := filepath.Join(t.TempDir(), "busybox")
	if err := os.WriteFile(busybox, []byte("busybox binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "initrd")
	size, err := writeInitramfs(context.Background(), dst, k, mods, busybox, extra)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fi, _ := f.Stat(); fi.Size() != size {
		t.Errorf("writeInitramfs reported %d bytes, file has %d", size, fi.Size())
	}
	hdrs := make(map[string]*cpio.Header)
	data := make(map[string]string)
	r := cpio.NewReader(f)
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		hdrs[h.Name], data[h.Name] = h, string(b)
	}
	return hdrs, data, nil
}

func TestInitramfsLayout(t *testing.T) {
	hdrs, data, err := fakeInitramfs(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"bin/busybox":       "busybox binary",
		"etc/sbuml/modules": "kernel/drivers/virtio/virtio.ko\nkernel/drivers/block/virtio_blk.ko\n",
		"lib/modules/6.1.0-test/modules.dep": "kernel/drivers/virtio/virtio.ko:\n" +
			"kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko\n",
		"lib/modules/6.1.0-test/modules.builtin": "\n",
		"etc/hostname":                           "sbuml\n",
	}
	for name, content := range want {
		if data[name] != content {
			t.Errorf("%s = %q, want %q", name, data[name], content)
		}
	}
	for _, dir := range append(initramfsDirs, "lib/modules/6.1.0-test/kernel/drivers/virtio") {
		if h := hdrs[dir]; h == nil || !h.Mode.IsDir() {
			t.Errorf("directory %s missing", dir)
		}
	}
	if h := hdrs["init"]; h == nil || h.Mode != 0o755 {
		t.Errorf("init: %+v", h)
	}
}

func TestInitramfsExtraFiles(t *testing.T) {
	hdrs, data, err := fakeInitramfs(t, []File{
		{Path: "usr/bin/sbuml-guest", Mode: 0o755, Data: []byte("helper")},
		{Path: "etc/sbuml/rc.d/50-guest", Mode: fs.ModeSetuid | 0o755, Data: []byte("#!/bin/sh\n")},
		{Path: "etc/hostname", Mode: 0o644, Data: []byte("other\n")},
		{Path: "opt/new/dir/file", Mode: 0o600, Data: []byte("x")},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, data string
		mode       fs.FileMode
	}{
		{"usr/bin/sbuml-guest", "helper", 0o755},
		{"etc/sbuml/rc.d/50-guest", "#!/bin/sh\n", 0o755},
		{"etc/hostname", "other\n", 0o644},
		{"opt/new/dir/file", "x", 0o600},
	}
	for _, tt := range tests {
		if h := hdrs[tt.name]; h == nil || h.Mode != tt.mode || data[tt.name] != tt.data {
			t.Errorf("%s: header %+v data %q, want mode %v data %q", tt.name, h, data[tt.name], tt.mode, tt.data)
		}
	}
	if h := hdrs["opt/new/dir"]; h == nil || !h.Mode.IsDir() {
		t.Error("parent directories of an extra file are missing")
	}

	_, _, err = fakeInitramfs(t, []File{{Path: "etc/sbuml", Mode: 0o644}})
	if err == nil || !strings.Contains(err.Error(), "extra file etc/sbuml would replace a directory") {
		t.Errorf("replacing a directory: got %v", err)
	}
}

func TestAgentFiles(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "sbuml-guest")
	if err := os.WriteFile(bin, []byte("agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	files, err := agentFiles(bin)
	if err != nil {
		t.Fatal(err)
	}
	hdrs, data, err := fakeInitramfs(t, files)
	if err != nil {
		t.Fatal(err)
	}
	if h := hdrs[AgentPath]; h == nil || h.Mode != 0o755 || data[AgentPath] != "agent" {
		t.Errorf("%s: %+v %q", AgentPath, h, data[AgentPath])
	}
	script := data["etc/sbuml/rc.d/50-sbuml-guest"]
	if h := hdrs["etc/sbuml/rc.d/50-sbuml-guest"]; h == nil || h.Mode != 0o755 || !strings.Contains(script, "/usr/bin/sbuml-guest daemon") {
		t.Errorf("boot script: %+v %q", h, script)
	}
}

func TestFileCheck(t *testing.T) {
	for _, p := range []string{"usr/bin/x", "init", "a/b/c"} {
		if err := (File{Path: p}).check(); err != nil {
			t.Errorf("%q rejected: %v", p, err)
		}
	}
	for _, p := range []string{"", ".", "/usr/bin/x", "../x", "..", "a/../b", "a//b", "a/"} {
		if err := (File{Path: p}).check(); err == nil {
			t.Errorf("%q accepted", p)
		}
	}
}
