package sbuml

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/sbuml/sbuml/fstree"
	"github.com/sbuml/sbuml/image"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
	"github.com/sbuml/sbuml/scrapbook"
	"github.com/sbuml/sbuml/stream"
)

// DefaultImage is the base image machines boot when none is named.
const DefaultImage = "tiny"

// imageRef returns the ref of a base image: refs/images/NAME.
func imageRef(name string) (string, error) {
	if err := refs.ValidateShortName(name); err != nil {
		return "", fmt.Errorf("image name: %w", err)
	}
	return "refs/images/" + name, nil
}

// ImageInfo describes a base image stored in the scrapbook.
type ImageInfo struct {
	Name string     `json:"name"`
	ID   objects.ID `json:"id"`
	Time time.Time  `json:"time"`
	// Boot is image.BootKernel or image.BootBIOS.
	Boot          string `json:"boot"`
	KernelVersion string `json:"kernel_version,omitempty"`
	// Net, SSH and Agent are the image's abilities (see image.Image).
	Net          bool   `json:"net,omitempty"`
	SSH          bool   `json:"ssh,omitempty"`
	Agent        bool   `json:"agent,omitempty"`
	LogicalBytes uint64 `json:"logical_bytes"`
}

// Labels of image snapshots.
const (
	imageKindLabel      = "kind"      // "image"
	imageKernelLabel    = "kernel"    // the kernel release, for kernel-boot images
	imageBootLabel      = "boot"      // image.BootKernel or image.BootBIOS
	imageAbilitiesLabel = "abilities" // "net,ssh,agent", those the image has
)

// imageLabels returns the labels of an image snapshot.
func imageLabels(img *image.Image) map[string]string {
	var abilities []string
	for _, a := range []struct {
		name string
		has  bool
	}{{"net", img.Net}, {"ssh", img.SSH}, {"agent", img.Agent}} {
		if a.has {
			abilities = append(abilities, a.name)
		}
	}
	labels := map[string]string{imageKindLabel: "image", imageBootLabel: img.Boot}
	if img.KernelVersion != "" {
		labels[imageKernelLabel] = img.KernelVersion
	}
	if len(abilities) > 0 {
		labels[imageAbilitiesLabel] = strings.Join(abilities, ",")
	}
	return labels
}

// imageInfo describes the image snapshot sn, from its labels. Images
// stored before boot kinds existed have no boot label and boot by kernel.
func imageInfo(name string, id objects.ID, sn *objects.Snapshot, size uint64) ImageInfo {
	in := ImageInfo{Name: name, ID: id, Time: sn.Time, Boot: sn.Labels[imageBootLabel],
		KernelVersion: sn.Labels[imageKernelLabel], LogicalBytes: size}
	if in.Boot == "" {
		in.Boot = image.BootKernel
	}
	for _, a := range strings.Split(sn.Labels[imageAbilitiesLabel], ",") {
		switch a {
		case "net":
			in.Net = true
		case "ssh":
			in.SSH = true
		case "agent":
			in.Agent = true
		}
	}
	return in
}

// Images lists the base images in the scrapbook.
func (s *Scrapbook) Images(ctx context.Context) ([]ImageInfo, error) {
	all, err := s.Refs.List("refs/images/")
	if err != nil {
		return nil, err
	}
	out := []ImageInfo{}
	for _, r := range all {
		sn, err := objects.LoadSnapshot(ctx, s.Objects, r.ID)
		if err != nil {
			return nil, err
		}
		t, err := objects.LoadTree(ctx, s.Objects, sn.Tree)
		if err != nil {
			return nil, err
		}
		out = append(out, imageInfo(strings.TrimPrefix(r.Name, "refs/images/"), r.ID, sn, t.Size()))
	}
	return out, nil
}

// Image recipes: what BuildImage builds.
const (
	// RecipeTiny is the default image: the Debian cloud kernel, a busybox
	// initramfs and a small ext4 disk (image.Build).
	RecipeTiny = "tiny"
	// RecipeDebian is Debian with systemd, DHCP networking and ssh
	// (image.BuildDebian); it needs root to build.
	RecipeDebian = "debian"
)

