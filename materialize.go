package sbuml

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sbuml/sbuml/stream"
	"github.com/sbuml/sbuml/vmm"
)

// fileKind says what a file of a machine snapshot is to the QEMU that
// runs it.
type fileKind int

const (
	bootFile fileKind = iota // kernel, initrd: QEMU reads them as it starts
	diskFile                 // QEMU opens it as it starts, reads it once the guest runs
	ramFile                  // QEMU maps it as it starts, reads it once the guest runs
)

// Filters of materializer.wait.
var (
	anyFile  = func(fileKind) bool { return true }
	notRAM   = func(k fileKind) bool { return k != ramFile }
	bootOnly = func(k fileKind) bool { return k == bootFile }
)

// checkoutFile is one file of a snapshot being written into a machine.
type checkoutFile struct {
	from  string // path in the snapshot
	kind  fileKind
	f     *os.File
	size  int64
	there bool          // in a claimed spare's file already: nothing to write
	done  chan struct{} // closed once written, or failed (err)
	err   error
}

// materializer writes a machine snapshot's boot files, disks and RAM into
// a machine, all at once, leaving holes as holes. The files exist before
// anything is written, the disks and RAM at full length (all holes), so
// that QEMU can open and map them while they fill; wait says when the
// ones it needs are whole.
type materializer struct {
	src   machineSource
	files []*checkoutFile
	// lazyRAM leaves the RAM file empty (all holes): its pages arrive
	// after QEMU starts, through postcopy (see lazyRAM).
	lazyRAM bool
	ramDir  string // the RAM file's directory of its own on tmpfs; "" in the machine directory
	total   int64

	ctx     context.Context // ends when a file fails or the work is aborted
	cancel  context.CancelFunc
	once    sync.Once
	err     error // the first failure
	written atomic.Int64
	done    chan struct{} // closed once every file is written and closed, or failed
}

// layout says where a materializer puts a machine's files.
type layout struct {
	ramInDir bool // the RAM file in the machine directory, not on tmpfs
	lazyRAM  bool // the RAM file stays empty (see lazyRAM)
	// spareRAM is the RAM file of a spare claimed for the machine (empty,
	// of full length). The spare also put the boot files and the disks
	// (empty, of full length, open in its QEMU) in the machine
	// directory: then the disks and the RAM are written into those files.
	spareRAM string
	// spareHas reports whether the claimed spare's file for the disk at
	// a path of the snapshot holds that disk already (see StartSpares).
	spareHas func(from string) bool
}

// newMaterializer lays out a machine snapshot's files in dir as lay says,
// points cfg at them and creates them, empty.
func newMaterializer(ctx context.Context, src machineSource, dir string, cfg *vmm.Config, lay layout) (_ *materializer, err error) {
	mz := &materializer{src: src, lazyRAM: lay.lazyRAM, done: make(chan struct{})}
	dsts, err := mz.layOut(dir, cfg, lay)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			mz.closeFiles()
			mz.removeRAM()
		}
	}()
	for i, c := range mz.files {
		if c.size, err = src.size(ctx, c.from); err != nil {
			return nil, fmt.Errorf("materialize %s: %w", c.from, err)
		}
		mz.total += c.size
		if err := mz.create(c, dsts[i], lay); err != nil {
			return nil, fmt.Errorf("materialize %s: %w", c.from, err)
		}
	}
	return mz, nil
}

// create opens the file c is written to, at dst, empty and as long as
// c (but boot files, which grow as they are written). A claimed
// spare's disks and RAM are there already: a disk the spare holds
// already (lay.spareHas) is left as it is, another one emptied.
func (mz *materializer) create(c *checkoutFile, dst string, lay layout) error {
	flags := os.O_RDWR | os.O_CREATE | os.O_EXCL
	if c.kind != bootFile && lay.spareRAM != "" {
		if c.kind == diskFile && lay.spareHas != nil && lay.spareHas(c.from) {
			c.there = true
			return nil
		}
		flags = os.O_RDWR // the spare's
	}
	var err error
	if c.f, err = os.OpenFile(dst, flags, 0o644); err != nil || c.kind == bootFile {
		return err
	}
	if c.kind == diskFile && lay.spareRAM != "" {
		if err := c.f.Truncate(0); err != nil { // what the spare was filled with
			return err
		}
	}
	return c.f.Truncate(c.size)
}

