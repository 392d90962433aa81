package sbuml

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sbuml/sbuml/fstree"
	"github.com/sbuml/sbuml/image"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
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
	Name          string     `json:"name"`
	ID            objects.ID `json:"id"`
	Time          time.Time  `json:"time"`
	KernelVersion string     `json:"kernel_version,omitempty"`
	LogicalBytes  uint64     `json:"logical_bytes"`
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
		out = append(out, ImageInfo{Name: strings.TrimPrefix(r.Name, "refs/images/"), ID: r.ID, Time: sn.Time,
			KernelVersion: sn.Labels["kernel"], LogicalBytes: t.Size()})
	}
	return out, nil
}

// ImageOptions are passed to BuildImage.
type ImageOptions struct {
	// KernelDeb is a linux-image .deb to use instead of downloading one.
	KernelDeb string
	// BusyboxDeb is a busybox-static .deb to use instead of downloading one.
	BusyboxDeb string
	// DiskSize is the root disk size (default 256 MiB).
	DiskSize int64
	// Progress receives a line per build step.
	Progress io.Writer
}

// BuildImage builds the default guest image from Debian packages and
// stores it in the scrapbook as refs/images/NAME: a snapshot whose tree
// holds kernel, initrd, disk and config.json, so images dedupe and travel
// like any snapshot.
func (s *Scrapbook) BuildImage(ctx context.Context, name string, opts ImageOptions) (*Result, error) {
	if _, err := imageRef(name); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(s.Dir, ".image-build-")
	if err != nil {
		return nil, fmt.Errorf("build image: %w", err)
	}
	defer os.RemoveAll(tmp)
	img, err := image.Build(ctx, image.Options{Dir: filepath.Join(tmp, "image"), KernelDeb: opts.KernelDeb, BusyboxDeb: opts.BusyboxDeb, DiskSize: opts.DiskSize, Progress: opts.Progress})
	if err != nil {
		return nil, err
	}
	return s.AddImage(ctx, name, filepath.Dir(img.Kernel))
}

// AddImage stores an image directory written by image.Build (kernel,
// initrd, disk, config.json) as base image NAME.
func (s *Scrapbook) AddImage(ctx context.Context, name, dir string) (*Result, error) {
	ref, err := imageRef(name)
	if err != nil {
		return nil, err
	}
	img, err := image.Load(dir)
	if err != nil {
		return nil, err
	}
	return s.importTo(ctx, dir, ref, SnapshotOptions{
		Message: "image " + name + ": kernel " + img.KernelVersion,
		Labels:  map[string]string{"kind": "image", "kernel": img.KernelVersion},
	})
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
			return objects.Zero, nil, fmt.Errorf("no base image %q (see 'sbuml image ls'; 'sbuml image build --name %s' makes one)", name, name)
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
	dir := filepath.Join(s.Dir, "images", id.String())
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

// importTo stores dir as a snapshot on the full ref name.
func (s *Scrapbook) importTo(ctx context.Context, dir, ref string, opts SnapshotOptions) (*Result, error) {
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
	err = withProgress(saver, opts.OnProgress, func() error {
		tree, size, err = fstree.Import(ctx, saver, dir, stream.Files)
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