// ImageOptions are passed to BuildImage.
type ImageOptions struct {
	// Recipe is RecipeTiny (the default) or RecipeDebian.
	Recipe string
	// KernelDeb is a linux-image .deb to use instead of downloading one
	// (tiny).
	KernelDeb string
	// BusyboxDeb is a busybox-static .deb to use instead of downloading
	// one (tiny).
	BusyboxDeb string
	// Mirror is the Debian archive to install from (debian; default: the
	// host's, see image.HostMirror).
	Mirror string
	// DiskSize is the root disk size (default 256 MiB for tiny, 2 GiB for
	// debian).
	DiskSize int64
	// Progress receives a line per build step.
	Progress io.Writer
}

// BuildImage builds a guest image by a recipe and stores it in the
// scrapbook as refs/images/NAME: a snapshot whose tree holds the image
// files (kernel, initrd, disk) and config.json, so images dedupe and
// travel like any snapshot. The debian recipe lets root log in by ssh
// with the scrapbook's key (SSHKey).
func (s *Scrapbook) BuildImage(ctx context.Context, name string, opts ImageOptions) (*Result, error) {
	if _, err := imageRef(name); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(s.Dir, ".image-build-")
	if err != nil {
		return nil, fmt.Errorf("build image: %w", err)
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "image")
	if opts.Recipe != "" && opts.Recipe != RecipeTiny && opts.Recipe != RecipeDebian {
		return nil, fmt.Errorf("build image: no recipe %q (want %s or %s)", opts.Recipe, RecipeTiny, RecipeDebian)
	}
	agent, err := GuestAgentPath()
	if err != nil {
		return nil, fmt.Errorf("build image: %w", err)
	}
	switch opts.Recipe {
	case "", RecipeTiny:
		_, err = image.Build(ctx, image.Options{Dir: dir, KernelDeb: opts.KernelDeb, BusyboxDeb: opts.BusyboxDeb, DiskSize: opts.DiskSize, Agent: agent, Progress: opts.Progress})
	case RecipeDebian:
		err = s.buildDebian(ctx, dir, agent, opts)
	default:
		return nil, fmt.Errorf("build image: no recipe %q (want %s or %s)", opts.Recipe, RecipeTiny, RecipeDebian)
	}
	if err != nil {
		return nil, err
	}
	return s.AddImage(ctx, name, dir)
}

// buildDebian builds the Debian image into dir, with the scrapbook's ssh
// key as root's authorized key.
func (s *Scrapbook) buildDebian(ctx context.Context, dir, agent string, opts ImageOptions) error {
	_, pub, err := s.SSHKey()
	if err != nil {
		return fmt.Errorf("build debian image: %w", err)
	}
	_, err = image.BuildDebian(ctx, image.DebianOptions{Dir: dir, Mirror: opts.Mirror, AuthorizedKeys: []string{pub},
		DiskSize: opts.DiskSize, Agent: agent, Progress: opts.Progress})
	return err
}

// GuestAgentEnv names the environment variable that gives the sbuml-guest
// binary images get.
const GuestAgentEnv = "SBUML_GUEST"

// GuestAgentPath returns the sbuml-guest binary that every image sbuml
// builds carries: $SBUML_GUEST, else sbuml-guest next to this executable
// (make build puts both in bin/), else the one in PATH.
func GuestAgentPath() (string, error) {
	if p := os.Getenv(GuestAgentEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("the agent %s=%s: %w", GuestAgentEnv, p, err)
		}
		return p, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "sbuml-guest")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	if p, err := exec.LookPath("sbuml-guest"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("no sbuml-guest (the in-guest agent) next to this program or in PATH: 'make build' puts it in bin/ beside sbuml, or set %s", GuestAgentEnv)
}

// AddImage stores an image directory written by package image (kernel,
// initrd, disk, config.json, or a BIOS disk and config.json) as base
// image NAME.
func (s *Scrapbook) AddImage(ctx context.Context, name, dir string) (*Result, error) {
	return s.addImage(ctx, name, dir, nil)
}

