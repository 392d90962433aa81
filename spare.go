package sbuml

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/sbuml/sbuml/image"
	"github.com/sbuml/sbuml/vmm"
)

// SparesDir returns the directory holding the scrapbook's spares (see
// StartSpares). Its name starts with a dot, so machine listings skip it.
func (s *Scrapbook) SparesDir() string { return filepath.Join(s.MachinesDir(), ".spares") }

// SpareOptions control StartSpares.
type SpareOptions struct {
	// Accel is kvm, tcg or auto (default), as for Checkout: a spare is
	// only used by checkouts that resolve to the same accelerator.
	Accel string
	// Progress receives a line per slow step (the accelerator probe).
	Progress io.Writer
}

// StartSpares starts n spares for checkouts of snapshot rev: QEMUs of
// the shape of rev's machine (see vmm.Shape), waiting for a device state,
// which a Checkout of any snapshot of that shape claims instead of
// starting QEMU, saving QEMU's start-up time. A spare holds rev's disks
// already: a checkout of rev (or of a snapshot with the same disks) has
// nothing to write but the RAM, and one of another snapshot writes its
// own disks over them. Spares run until claimed or stopped (StopSpares,
// HaltAll). Only snapshots in the store have a shape: an exported
// machine is always checked out cold.
func (s *Scrapbook) StartSpares(ctx context.Context, rev string, n int, opts SpareOptions) ([]vmm.SpareInfo, error) {
	release, err := s.holdObjects()
	if err != nil {
		return nil, fmt.Errorf("start spares: %w", err)
	}
	defer release()
	p, err := s.planCheckout(ctx, rev)
	if err != nil {
		return nil, fmt.Errorf("start spares for %w", err)
	}
	src, ok := p.src.(*storeSource)
	if !ok {
		return nil, fmt.Errorf("start spares for %s: an exported machine has no shape to keep spares for; commit it, or check it out without spares", rev)
	}
	cfg := p.cfg
	if cfg.Accel, err = s.spareAccel(ctx, opts); err != nil {
		return nil, fmt.Errorf("start spares for %s: %w", rev, err)
	}
	sh, err := spareShape(ctx, src, cfg)
	if err != nil {
		return nil, fmt.Errorf("start spares for %s: %w", rev, err)
	}
	cfg.Kernel, cfg.Initrd = bootFileNames(cfg)
	cfg.Disks = diskNames(cfg)
	prepare := func(dir string) (map[string]string, error) {
		if err := writeBootFiles(ctx, src, p.cfg, dir); err != nil {
			return nil, err
		}
		return writeDisks(ctx, src, p.cfg.Disks, dir)
	}
	var infos []vmm.SpareInfo
	for range n {
		info, err := vmm.StartSpare(ctx, s.SparesDir(), cfg, sh, prepare)
		if err != nil {
			return infos, err
		}
		infos = append(infos, *info)
	}
	return infos, nil
}

// spareAccel resolves the accelerator of spares as Checkout would,
// probing (once per host) if it must.
func (s *Scrapbook) spareAccel(ctx context.Context, opts SpareOptions) (string, error) {
	if a := cachedAccel(ctx, opts.Accel); a != "" {
		return a, nil
	}
	probe, err := s.probeImage(ctx, opts.Accel, &image.Image{}, opts.Progress)
	if err != nil {
		return "", err
	}
	return chooseAccel(ctx, opts.Accel, probe, opts.Progress, nil)
}

// cachedAccel resolves want (kvm, tcg, auto) without probing: "" if it
// would take a probe, or fail.
func cachedAccel(ctx context.Context, want string) string {
	if want == "tcg" {
		return "tcg"
	}
	if want != "kvm" && vmm.CheckKVM() != nil {
		return "tcg"
	}
	v, err := vmm.CachedAccel(ctx, AccelCachePath())
	if err != nil || v == nil || (want == "kvm" && v.Accel != "kvm") {
		return ""
	}
	return v.Accel
}

// spareShape returns the shape of the machine cfg of a snapshot in the
// store: its boot files are named by their streams, its disks sized.
func spareShape(ctx context.Context, src *storeSource, cfg vmm.Config) (vmm.Shape, error) {
	var boot string
	for _, f := range []string{cfg.Kernel, cfg.Initrd} {
		if f == "" {
			boot += "-,"
			continue
		}
		id, err := src.stream(f)
		if err != nil {
			return vmm.Shape{}, err
		}
		boot += id.String() + ","
	}
	sizes := make([]int64, len(cfg.Disks))
	for i, d := range cfg.Disks {
		var err error
		if sizes[i], err = src.size(ctx, d); err != nil {
			return vmm.Shape{}, err
		}
	}
	cfg.Disks = diskNames(cfg)
	return vmm.ShapeOf(cfg, sizes, boot), nil
}

