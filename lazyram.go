package sbuml

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sbuml/sbuml/chunker"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/stream"
	"github.com/sbuml/sbuml/vmm"
)

// storePages serves the pages of a RAM stream cut in 4 KiB pages
// (chunker.RAM) to a postcopy restore: the chunk of each page, zero for
// a hole. It answers at once: the pages QEMU asks for are looked up
// through the index nodes above them alone, until the table of all
// pages is built (its index nodes take 0.4 s to read for 4 GiB). The
// table is only built once the pages nobody asked for are pushed (the
// first Data), so that it does not compete with QEMU loading the device
// state for the host's cores.
type storePages struct {
	ctx   context.Context
	store objects.Store
	st    *objects.Stream
	size  int64
	name  string // the stream's short ID, for errors

	look *stream.Lookup // until ready; used by the caller's goroutine only

	build sync.Once
	ready chan struct{} // closed once pages (or err) is set
	pages []objects.ID
	err   error
}

// newStorePages prepares to serve the RAM stream id page by page. It
// fails for a stream not cut in pages (then the RAM is written before
// the guest runs).
func newStorePages(ctx context.Context, store objects.Store, id objects.ID, size int64) (*storePages, error) {
	st, err := objects.LoadStream(ctx, store, id)
	if err != nil {
		return nil, err
	}
	if stream.ParamsOf(st).Chunking != chunker.RAM || int64(st.Length) != size {
		return nil, fmt.Errorf("RAM stream %s is not cut in %d-byte pages of a %d-byte RAM", id.Short(), vmm.PageSize, size)
	}
	look, err := stream.NewLookup(ctx, store, st)
	if err != nil {
		return nil, err
	}
	return &storePages{ctx: ctx, store: store, st: st, size: size, name: id.Short(), look: look, ready: make(chan struct{})}, nil
}

// buildTable starts building the table of all pages, once.
func (sp *storePages) buildTable() {
	sp.build.Do(func() {
		go func() {
			defer close(sp.ready)
			sp.pages, sp.err = sp.table()
		}()
	})
}

// table lists the chunk of every page.
func (sp *storePages) table() ([]objects.ID, error) {
	pages := make([]objects.ID, sp.size/vmm.PageSize)
	err := stream.Leaves(sp.ctx, sp.store, sp.st, func(l stream.Leaf) error {
		if l.ID.IsZero() {
			return nil
		}
		if err := sp.checkLeaf(l); err != nil {
			return err
		}
		pages[l.Offset/vmm.PageSize] = l.ID
		return nil
	})
	return pages, err
}

// checkLeaf fails for a chunk that is not one page.
func (sp *storePages) checkLeaf(l stream.Leaf) error {
	if l.Length != vmm.PageSize || l.Offset%vmm.PageSize != 0 {
		return fmt.Errorf("RAM stream %s: a chunk of %d bytes at %d is no page", sp.name, l.Length, l.Offset)
	}
	return nil
}

// page returns the chunk of the page at off, zero for a hole: from the
// table once it is built, else through the index nodes above the page.
func (sp *storePages) page(off uint64) (objects.ID, error) {
	select {
	case <-sp.ready:
		if sp.err != nil {
			return objects.Zero, sp.err
		}
		return sp.pages[off/vmm.PageSize], nil
	default:
	}
	l, err := sp.look.LeafAt(off)
	if err != nil || l.ID.IsZero() {
		return objects.Zero, err
	}
	return l.ID, sp.checkLeaf(l)
}

// Data reports whether the page at off holds data (is no hole). It is
// asked of every page in turn once the pages QEMU needed first are
// sent, and waits for the table; if the table failed, every page is
// said to hold data, and ReadPage reports the failure.
func (sp *storePages) Data(off uint64) bool {
	sp.buildTable()
	<-sp.ready
	return sp.err != nil || !sp.pages[off/vmm.PageSize].IsZero()
}

// ReadPage reads the page at off from the store.
func (sp *storePages) ReadPage(off uint64, buf []byte) (bool, error) {
	id, err := sp.page(off)
	if err != nil {
		return false, fmt.Errorf("RAM page at %#x: %w", off, err)
	}
	if id.IsZero() {
		return true, nil
	}
	data, err := objects.LoadChunk(sp.ctx, sp.store, id)
	if err != nil {
		return false, fmt.Errorf("RAM page at %#x: %w", off, err)
	}
	if len(data) != vmm.PageSize {
		return false, fmt.Errorf("RAM page at %#x: chunk %s: %w: %d bytes", off, id.Short(), objects.ErrCorrupt, len(data))
	}
	copy(buf, data)
	return false, nil
}

// lazyRAM is what a checkout needs to restore with the RAM arriving
// after the guest runs: the device state and the pages, both read while
// QEMU starts.
type lazyRAM struct {
	done  chan struct{}
	dev   []byte
	pages *storePages
	err   error
}

// prepareLazyRAM reads the device state and prepares to serve the RAM
// of a store snapshot in the background, or returns nil if its RAM cannot arrive
// lazily: an exported machine, or guest RAM kept in the machine
// directory (ramInDir). QEMU places postcopy pages with UFFDIO_COPY,
// which only anonymous memory, tmpfs and hugetlbfs take: on another file
// system it dies at the first page.
func prepareLazyRAM(ctx context.Context, src machineSource, memory int64, ramInDir bool) *lazyRAM {
	ss, ok := src.(*storeSource)
	if !ok || ramInDir {
		return nil
	}
	id, err := ss.stream(snapRAM)
	if err != nil {
		return nil
	}
	if st, err := objects.LoadStream(ctx, ss.s.Objects, id); err != nil || stream.ParamsOf(st).Chunking != chunker.RAM {
		return nil // written before the guest runs, which reports any error
	}
	lr := &lazyRAM{done: make(chan struct{})}
	go func() {
		defer close(lr.done)
		var b bytes.Buffer
		if lr.err = ss.copyTo(ctx, snapDeviceState, &b); lr.err != nil {
			return
		}
		lr.dev = b.Bytes()
		lr.pages, lr.err = newStorePages(ctx, ss.s.Objects, id, memory)
	}()
	return lr
}

// start has m load the device state through postcopy, the pages it
// needs served from the store. The guest does not run before
// finishPostcopy, so the caller may finish writing the disks meanwhile.
func (lr *lazyRAM) start(ctx context.Context, m *vmm.Machine) (*vmm.Postcopy, error) {
	<-lr.done
	if lr.err != nil {
		return nil, lr.err
	}
	return m.LoadPostcopy(ctx, lr.dev, lr.pages)
}

// finishPostcopy, with cont, runs the guest as soon as QEMU has loaded
// the device state p carries; it returns when the guest runs (or is
// ready to), and then when all its RAM is in place.
func finishPostcopy(ctx context.Context, m *vmm.Machine, p *vmm.Postcopy, cont bool) (running time.Time, err error) {
	if cont {
		err = m.ContinuePostcopy(ctx)
	}
	p.Push()
	running = time.Now()
	if werr := p.Wait(ctx); err == nil {
		err = werr
	}
	return running, err
}

// abortPostcopy ends the page server of p, for a checkout that failed;
// the caller halts the machine.
func abortPostcopy(ctx context.Context, p *vmm.Postcopy) {
	ctx, cancel := context.WithCancel(ctx)
	cancel()
	p.Wait(ctx)
}
