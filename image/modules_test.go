package image

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// fakeModule returns a minimal ELF relocatable object whose .modinfo
// section holds the given "key=value" fields, enough for moduleDepends.
func fakeModule(fields ...string) []byte {
	modinfo := []byte(strings.Join(fields, "\x00") + "\x00")
	shstrtab := []byte("\x00.modinfo\x00.shstrtab\x00")
	const ehsize, shentsize = 64, 64
	modinfoOff := uint64(ehsize)
	shstrOff := modinfoOff + uint64(len(modinfo))
	shoff := (shstrOff + uint64(len(shstrtab)) + 7) &^ 7

	var b bytes.Buffer
	le := binary.LittleEndian
	hdr := elf.Header64{
		Type: uint16(elf.ET_REL), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Shoff: shoff, Ehsize: ehsize, Shentsize: shentsize, Shnum: 3, Shstrndx: 2,
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	binary.Write(&b, le, hdr)
	b.Write(modinfo)
	b.Write(shstrtab)
	b.Write(make([]byte, shoff-uint64(b.Len())))
	sections := []elf.Section64{
		{},
		{Name: 1, Type: uint32(elf.SHT_PROGBITS), Off: modinfoOff, Size: uint64(len(modinfo)), Addralign: 1},
		{Name: 10, Type: uint32(elf.SHT_STRTAB), Off: shstrOff, Size: uint64(len(shstrtab)), Addralign: 1},
	}
	binary.Write(&b, le, sections)
	return b.Bytes()
}

// fakeKernel writes an unpacked kernel package into a temporary directory:
// boot/vmlinuz-<version>, modules.builtin and, for each entry of modules,
// a fake module at that path under kernel/ with the given modinfo fields,
// compressed according to its suffix.
func fakeKernel(t *testing.T, builtin []string, modules map[string][]string) string {
	t.Helper()
	root := t.TempDir()
	const version = "6.1.0-test"
	write := func(rel string, data []byte) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("boot/vmlinuz-"+version, []byte("kernel"))
	write(filepath.Join("lib/modules", version, "modules.builtin"), []byte(strings.Join(builtin, "\n")+"\n"))
	for file, fields := range modules {
		obj := fakeModule(fields...)
		switch {
		case strings.HasSuffix(file, ".gz"):
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			zw.Write(obj)
			zw.Close()
			obj = buf.Bytes()
		case strings.HasSuffix(file, ".zst"):
			zw, _ := zstd.NewWriter(nil)
			obj = zw.EncodeAll(obj, nil)
		case strings.HasSuffix(file, ".xz"):
			cmd := exec.Command("xz", "--compress", "--stdout")
			cmd.Stdin = bytes.NewReader(obj)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("xz: %v", err)
			}
			obj = out
		}
		write(filepath.Join("lib/modules", version, "kernel", file), obj)
	}
	return root
}

func TestResolveModules(t *testing.T) {
	root := fakeKernel(t,
		[]string{"kernel/fs/ext4/ext4.ko", "kernel/lib/crc32c.ko"},
		map[string][]string{
			"drivers/virtio/virtio_ring.ko":              {"name=virtio_ring", "depends="},
			"drivers/virtio/virtio.ko.gz":                {"name=virtio", "depends=virtio_ring"},
			"drivers/virtio/virtio_pci.ko.zst":           {"name=virtio_pci", "depends=virtio_ring,virtio,virtio_pci_modern_dev"},
			"drivers/virtio/virtio_pci_modern_dev.ko.xz": {"name=virtio_pci_modern_dev", "depends="},
			"drivers/block/virtio_blk.ko":                {"name=virtio_blk", "depends=virtio,virtio_ring", "softdep=pre: crc32c blk_helper post: later"},
			"drivers/block/blk-helper.ko":                {"name=blk_helper", "depends="},
			"drivers/net/loop_a.ko":                      {"name=loop_a", "depends=loop_b"},
			"drivers/net/loop_b.ko":                      {"name=loop_b", "depends=loop_a"},
			"drivers/net/needs_missing.ko":               {"name=needs_missing", "depends=virtio,gone"},
			"drivers/net/later.ko":                       {"name=later", "depends="},
		})
	k, err := openKernelTree(root)
	if err != nil {
		t.Fatal(err)
	}
	if k.version != "6.1.0-test" {
		t.Errorf("version %q", k.version)
	}

	tests := []struct {
		names   []string
		want    []string // module paths in load order
		wantErr string
	}{
		{
			names: []string{"virtio_pci", "virtio-blk", "ext4"},
			want: []string{
				"kernel/drivers/virtio/virtio_ring.ko",
				"kernel/drivers/virtio/virtio.ko",
				"kernel/drivers/virtio/virtio_pci_modern_dev.ko",
				"kernel/drivers/virtio/virtio_pci.ko",
				"kernel/drivers/block/blk-helper.ko",
				"kernel/drivers/block/virtio_blk.ko",
			},
		},
		{names: []string{"ext4"}, want: nil},
		{names: []string{"nosuch"}, wantErr: "module nosuch not found in kernel 6.1.0-test"},
		{names: []string{"needs_missing"}, wantErr: "module gone needed by needs_missing not found"},
		{names: []string{"loop_a"}, wantErr: "cycle: loop_a -> loop_b -> loop_a"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.names, ","), func(t *testing.T) {
			mods, err := k.resolve(context.Background(), tt.names)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range mods {
				got = append(got, m.rel)
				if _, err := elf.NewFile(bytes.NewReader(m.data)); err != nil {
					t.Errorf("%s is not decompressed to ELF: %v", m.rel, err)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("load order\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestModulesDep(t *testing.T) {
	mods := []module{
		{name: "virtio_ring", rel: "kernel/virtio_ring.ko"},
		{name: "virtio", rel: "kernel/virtio.ko", deps: []string{"virtio_ring"}},
		{name: "failover", rel: "kernel/failover.ko"},
		{name: "net_failover", rel: "kernel/net_failover.ko", deps: []string{"failover"}},
		{name: "virtio_net", rel: "kernel/virtio_net.ko", deps: []string{"net_failover", "virtio", "virtio_ring"}},
	}
	want := `kernel/virtio_ring.ko:
kernel/virtio.ko: kernel/virtio_ring.ko
kernel/failover.ko:
kernel/net_failover.ko: kernel/failover.ko
kernel/virtio_net.ko: kernel/net_failover.ko kernel/failover.ko kernel/virtio.ko kernel/virtio_ring.ko
`
	if got := string(modulesDep(mods)); got != want {
		t.Errorf("modules.dep:\n%s\nwant:\n%s", got, want)
	}
}

func TestOpenKernelTreeErrors(t *testing.T) {
	empty := t.TempDir()
	if _, err := openKernelTree(empty); err == nil || !strings.Contains(err.Error(), "not a metapackage") {
		t.Errorf("package without modules: got %v", err)
	}
	noKernel := t.TempDir()
	os.MkdirAll(filepath.Join(noKernel, "lib/modules/6.1.0-x"), 0o755)
	if _, err := openKernelTree(noKernel); err == nil || !strings.Contains(err.Error(), "no kernel for modules 6.1.0-x") {
		t.Errorf("package without vmlinuz: got %v", err)
	}
}

func TestModuleDependsNotELF(t *testing.T) {
	if _, err := moduleDepends([]byte("not an object")); err == nil {
		t.Error("moduleDepends accepted a non-ELF file")
	}
	if _, err := moduleDepends(fakeModule()); err != nil {
		t.Errorf("module with empty .modinfo: %v", err)
	}
}