// addImage stores an image directory as base image NAME, calling
// onProgress while it stores data.
func (s *Scrapbook) addImage(ctx context.Context, name, dir string, onProgress func(StoreProgress)) (*Result, error) {
	ref, err := imageRef(name)
	if err != nil {
		return nil, err
	}
	img, err := image.Load(dir)
	if err != nil {
		return nil, err
	}
	msg := "image " + name + ": kernel " + img.KernelVersion
	if img.Boot == image.BootBIOS {
		msg = "image " + name + ": a disk that boots by BIOS"
	}
	return s.importTo(ctx, dir, ref, imageParams, SnapshotOptions{Message: msg, Labels: imageLabels(img), OnProgress: onProgress})
}

// Image returns the base image called name, ready to boot from a cache
// directory in the scrapbook. The default image is built on first use.
func (s *Scrapbook) Image(ctx context.Context, name string, progress io.Writer) (objects.ID, *image.Image, error) {
	if name == "" {
		name = DefaultImage
	}
	ref, err := imageRef(name)
	if err != nil {
		return objects.Zero, nil, err
	}
	id, err := s.Refs.Get(ref)
	if errors.Is(err, refs.ErrNotFound) {
		if name != DefaultImage {
			return objects.Zero, nil, fmt.Errorf("no base image %q (see 'sbuml image ls'; 'sbuml image build [tiny|debian] --name %s' or 'sbuml image import %s DISK' makes one)", name, name, name)
		}
		if progress != nil {
			fmt.Fprintf(progress, "building the default image %q (first use)\n", name)
		}
		res, berr := s.BuildImage(ctx, name, ImageOptions{Progress: progress})
		if berr != nil {
			return objects.Zero, nil, berr
		}
		id, err = res.ID, nil
	}
	if err != nil {
		return objects.Zero, nil, err
	}
	img, err := s.materializeImage(ctx, id)
	return id, img, err
}

// materializeImage exports image snapshot id once into
// SCRAPBOOK/images/ID and loads it.
func (s *Scrapbook) materializeImage(ctx context.Context, id objects.ID) (*image.Image, error) {
	dir := filepath.Join(s.Dir, scrapbook.ImagesDir, id.String())
	if img, err := image.Load(dir); err == nil {
		return img, nil
	}
	os.RemoveAll(dir)
	tmp := dir + ".tmp-" + fmt.Sprint(os.Getpid())
	os.RemoveAll(tmp)
	if _, err := s.Export(ctx, id.String(), tmp); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("unpack image %s: %w", id.Short(), err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		if img, lerr := image.Load(dir); lerr == nil { // another process won the race
			return img, nil
		}
		return nil, fmt.Errorf("unpack image %s: %w", id.Short(), err)
	}
	return image.Load(dir)
}

// imageDisk is the name of a base image's root disk in its directory and
// snapshot tree.
const imageDisk = "disk"

// imageParams chooses how the files of a base image are cut: its disk
// like the disks of machine snapshots, so that a machine's first commit
// finds the image's blocks already stored; everything else like files.
func imageParams(rel string) stream.Params {
	if rel == imageDisk {
		return DiskParams
	}
	return stream.Files
}

// filesParams cuts every file of an imported directory like files.
func filesParams(string) stream.Params { return stream.Files }

// importTo stores dir as a snapshot on the full ref name, each file cut
// with paramsFor's choice for its path in dir.
func (s *Scrapbook) importTo(ctx context.Context, dir, ref string, paramsFor func(rel string) stream.Params, opts SnapshotOptions) (*Result, error) {
	start := time.Now()
	release, err := s.lockObjects()
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", dir, err)
	}
	defer release()
	// A ref another writer is moving is about to change: wait, then read it.
	if err := s.Refs.WaitUnlocked(ref); err != nil {
		return nil, fmt.Errorf("import %s: %w", dir, err)
	}
	parent, err := s.tip(ref)
	if err != nil {
		return nil, err
	}
	saver := stream.NewSaver(s.Objects, 0)
	defer saver.Close()
	var tree objects.ID
	var size uint64
	var total int64
	if opts.OnProgress != nil {
		total = treeBytes(dir)
	}
	err = withProgress(saver, opts.OnProgress, total, func() error {
		tree, size, err = fstree.ImportWith(ctx, saver, dir, paramsFor)
		return err
	})
	if err != nil {
		return nil, err
	}
	id, err := s.record(ctx, saver, ref, parent, parent, tree, opts)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", dir, err)
	}
	return &Result{ID: id, Branch: ref, Parent: parent, LogicalBytes: size, Stats: saver.Stats(), Duration: time.Since(start)}, nil
}

