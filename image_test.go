package sbuml_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/image"
	"github.com/sbuml/sbuml/internal/testimage"
	"github.com/sbuml/sbuml/objects"
)

// TestImportImage exports the default image as a disk that boots by
// BIOS, imports it back raw (twice) and as qcow2, boots it without a
// kernel and with a larger disk, then removes the images and checks that
// gc frees their data.
func TestImportImage(t *testing.T) {
	t.Parallel()
	s := guestScrapbook(t, 1)
	ctx := guestContext(t)
	raw := filepath.Join(t.TempDir(), "tiny.raw")
	if err := s.ExportBootableDisk(ctx, sbuml.DefaultImage, raw); err != nil {
		t.Fatal(err)
	}
	src := sbuml.ImageSource{Disk: raw, ReadyMarker: image.ReadyMarker}
	first, err := s.ImportImage(ctx, "bios", src, sbuml.ImportImageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The same disk again adds almost nothing: its chunks are stored.
	again, err := s.ImportImage(ctx, "bios-again", src, sbuml.ImportImageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data := again.Stats.LogicalBytes - again.Stats.HoleBytes
	if again.Stats.NewBytes*100 >= data {
		t.Errorf("importing the same disk again stored %d new bytes, want under 1%% of its %d bytes of data", again.Stats.NewBytes, data)
	}
	t.Logf("import of %d MiB (%d MiB of data): %d KiB new the first time, %d bytes the second",
		first.LogicalBytes>>20, data>>20, first.Stats.NewBytes>>10, again.Stats.NewBytes)

	// A qcow2 copy of the disk imports as the same image.
	qcow2 := filepath.Join(t.TempDir(), "tiny.qcow2")
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}
	fromQcow2, err := s.ImportImage(ctx, "bios-qcow2", sbuml.ImageSource{Disk: qcow2, ReadyMarker: image.ReadyMarker}, sbuml.ImportImageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if a, b := snapshotTree(t, s, first.ID), snapshotTree(t, s, fromQcow2.ID); a != b {
		t.Errorf("the qcow2 import's tree %s differs from the raw import's %s", b.Short(), a.Short())
	}
	checkImageList(t, s)

	fi, err := os.Stat(raw)
	if err != nil {
		t.Fatal(err)
	}
	grown := fi.Size()/(1<<20)*(1<<20) + 64<<20
	g := bootGuestWith(t, s, "bios-machine", sbuml.BootOptions{Base: "bios", Accel: guestAccel, Memory: 256 << 20, DiskSize: grown})
	if out := g.run("grep ' /mnt ' /proc/mounts; cat /proc/partitions"); !strings.Contains(out, image.BootDiskRoot+" /mnt ext4 rw") ||
		!strings.Contains(out, strings.TrimPrefix(image.BootDiskRoot, "/dev/")) {
		t.Errorf("machine booted by BIOS from the imported disk:\n%s", out)
	}
	checkBIOSMachineDir(t, g.dir(), grown)
	if err := s.Halt(ctx, "bios-machine"); err != nil {
		t.Fatal(err)
	}
	checkRemoveImages(t, s, "bios", "bios-again", "bios-qcow2")
}

// snapshotTree returns the tree a snapshot names.
func snapshotTree(t *testing.T, s *sbuml.Scrapbook, id objects.ID) objects.ID {
	t.Helper()
	sn, err := objects.LoadSnapshot(context.Background(), s.Objects, id)
	if err != nil {
		t.Fatal(err)
	}
	return sn.Tree
}

// checkImageList checks what Images says of the default image and an
// imported BIOS disk.
func checkImageList(t *testing.T, s *sbuml.Scrapbook) {
	t.Helper()
	imgs, err := s.Images(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]sbuml.ImageInfo{}
	for _, i := range imgs {
		byName[i.Name] = i
	}
	if i := byName[sbuml.DefaultImage]; i.Boot != image.BootKernel || i.KernelVersion == "" || !i.Net || i.SSH {
		t.Errorf("Images: %s is %+v", sbuml.DefaultImage, i)
	}
	if i := byName["bios"]; i.Boot != image.BootBIOS || i.KernelVersion != "" || i.Net || i.LogicalBytes == 0 {
		t.Errorf("Images: bios is %+v", i)
	}
}

// checkBIOSMachineDir checks the directory of a machine booted by BIOS:
// no kernel or initrd of its own, its disk grown as a file only.
func checkBIOSMachineDir(t *testing.T, dir string, diskSize int64) {
	t.Helper()
	for _, f := range []string{"kernel", "initrd"} {
		if _, err := os.Stat(filepath.Join(dir, f)); !os.IsNotExist(err) {
			t.Errorf("machine booted by BIOS has a %s file (%v)", f, err)
		}
	}
	disk := filepath.Join(dir, "disk.img")
	if fi, err := os.Stat(disk); err != nil || fi.Size() != diskSize {
		t.Errorf("disk of the machine: %v, %v; want %d bytes", fi, err, diskSize)
	}
	out, err := exec.Command("sfdisk", "--json", disk).Output()
	var table struct {
		PartitionTable struct {
			Partitions []struct{ Size int64 } `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err != nil || json.Unmarshal(out, &table) != nil || len(table.PartitionTable.Partitions) != 2 {
		t.Errorf("partition table of the machine's disk: %v\n%s", err, out)
	}
}

// checkRemoveImages removes the imported images and checks that gc then
// frees what only they held.
func checkRemoveImages(t *testing.T, s *sbuml.Scrapbook, names ...string) {
	t.Helper()
	ctx := context.Background()
	before, err := s.Du(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if _, err := s.RemoveImage(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.RemoveImage(ctx, names[0]); err == nil || !strings.Contains(err.Error(), "no base image") {
		t.Errorf("removing a removed image: %v", err)
	}
	rep, err := s.Gc(ctx, sbuml.GcOptions{})
	if err != nil {
		t.Fatal(err)
	}
	after, err := s.Du(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.RemovedBytes == 0 || after.StoredBytes >= before.StoredBytes {
		t.Errorf("gc after removing the images removed %d bytes; stored %d bytes before, %d after", rep.RemovedBytes, before.StoredBytes, after.StoredBytes)
	}
	t.Logf("gc after removing %d images freed %d KiB", len(names), (before.StoredBytes-after.StoredBytes)>>10)
	imgs, err := s.Images(ctx)
	if err != nil || len(imgs) != 1 || imgs[0].Name != sbuml.DefaultImage {
		t.Errorf("images after removing %v: %+v, %v", names, imgs, err)
	}
}

// TestSSHKey makes the scrapbook's key pair from several goroutines at
// once: all get the same pair, private key mode 0600.
func TestSSHKey(t *testing.T) {
	t.Parallel()
	s, err := sbuml.Init(filepath.Join(t.TempDir(), "scrapbook"))
	if err != nil {
		t.Fatal(err)
	}
	type pair struct{ priv, pub string }
	pairs := make([]pair, 4)
	var wg sync.WaitGroup
	for i := range pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			priv, pub, err := s.SSHKey()
			if err != nil {
				t.Error(err)
			}
			pairs[i] = pair{priv, pub}
		}()
	}
	wg.Wait()
	for _, p := range pairs[1:] {
		if p != pairs[0] {
			t.Errorf("SSHKey returned %+v and %+v", pairs[0], p)
		}
	}
	fi, err := os.Stat(pairs[0].priv)
	if err != nil || fi.Mode().Perm() != 0o600 || !strings.HasPrefix(pairs[0].pub, "ssh-ed25519 AAAA") {
		t.Errorf("key pair %+v: %v, %v; want an ed25519 pair, private key mode 0600", pairs[0], fi, err)
	}
	if want := filepath.Join(s.Dir, "ssh", "id_ed25519"); pairs[0].priv != want {
		t.Errorf("private key at %s, want %s", pairs[0].priv, want)
	}
}

func TestBuildImageUnknownRecipe(t *testing.T) {
	s, err := sbuml.Init(filepath.Join(t.TempDir(), "scrapbook"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.BuildImage(context.Background(), "x", sbuml.ImageOptions{Recipe: "gentoo"})
	if err == nil || !strings.Contains(err.Error(), `no recipe "gentoo" (want tiny or debian)`) {
		t.Errorf("BuildImage with an unknown recipe: %v", err)
	}
}

// TestImageCLI drives the image commands as a user would: export the
// default image as a bootable disk, import it back and import a kernel,
// list, remove, and the errors of each.
func TestImageCLI(t *testing.T) {
	t.Parallel()
	s := guestScrapbook(t, 0)
	tiny := testimage.Get(t)
	raw := filepath.Join(t.TempDir(), "tiny.raw")
	if out := mustCLI(t, s, "image", "export", sbuml.DefaultImage, "--raw", raw); !strings.Contains(out, "written to "+raw) || !strings.Contains(out, "boots by BIOS") {
		t.Errorf("sbuml image export printed %q", out)
	}
	var res sbuml.Result
	if err := json.Unmarshal([]byte(mustCLI(t, s, "image", "import", "b", raw, "--ready-marker", image.ReadyMarker, "--json")), &res); err != nil || res.Branch != "refs/images/b" {
		t.Errorf("sbuml image import --json: %+v, %v", res, err)
	}
	if out := mustCLI(t, s, "image", "import", "k", "--kernel", tiny.Kernel, "--initrd", tiny.Initrd, "--disk", tiny.Disk); !strings.HasPrefix(out, "image k: ") {
		t.Errorf("sbuml image import --kernel printed %q", out)
	}
	var imgs []sbuml.ImageInfo
	if err := json.Unmarshal([]byte(mustCLI(t, s, "image", "ls", "--json")), &imgs); err != nil || len(imgs) != 3 {
		t.Fatalf("sbuml image ls --json: %+v, %v", imgs, err)
	}
	for _, line := range strings.Split(strings.TrimSpace(mustCLI(t, s, "image", "ls")), "\n") {
		f := strings.Fields(line)
		want := map[string]string{"b": "bios - -", "k": "kernel " + tiny.KernelVersion + " -", sbuml.DefaultImage: "kernel " + tiny.KernelVersion + " net,agent"}[f[0]]
		if len(f) < 8 || strings.Join(f[4:7], " ") != want {
			t.Errorf("sbuml image ls line %q, want boot, kernel and abilities %q", line, want)
		}
	}

	errs := []struct {
		args []string
		want string
	}{
		{[]string{"image", "import", "x"}, "no disk"},
		{[]string{"image", "import", "x", raw, "--disk", raw}, "give the disk once"},
		{[]string{"image", "import", "x", raw, "--initrd", tiny.Initrd}, "needs a kernel"},
		{[]string{"image", "import", "x", "--kernel", tiny.Initrd, "--disk", raw}, "is not a Linux bzImage"},
		{[]string{"image", "build", "gentoo"}, `no recipe "gentoo"`},
		{[]string{"image", "export", sbuml.DefaultImage}, "no output file"},
		{[]string{"image", "export", "b", "--raw", raw + ".again"}, "boots by BIOS already"},
		{[]string{"image", "rm", "nope"}, `no base image "nope"`},
	}
	for _, e := range errs {
		requireCLIError(t, s, e.args, e.want)
	}
	if out := mustCLI(t, s, "image", "rm", "b", "k"); strings.Count(out, "removed image ") != 2 {
		t.Errorf("sbuml image rm b k printed %q", out)
	}
}
