package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sbuml/sbuml/objects"
)

// maxPackIndexSize bounds the pack index a Static remote downloads: far
// more entries than a pack of objects.MaxPackSize can hold.
const maxPackIndexSize = 64 << 20

// staticPack is a pack of a published directory as a Static remote sees
// it. Objects are read out of it with range requests until they add up
// to half the pack; then, or at once where the server ignores ranges, the
// pack is downloaded whole, at most once, into an unlinked temporary
// file, from which its objects are read.
type staticPack struct {
	PackInfo
	ranged atomic.Int64 // bytes asked for with range requests

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
	b, err := readAll(resp, maxPackListSize, PackListFile)
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
// returns the others. The objects of a pack are read with range requests
// or out of the whole pack, downloaded once (see staticPack). An object
// whose pack cannot be read or whose bytes fail the index's CRC or
// deliver's check against its ID is returned among the others, to be
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
			var whole *http.Response // a range request answered with the whole pack
			if s.wantRanges(p, entries) {
				failed, err := s.fromRanges(ctx, p, entries, deliver)
				var wp *wholePack
				if !errors.As(err, &wp) {
					mu.Lock()
					rest = append(rest, failed...)
					mu.Unlock()
					return err
				}
				whole = wp.resp
			}
			f, err := s.downloadPack(ctx, p, whole)
			if err != nil {
				if ctx.Err() != nil {
					return err
				}
				f = nil
			}
			for _, e := range entries {
				delivered := false
				if f != nil {
					stored := make([]byte, e.Size)
					if _, err := f.ReadAt(stored, int64(e.Offset)); err == nil {
						if delivered, err = deliverPacked(e, stored, deliver); err != nil {
							return err
						}
					}
				}
				if !delivered {
					mu.Lock()
					rest = append(rest, e.ID)
					mu.Unlock()
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

// Range requests read runs of wanted objects whose gaps are under
// rangeGap bytes (the gaps are downloaded and thrown away), up to
// rangeMax bytes per request.
const (
	rangeGap = 64 << 10
	rangeMax = 8 << 20
)

// wholePack is the error of a range request that the server answered
// with the whole pack, as servers that do not serve ranges do. Its
// response is the pack's download, for the caller to read and close.
type wholePack struct{ resp *http.Response }

func (*wholePack) Error() string { return "server ignores range requests" }

// wantRanges decides how to read entries of p: with range requests while
// they add up to less than half the pack, and the server serves ranges
// and the pack has not been downloaded already. It counts the bytes it
// lets through.
func (s *Static) wantRanges(p *staticPack, entries []objects.PackEntry) bool {
	if s.noRanges.Load() {
		return false
	}
	p.mu.Lock()
	started := p.ready != nil
	p.mu.Unlock()
	if started {
		return false
	}
	var want int64
	for _, e := range entries {
		want += int64(e.Size) + packRecordHeader
	}
	return p.ranged.Add(want) < p.Size/2
}

// packRecordHeader is the size of the header before each object in a
// pack (see docs/format.md).
const packRecordHeader = objects.IDSize + 4

// fromRanges delivers entries of p read with range requests. It returns
// the entries it could not read (to be downloaded on their own), or a
// *wholePack, having delivered nothing, if the server sends whole files.
func (s *Static) fromRanges(ctx context.Context, p *staticPack, entries []objects.PackEntry, deliver func(objects.ID, []byte) error) ([]objects.ID, error) {
	runs := rangeRuns(entries)
	var mu sync.Mutex
	var failed []objects.ID
	// fetch reads one run and delivers its objects; those it cannot read
	// are failed. The first run alone learns whether the server serves
	// ranges at all (a *wholePack error), before the others start.
	fetch := func(ctx context.Context, run []objects.PackEntry, first bool) error {
		start, end := run[0].Offset, run[len(run)-1].Offset+uint64(run[len(run)-1].Size)
		data, err := s.readRange(ctx, p, start, end)
		var wp *wholePack
		if errors.As(err, &wp) {
			if first {
				return err // nothing delivered yet: the caller reads the whole pack
			}
			wp.resp.Body.Close()
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			mu.Lock()
			for _, e := range run {
				failed = append(failed, e.ID)
			}
			mu.Unlock()
			return nil
		}
		for _, e := range run {
			delivered, err := deliverPacked(e, data[e.Offset-start:e.Offset-start+uint64(e.Size)], deliver)
			if err != nil {
				return err
			}
			if !delivered {
				mu.Lock()
				failed = append(failed, e.ID)
				mu.Unlock()
			}
		}
		return nil
	}
	if err := fetch(ctx, runs[0], true); err != nil {
		return nil, err
	}
	g := newGroup(ctx, StaticConcurrency)
	for _, run := range runs[1:] {
		g.run(func(ctx context.Context) error { return fetch(ctx, run, false) })
	}
	if err := g.wait(); err != nil {
		return nil, err
	}
	return failed, ctx.Err()
}

// readRange downloads bytes [start, end) of pack p.
func (s *Static) readRange(ctx context.Context, p *staticPack, start, end uint64) ([]byte, error) {
	path := PackDir + "/" + p.Name + ".pack"
	resp, err := s.request(ctx, "GET", path, "Range", fmt.Sprintf("bytes=%d-%d", start, end-1))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusOK {
		// The whole pack is on its way: not what was asked for, but
		// what the next request would have asked for.
		s.noRanges.Store(true)
		return nil, &wholePack{resp: resp}
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent:
	default:
		return nil, fmt.Errorf("remote %s: GET %s bytes %d-%d: %s", s.base, path, start, end-1, resp.Status)
	}
	want := fmt.Sprintf("bytes %d-%d/", start, end-1)
	if cr := resp.Header.Get("Content-Range"); !strings.HasPrefix(cr, want) {
		return nil, fmt.Errorf("remote %s: GET %s: asked for %s, got Content-Range %q", s.base, path, want, cr)
	}
	data := make([]byte, end-start)
	if _, err := io.ReadFull(resp.Body, data); err != nil {
		return nil, fmt.Errorf("remote %s: GET %s bytes %d-%d: %w", s.base, path, start, end-1, err)
	}
	return data, nil
}

// deliverPacked hands deliver the stored form of e read from its pack.
// It reports false, and no error, if the bytes fail the index's CRC or
// deliver refuses them as corrupt: the object is then to be downloaded on
// its own.
func deliverPacked(e objects.PackEntry, stored []byte, deliver func(objects.ID, []byte) error) (bool, error) {
	if !e.Check(stored) {
		return false, nil
	}
	if err := deliver(e.ID, stored); err != nil {
		if errors.Is(err, objects.ErrCorrupt) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// downloadPack returns the downloaded pack p, downloading it first if no
// one has: from resp if not nil (which it closes), else with a request of
// its own. A failed download is not tried again.
func (s *Static) downloadPack(ctx context.Context, p *staticPack, resp *http.Response) (*os.File, error) {
	p.mu.Lock()
	if p.ready == nil {
		p.ready = make(chan struct{})
		p.mu.Unlock()
		f, err := s.fetchPack(ctx, p.PackInfo, resp)
		p.mu.Lock()
		p.file, p.err = f, err
		close(p.ready)
		p.mu.Unlock()
		return f, err
	}
	ready := p.ready
	p.mu.Unlock()
	if resp != nil {
		resp.Body.Close()
	}
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
// once, so nothing is left behind however the process ends. resp, if not
// nil, is the pack's download already under way. A download cut off in
// passing goes on from where it stopped, with a range request, at most
// Limits.Attempts times in all.
func (s *Static) fetchPack(ctx context.Context, p PackInfo, resp *http.Response) (*os.File, error) {
	path := PackDir + "/" + p.Name + ".pack"
	f, err := os.CreateTemp("", "sbuml-"+p.Name+"-*")
	if err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		return nil, fmt.Errorf("download %s: %w", path, err)
	}
	os.Remove(f.Name())
	fail := func(err error) (*os.File, error) {
		f.Close()
		return nil, fmt.Errorf("remote %s: GET %s: %w", s.base, path, err)
	}
	var n int64 // bytes of the pack in f
	for attempt := 1; ; attempt++ {
		if resp == nil {
			if resp, err = s.packFrom(ctx, path, n); err != nil {
				return fail(err)
			}
		}
		if resp.StatusCode == http.StatusOK && n > 0 {
			n = 0 // the server sends the whole pack again
		}
		m, err := io.Copy(io.NewOffsetWriter(f, n), io.LimitReader(resp.Body, p.Size-n+1))
		resp.Body.Close()
		resp, n = nil, n+m
		if err == nil || !transient(err) || attempt >= s.client.limits.Attempts || ctx.Err() != nil {
			if err != nil {
				return fail(err)
			}
			break
		}
	}
	if n != p.Size {
		return fail(fmt.Errorf("%d bytes, %s says %d", n, PackListFile, p.Size))
	}
	header := make([]byte, objects.PackHeaderSize)
	if _, err := f.ReadAt(header, 0); err != nil {
		return fail(err)
	}
	if err := objects.CheckPackHeader(header); err != nil {
		return fail(err)
	}
	return f, nil
}

// packFrom requests the pack at path from byte off on: all of it (200),
// or, if off is not 0, the rest (206, or 200 from a server that ignores
// ranges).
func (s *Static) packFrom(ctx context.Context, path string, off int64) (*http.Response, error) {
	var header []string
	if off > 0 {
		header = []string{"Range", fmt.Sprintf("bytes=%d-", off)}
	}
	resp, err := s.request(ctx, "GET", path, header...)
	if err != nil {
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusPartialContent && off > 0 && strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", off)):
	default:
		resp.Body.Close()
		return nil, fmt.Errorf("%s", resp.Status)
	}
	return resp, nil
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