// ImageSource is a system to import as a base image: a disk that boots
// by BIOS with its own boot loader (Disk alone), or a kernel, an initrd
// and a root disk.
type ImageSource struct {
	// Disk is a raw disk, taken as it is, or a qcow2 disk, converted to
	// raw with qemu-img.
	Disk string
	// Kernel is a Linux bzImage; empty for a disk that boots by BIOS.
	Kernel string
	// Initrd is the kernel's initramfs, if it needs one.
	Initrd string
	// Cmdline is the kernel command line (default
	// image.DefaultImportCmdline).
	Cmdline string
	// ReadyMarker is a line the guest prints on its serial console once
	// it is up; empty if it prints none (a started QEMU counts as ready).
	ReadyMarker string
}

// ImportImageOptions tune ImportImage.
type ImportImageOptions struct {
	// Progress receives a line per slow step (converting a qcow2 disk).
	Progress io.Writer
	// OnProgress, if set, is called about five times a second while the
	// image is stored.
	OnProgress func(StoreProgress)
}

// ImportImage stores a system the user brings as base image NAME
// (refs/images/NAME), like a built one: a snapshot of config.json and
// the files, so that importing the same disk again stores almost
// nothing new.
func (s *Scrapbook) ImportImage(ctx context.Context, name string, src ImageSource, opts ImportImageOptions) (*Result, error) {
	if _, err := imageRef(name); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(s.Dir, ".image-import-")
	if err != nil {
		return nil, fmt.Errorf("import image: %w", err)
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "image")
	_, err = image.Import(ctx, image.ImportOptions{Dir: dir, Disk: src.Disk, Kernel: src.Kernel, Initrd: src.Initrd,
		Cmdline: src.Cmdline, ReadyMarker: src.ReadyMarker, Progress: opts.Progress})
	if err != nil {
		return nil, err
	}
	return s.addImage(ctx, name, dir, opts.OnProgress)
}

// RemoveImage deletes base image NAME and returns the snapshot it named.
// Its data stays in the scrapbook until gc removes what nothing else
// needs; machines booted from it keep their own copies of its files.
func (s *Scrapbook) RemoveImage(ctx context.Context, name string) (objects.ID, error) {
	ref, err := imageRef(name)
	if err != nil {
		return objects.Zero, err
	}
	id, err := s.Refs.Get(ref)
	if errors.Is(err, refs.ErrNotFound) {
		return objects.Zero, fmt.Errorf("no base image %q (see 'sbuml image ls')", name)
	}
	if err != nil {
		return objects.Zero, err
	}
	if err := s.Refs.Update(ref, id, objects.Zero, "image rm "+name); err != nil {
		return objects.Zero, fmt.Errorf("remove image %s: %w", name, err)
	}
	s.forgetUnpacked(id)
	return id, nil
}

// forgetUnpacked removes the unpacked copy of image snapshot id
// (SCRAPBOOK/images/ID) unless another image names the same snapshot. It
// is only a cache: failing to remove it costs disk space, nothing else.
func (s *Scrapbook) forgetUnpacked(id objects.ID) {
	all, err := s.Refs.List("refs/images/")
	if err != nil {
		return
	}
	for _, r := range all {
		if r.ID == id {
			return
		}
	}
	os.RemoveAll(filepath.Join(s.Dir, scrapbook.ImagesDir, id.String()))
}

// ExportBootableDisk writes base image NAME, which must boot by kernel,
// to out as a raw disk that boots by BIOS with its own boot loader
// (image.MakeBootableDisk): to run it elsewhere, or to import it again
// as an image that boots by BIOS.
func (s *Scrapbook) ExportBootableDisk(ctx context.Context, name, out string) error {
	_, img, err := s.Image(ctx, name, nil)
	if err != nil {
		return err
	}
	if img.Boot != image.BootKernel {
		return fmt.Errorf("export image %s: it boots by BIOS already; its disk is in %s", name, img.Disk)
	}
	return image.MakeBootableDisk(ctx, img, out, image.BootDiskOptions{})
}