// diskNames returns the names of cfg's disks in a machine directory, as
// the materializer lays them out.
func diskNames(cfg vmm.Config) []string {
	names := make([]string, len(cfg.Disks))
	for i, d := range cfg.Disks {
		names[i] = path.Base(d)
	}
	return names
}

// writeDisks writes the snapshot's disks (paths in it) into a spare's
// directory, at the names a machine directory gives them, and returns
// the stream each name holds: a checkout of a snapshot with the same
// disk skips writing it, another one writes its own over it.
func writeDisks(ctx context.Context, src *storeSource, disks []string, dir string) (map[string]string, error) {
	contents := map[string]string{}
	for _, d := range disks {
		id, err := src.stream(d)
		if err != nil {
			return nil, err
		}
		f, err := os.OpenFile(filepath.Join(dir, path.Base(d)), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return nil, err
		}
		err = src.extractInto(ctx, d, f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("write %s: %w", d, err)
		}
		contents[path.Base(d)] = id.String()
	}
	return contents, nil
}

// bootFileNames returns the names of cfg's kernel and initrd in a
// machine directory, as the materializer lays them out.
func bootFileNames(cfg vmm.Config) (kernel, initrd string) {
	if cfg.Kernel != "" {
		kernel = machineKernel
	}
	if cfg.Initrd != "" {
		initrd = machineInitrd
	}
	return kernel, initrd
}

// writeBootFiles writes the kernel and initrd of the snapshot's machine
// cfg into dir, where a spare's QEMU reads them as it starts.
func writeBootFiles(ctx context.Context, src machineSource, cfg vmm.Config, dir string) error {
	kernel, initrd := bootFileNames(cfg)
	for _, f := range []struct{ from, to string }{{cfg.Kernel, kernel}, {cfg.Initrd, initrd}} {
		if f.from == "" {
			continue
		}
		out, err := os.OpenFile(filepath.Join(dir, f.to), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		err = src.extractInto(ctx, f.from, out)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", f.from, err)
		}
	}
	return nil
}

// claimSpare takes a spare of the shape of the machine cfg being checked
// out of p into dir, and says which of the snapshot's disks (paths in
// it) the spare holds already. It returns nil for a snapshot not in the
// store, RAM kept in the machine directory (a spare's is on tmpfs), an
// accelerator not yet probed, or no spare waiting. It never fails:
// without a spare, the checkout starts QEMU itself.
func (s *Scrapbook) claimSpare(ctx context.Context, p *checkoutPlan, dir string, cfg vmm.Config, opts CheckoutOptions) (*vmm.Machine, func(string) bool) {
	src, ok := p.src.(*storeSource)
	if !ok || opts.RAMInDir {
		return nil, nil
	}
	if cfg.Accel = cachedAccel(ctx, opts.Accel); cfg.Accel == "" {
		return nil, nil
	}
	sh, err := spareShape(ctx, src, cfg)
	if err != nil {
		return nil, nil
	}
	m, info, err := vmm.ClaimSpare(ctx, s.SparesDir(), sh.Key(), dir)
	if err != nil {
		return nil, nil
	}
	has := func(from string) bool {
		id, err := src.stream(from)
		return err == nil && info.Contents[path.Base(from)] == id.String()
	}
	return m, has
}

// Spares lists the scrapbook's spares, oldest first.
func (s *Scrapbook) Spares() ([]vmm.SpareInfo, error) {
	return vmm.Spares(s.SparesDir())
}

// StopSpares stops the spares of the shape key, or all of them for key
// "" (and what is left of spares whose start was interrupted more than
// a minute ago), and returns the directories of those it stopped.
// Spares being claimed are left alone.
func (s *Scrapbook) StopSpares(ctx context.Context, key string) ([]string, error) {
	infos, err := s.Spares()
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, in := range infos {
		if key == "" || in.Key == key {
			dirs = append(dirs, in.Dir)
		}
	}
	if key == "" {
		half, err := vmm.HalfMadeSpares(s.SparesDir(), time.Minute)
		if err != nil {
			return nil, err
		}
		dirs = append(dirs, half...)
	}
	var stopped []string
	var errs []error
	for _, dir := range dirs {
		if err := vmm.StopSpare(ctx, dir); err != nil {
			if !errors.Is(err, vmm.ErrBusy) {
				errs = append(errs, err)
			}
			continue
		}
		stopped = append(stopped, dir)
	}
	return stopped, errors.Join(errs...)
}
