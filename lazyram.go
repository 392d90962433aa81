package sbuml

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/sbuml/sbuml/chunker"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/stream"
	"github.com/sbuml/sbuml/vmm"
)

// storePages serves the pages of a RAM stream cut in 4 KiB pages
// (chunker.RAM) to a postcopy restore: the chunk of each page, zero for
// a hole.
type storePages struct {
	ctx   context.Context
	store objects.Store
	pages []objects.ID
}

// newStorePages indexes the RAM stream id page by page. It fails for a
// stream not cut in pages (then the RAM is written before the guest
// runs).
func newStorePages(ctx context.Context, store objects.Store, id objects.ID, size int64) (*storePages, error) {
	st, err := objects.LoadStream(ctx, store, id)
	if err != nil {
		return nil, err
	}
	if stream.ParamsOf(st).Chunking != chunker.RAM || int64(st.Length) != size {
		return nil, fmt.Errorf("RAM stream %s is not cut in %d-byte pages of a %d-byte RAM", id.Short(), vmm.PageSize, size)
	}
	sp := &storePages{ctx: ctx, store: store, pages: make([]objects.ID, size/vmm.PageSize)}
	err = stream.Leaves(ctx, store, st, func(l stream.Leaf) error {
		if l.ID.IsZero() {
			return nil
		}
		if l.Length != vmm.PageSize || l.Offset%vmm.PageSize != 0 {
			return fmt.Errorf("RAM stream %s: a chunk of %d bytes at %d is no page", id.Short(), l.Length, l.Offset)
		}
		sp.pages[l.Offset/vmm.PageSize] = l.ID
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sp, nil
}

// Data reports whether the page at off holds data (is no hole).
func (sp *storePages) Data(off uint64) bool { return !sp.pages[off/vmm.PageSize].IsZero() }

// ReadPage reads the page at off from the store.
func (sp *storePages) ReadPage(off uint64, buf []byte) (bool, error) {
	id := sp.pages[off/vmm.PageSize]
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

// prepareLazyRAM reads the device state and indexes the RAM of a store
// snapshot in the background, or returns nil if its RAM cannot arrive
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

// load loads the device state into m and, with cont, runs the guest at
// once; it returns when the guest runs (or is ready to), and then when
// all its RAM is in place.
func (lr *lazyRAM) load(ctx context.Context, m *vmm.Machine, cont bool) (running time.Time, err error) {
	<-lr.done
	if lr.err != nil {
		return time.Time{}, lr.err
	}
	p, err := m.LoadPostcopy(ctx, lr.dev, lr.pages)
	if err != nil {
		return time.Time{}, err
	}
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
