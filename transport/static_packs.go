package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"

	"github.com/sbuml/sbuml/objects"
)

// maxPackIndexSize bounds the pack index a Static remote downloads: far
// more entries than a pack of objects.MaxPackSize can hold.
const maxPackIndexSize = 64 << 20

// staticPack is a pack of a published directory as a Static remote sees
// it. The pack is downloaded at most once, into an unlinked temporary
// file, from which its objects are read.
type staticPack struct {
	PackInfo

	mu    sync.Mutex
	ready chan struct{} // closed when the download ended; nil before it started
	file  *os.File      // the downloaded pack, once ready and err is nil
	err   error
}

// staticSlot is where an object is in the packs.
type staticSlot struct {
	pack  *staticPack
	entry objects.PackEntry
}

// loadPacks reads packs.json and the indexes of the packs it lists, once.
// A directory without packs.json (published by an older sbuml) has no
// packs. A pack list or index that cannot be used only means that its
// objects are downloaded one by one: a published directory holds every
// object as a loose file too.
func (s *Static) loadPacks(ctx context.Context) error {
	s.packsMu.Lock()
	defer s.packsMu.Unlock()
	if s.packsLoaded {
		return nil
	}
	resp, err := s.request(ctx, "GET", PackListFile)
	if err != nil {
		return err
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		resp.Body.Close()
		s.packsLoaded = true
		return nil
	default:
		resp.Body.Close()
		return fmt.Errorf("remote %s: GET %s: %s", s.base, PackListFile, resp.Status)
	}
	b, err := readAll(resp, maxRefListSize, PackListFile)
	if err != nil {
		return fmt.Errorf("remote %s: %w", s.base, err)
	}
	list, err := parsePackList(b, s.base+PackListFile)
	if err != nil {
		s.packsLoaded = true // the loose objects remain
		return nil
	}
	indexes := make([][]objects.PackEntry, len(list.Packs))
	g := newGroup(ctx, StaticConcurrency)
	for i, p := range list.Packs {
		g.run(func(ctx context.Context) error {
			indexes[i] = s.packIndex(ctx, p)
			return nil
		})
	}
	g.wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	s.where = map[objects.ID]staticSlot{}
	for i, p := range list.Packs {
		if indexes[i] == nil {
			continue
		}
		sp := &staticPack{PackInfo: p}
		s.packs = append(s.packs, sp)
		for _, e := range indexes[i] {
			if _, dup := s.where[e.ID]; dup || e.Size > MaxStoredSize || e.Offset+uint64(e.Size) > uint64(p.Size) {
				continue
			}
			s.where[e.ID] = staticSlot{pack: sp, entry: e}
		}
	}
	s.packsLoaded = true
	return nil
}

// packIndex downloads and verifies the index of a pack; nil means the
// pack is not to be used.
func (s *Static) packIndex(ctx context.Context, p PackInfo) []objects.PackEntry {
	path := PackDir + "/" + p.Name + ".idx"
	resp, err := s.request(ctx, "GET", path)
	if err != nil {
		return nil
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil
	}
	b, err := readAll(resp, maxPackIndexSize, path)
	if err != nil || "pack-"+objects.Sum(b).String() != p.Name {
		return nil
	}
	entries, err := objects.DecodePackIndex(b)
	if err != nil {
		return nil
	}
	return entries
}

// fromPacks hands over the objects among ids that are in packs and
// returns the others. Each pack holding a wanted object is downloaded
// whole, once (see Static). An object whose pack cannot be downloaded or
// whose bytes fail the index's CRC is returned among the others, to be
// downloaded on its own.
func (s *Static) fromPacks(ctx context.Context, ids []objects.ID, deliver func(objects.ID, []byte) error) ([]objects.ID, error) {
	if err := s.loadPacks(ctx); err != nil {
		return nil, err
	}
	if len(s.where) == 0 {
		return ids, nil
	}
	var rest []objects.ID
	byPack := map[*staticPack][]objects.PackEntry{}
	for _, id := range ids {
		if slot, ok := s.where[id]; ok {
			byPack[slot.pack] = append(byPack[slot.pack], slot.entry)
		} else {
			rest = append(rest, id)
		}
	}
	var mu sync.Mutex
	g := newGroup(ctx, StaticConcurrency)
	for p, entries := range byPack {
		g.run(func(ctx context.Context) error {
			f, err := s.downloadPack(ctx, p)
			if err != nil {
				if ctx.Err() != nil {
					return err
				}
				f = nil
			}
			for _, e := range entries {
				var stored []byte
				if f != nil {
					stored, err = readPacked(f, e)
				}
				if f == nil || err != nil {
					mu.Lock()
					rest = append(rest, e.ID)
					mu.Unlock()
					continue
				}
				if err := deliver(e.ID, stored); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.wait(); err != nil {
		return nil, err
	}
	return rest, ctx.Err()
}

// readPacked reads one object out of a downloaded pack and checks it
// against the CRC its index records.
func readPacked(f *os.File, e objects.PackEntry) ([]byte, error) {
	stored := make([]byte, e.Size)
	if _, err := f.ReadAt(stored, int64(e.Offset)); err != nil {
		return nil, err
	}
	if objects.PackCRC(stored) != e.CRC {
		return nil, fmt.Errorf("object %s: %w: CRC mismatch in pack", e.ID, objects.ErrCorrupt)
	}
	return stored, nil
}

// downloadPack returns the downloaded pack p, downloading it first if no
// one has. A failed download is not tried again.
func (s *Static) downloadPack(ctx context.Context, p *staticPack) (*os.File, error) {
	p.mu.Lock()
	if p.ready == nil {
		p.ready = make(chan struct{})
		p.mu.Unlock()
		f, err := s.fetchPack(ctx, p.PackInfo)
		p.mu.Lock()
		p.file, p.err = f, err
		close(p.ready)
		p.mu.Unlock()
		return f, err
	}
	ready := p.ready
	p.mu.Unlock()
	select {
	case <-ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.file, p.err
}

// fetchPack downloads a pack into a temporary file that is unlinked at
// once, so nothing is left behind however the process ends.
func (s *Static) fetchPack(ctx context.Context, p PackInfo) (*os.File, error) {
	path := PackDir + "/" + p.Name + ".pack"
	resp, err := s.request(ctx, "GET", path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("remote %s: GET %s: %s", s.base, path, resp.Status)
	}
	f, err := os.CreateTemp("", "sbuml-"+p.Name+"-*")
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", path, err)
	}
	os.Remove(f.Name())
	n, err := io.Copy(f, io.LimitReader(resp.Body, p.Size+1))
	if err == nil && n != p.Size {
		err = fmt.Errorf("%d bytes, %s says %d", n, PackListFile, p.Size)
	}
	if err == nil {
		header := make([]byte, objects.PackHeaderSize)
		if _, err = f.ReadAt(header, 0); err == nil {
			err = objects.CheckPackHeader(header)
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("remote %s: GET %s: %w", s.base, path, err)
	}
	return f, nil
}

// closePacks closes the downloaded packs.
func (s *Static) closePacks() error {
	s.packsMu.Lock()
	defer s.packsMu.Unlock()
	var errs []error
	for _, p := range s.packs {
		p.mu.Lock()
		if p.file != nil {
			errs = append(errs, p.file.Close())
			p.file, p.err = nil, errors.New("remote closed")
		}
		p.mu.Unlock()
	}
	return errors.Join(errs...)
}