// layOut lists the files to write and where, and points cfg at them:
// boot files first (unless a spare has them), then disks, then RAM.
func (mz *materializer) layOut(dir string, cfg *vmm.Config, lay layout) ([]string, error) {
	var dsts []string
	add := func(from, to string, kind fileKind) {
		mz.files = append(mz.files, &checkoutFile{from: from, kind: kind, done: make(chan struct{})})
		dsts = append(dsts, to)
	}
	if cfg.Kernel != "" && lay.spareRAM == "" {
		add(cfg.Kernel, filepath.Join(dir, machineKernel), bootFile)
	}
	if cfg.Initrd != "" && lay.spareRAM == "" {
		add(cfg.Initrd, filepath.Join(dir, machineInitrd), bootFile)
	}
	cfg.Kernel, cfg.Initrd = bootFileNames(*cfg)
	cfg.Disks = slices.Clone(cfg.Disks)
	for i, d := range cfg.Disks {
		base := path.Base(d)
		if base == "." || base == "/" || base == ".." || strings.ContainsRune(base, ',') {
			return nil, fmt.Errorf("%s: bad disk name %q", snapMachine, d)
		}
		add(d, filepath.Join(dir, base), diskFile)
		cfg.Disks[i] = base
	}
	ramPath := filepath.Join(dir, vmm.RAMFileName)
	switch {
	case lay.spareRAM != "":
		ramPath = lay.spareRAM
	case !lay.ramInDir:
		var err error
		if ramPath, err = vmm.NewRAMFile("", cfg.Name); err != nil {
			return nil, err
		}
		mz.ramDir = filepath.Dir(ramPath)
	}
	cfg.RAMFile = ramPath
	add(snapRAM, ramPath, ramFile)
	return dsts, nil
}

// start writes all files at once, each on workers of its own (see
// stream.Extract). The first failure stops the others.
func (mz *materializer) start(ctx context.Context) {
	mz.ctx, mz.cancel = context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, c := range mz.files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if c.there {
				mz.written.Add(c.size)
				close(c.done)
				return
			}
			if c.kind != ramFile || !mz.lazyRAM {
				err = mz.src.extractInto(mz.ctx, c.from, c.f)
			}
			if cerr := c.f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				c.err = fmt.Errorf("materialize %s: %w", c.from, err)
				mz.fail(c.err)
			}
			mz.written.Add(c.size)
			close(c.done)
		}()
	}
	go func() {
		wg.Wait()
		close(mz.done)
	}()
}

// fail records the first failure and stops the other files.
func (mz *materializer) fail(err error) {
	mz.once.Do(func() {
		mz.err = err
		mz.cancel()
	})
}

// wait returns once the files of the kinds chosen are written, or with
// the first failure of any file.
func (mz *materializer) wait(kinds func(fileKind) bool) error {
	for _, c := range mz.files {
		if !kinds(c.kind) {
			continue
		}
		<-c.done
		if c.err != nil {
			<-mz.done
			return mz.err
		}
	}
	return nil
}

// abort stops the work and returns once no file is being written.
func (mz *materializer) abort() {
	mz.fail(context.Canceled)
	<-mz.done
}

// closeFiles closes the files of a materializer that never started.
func (mz *materializer) closeFiles() {
	for _, c := range mz.files {
		if c.f != nil {
			c.f.Close()
		}
	}
}

// removeRAM removes the RAM file's directory on tmpfs, for a checkout
// that failed before a machine took the file over.
func (mz *materializer) removeRAM() {
	if mz.ramDir != "" {
		os.RemoveAll(mz.ramDir)
	}
}

// progress reports the bytes written so far, file by file.
func (mz *materializer) progress() StoreProgress {
	return StoreProgress{Stats: stream.Stats{LogicalBytes: mz.written.Load()}, TotalBytes: mz.total}
}
