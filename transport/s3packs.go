package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sbuml/sbuml/internal/atomicfile"
	"github.com/sbuml/sbuml/objects"
)

// Kinds of packs in a bucket: data packs hold objects that reference
// nothing (chunks), tree packs the others, so that a gc walks the object
// graph reading tree packs only.
const (
	packData = "data"
	packTree = "tree"
)

// s3Pack is a pack of a bucket: packs/KIND/NAME.pack and its index.
// NAME is "pack-", the hex checksum of the index, "-" and 16 random hex
// digits: every upload makes new keys, so a pack uploaded again with
// the same objects (by a push, or by a gc copying them) is never the
// pack a gc condemned and deletes.
type s3Pack struct {
	kind, name string
	size       int64
	modified   time.Time // of the index, by the store's clock
	entries    []objects.PackEntry

	// A small pack's bytes are kept as they are read (see readCached):
	// buf holds them at their offsets, have the spans read.
	mu     sync.Mutex // held while the pack is read into buf
	buf    []byte
	have   []span
	ranged int64 // bytes asked of the pack so far
}

// span is the bytes [start, end) of a pack.
type span struct{ start, end uint64 }

// path is the pack's name below packs/, without extension: "data/pack-H".
func (p *s3Pack) path() string { return p.kind + "/" + p.name }

// s3Slot is where an object is.
type s3Slot struct {
	pack  *s3Pack
	entry objects.PackEntry
}

// packView is what a remote knows of the bucket's packs.
type packView struct {
	packs map[string]*s3Pack // by path
	// where holds the objects of the packs the last gc did not condemn;
	// spare those found only in condemned packs, which a push treats as
	// absent but a fetch may still read.
	where, spare map[objects.ID]s3Slot
	gen          *generation
}

var s3PackName = regexp.MustCompile(`^pack-[0-9a-f]{64}-[0-9a-f]{16}$`)

// checksumName returns the part of a pack's name that its index's
// checksum gives.
func checksumName(name string) string { return name[:len("pack-")+2*objects.IDSize] }

// slot returns where id is, preferring packs not condemned.
func (v *packView) slot(id objects.ID) (s3Slot, bool) {
	if sl, ok := v.where[id]; ok {
		return sl, true
	}
	sl, ok := v.spare[id]
	return sl, ok
}

// listPacks lists the published packs: those whose index is there.
func (s *S3) listPacks(ctx context.Context) (map[string]*s3Pack, error) {
	packs := map[string]*s3Pack{}
	sizes := map[string]int64{}
	err := s.list(ctx, "packs/", func(name string, size int64, modified time.Time) {
		kind, file, ok := strings.Cut(name, "/")
		if !ok || (kind != packData && kind != packTree) {
			return
		}
		if base, ok := strings.CutSuffix(file, ".pack"); ok && s3PackName.MatchString(base) {
			sizes[kind+"/"+base] = size
		}
		if base, ok := strings.CutSuffix(file, ".idx"); ok && s3PackName.MatchString(base) {
			packs[kind+"/"+base] = &s3Pack{kind: kind, name: base, modified: modified}
		}
	})
	if err != nil {
		return nil, err
	}
	for path, p := range packs {
		size, ok := sizes[path]
		if !ok || size < objects.PackHeaderSize {
			delete(packs, path) // being deleted by a gc
			continue
		}
		p.size = size
	}
	return packs, nil
}

// list calls fn with the name (below prefix) of every key under
// s.prefix+prefix, its size and time.
func (s *S3) list(ctx context.Context, prefix string, fn func(name string, size int64, modified time.Time)) error {
	ctx = s.withCount(ctx)
	p := s3.NewListObjectsV2Paginator(s.api, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: aws.String(s.key(prefix))})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return s.errS3("LIST", s.key(prefix), err)
		}
		for _, o := range out.Contents {
			name := strings.TrimPrefix(aws.ToString(o.Key), s.key(prefix))
			fn(name, aws.ToInt64(o.Size), aws.ToTime(o.LastModified))
		}
	}
	return nil
}

// loadView lists the packs, reads the indexes of those not known yet
// (from the cache directory, else from the bucket) and the last gc's
// generation, and makes that the remote's view.
func (s *S3) loadView(ctx context.Context) (*packView, error) {
	packs, err := s.listPacks(ctx)
	if err != nil {
		return nil, err
	}
	s.pruneCache(packs)
	gen, err := s.readGeneration(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	old := s.view
	s.mu.Unlock()
	var todo []*s3Pack
	for path, p := range packs {
		if old != nil && old.packs[path] != nil {
			packs[path] = old.packs[path]
			continue
		}
		todo = append(todo, p)
	}
	g := newGroup(ctx, StaticConcurrency)
	for _, p := range todo {
		g.run(func(ctx context.Context) error {
			entries, err := s.packIndex(ctx, p)
			p.entries = entries
			return err
		})
	}
	if err := g.wait(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	v := makeView(packs, gen)
	s.mu.Lock()
	s.view = v
	s.mu.Unlock()
	return v, nil
}

// makeView indexes the objects of packs, setting apart those that only
// packs gen condemned hold.
func makeView(packs map[string]*s3Pack, gen *generation) *packView {
	v := &packView{packs: packs, where: map[objects.ID]s3Slot{}, spare: map[objects.ID]s3Slot{}, gen: gen}
	condemned := gen.condemnedSet()
	// Packs in a fixed order, so that every process picks the same copy.
	paths := make([]string, 0, len(packs))
	for path := range packs {
		paths = append(paths, path)
	}
	sort.Strings(paths)
	for _, path := range paths {
		p := packs[path]
		to := v.where
		if condemned[path] {
			to = v.spare
		}
		for _, e := range p.entries {
			if e.Size > MaxStoredSize || e.Offset+uint64(e.Size) > uint64(p.size) {
				continue
			}
			if _, dup := to[e.ID]; !dup {
				to[e.ID] = s3Slot{pack: p, entry: e}
			}
		}
	}
	for id := range v.spare {
		if _, ok := v.where[id]; ok {
			delete(v.spare, id)
		}
	}
	return v
}

// view returns the remote's view, loading it if it has none.
func (s *S3) currentView(ctx context.Context) (*packView, error) {
	s.mu.Lock()
	v := s.view
	s.mu.Unlock()
	if v != nil {
		return v, nil
	}
	return s.loadView(ctx)
}

// cacheDir is the directory that keeps this bucket's pack indexes:
// below CacheDir, 16 hex digits of a hash of the endpoint, bucket and
// prefix. "" if there is no cache.
func (s *S3) cacheDir() string {
	if s.opts.CacheDir == "" {
		return ""
	}
	sum := objects.Sum([]byte(s.opts.Endpoint + "\x00" + s.url))
	return filepath.Join(s.opts.CacheDir, sum.String()[:16])
}

// pruneCache removes from the cache the indexes of packs the listing
// no longer holds (a gc of the bucket replaced them), and the indexes
// that earlier versions kept straight in CacheDir, shared by every
// bucket. A file removed while another process wants it costs that
// process a download, nothing more.
func (s *S3) pruneCache(packs map[string]*s3Pack) {
	dir := s.cacheDir()
	if dir == "" {
		return
	}
	listed := make(map[string]bool, len(packs))
	for _, p := range packs {
		listed[checksumName(p.name)+".idx"] = true
	}
	for _, d := range []string{dir, s.opts.CacheDir} {
		files, _ := os.ReadDir(d)
		for _, f := range files {
			name := f.Name()
			if f.Type().IsRegular() && strings.HasSuffix(name, ".idx") && (d != dir || !listed[name]) {
				os.Remove(filepath.Join(d, name))
			}
		}
	}
}

// packIndex reads and verifies the index of p: from the cache directory
// if it holds it (an index is named by its checksum, so any copy of that
// name is the same), else from the bucket, keeping a copy in the cache.
func (s *S3) packIndex(ctx context.Context, p *s3Pack) ([]objects.PackEntry, error) {
	cached := ""
	if dir := s.cacheDir(); dir != "" {
		cached = filepath.Join(dir, checksumName(p.name)+".idx")
		if b, err := os.ReadFile(cached); err == nil && "pack-"+objects.Sum(b).String() == checksumName(p.name) {
			if entries, err := objects.DecodePackIndex(b); err == nil {
				return entries, nil
			}
		}
	}
	key := "packs/" + p.path() + ".idx"
	b, err := s.getObject(ctx, key, maxPackIndexSize)
	if err != nil {
		if errors.Is(err, objects.ErrNotFound) {
			return nil, nil // removed by a gc since the listing
		}
		return nil, err
	}
	if "pack-"+objects.Sum(b).String() != checksumName(p.name) {
		return nil, fmt.Errorf("remote %s: pack index %s: %w: its checksum does not match its name", s.url, key, objects.ErrCorrupt)
	}
	entries, err := objects.DecodePackIndex(b)
	if err != nil {
		return nil, fmt.Errorf("remote %s: pack index %s: %w: %v", s.url, key, objects.ErrCorrupt, err)
	}
	if cached != "" && os.MkdirAll(filepath.Dir(cached), 0o755) == nil {
		// A cache that cannot be written costs only a download next time.
		atomicfile.WriteFile(cached, b, 0o644)
	}
	return entries, nil
}

// getObject downloads the object at key (below the prefix), of at most
// limit bytes. A missing key gives an error wrapping objects.ErrNotFound.
func (s *S3) getObject(ctx context.Context, key string, limit int64) ([]byte, error) {
	b, _, err := s.getObjectETag(ctx, key, limit)
	return b, err
}

// getObjectETag is getObject that also returns the object's ETag.
func (s *S3) getObjectETag(ctx context.Context, key string, limit int64) ([]byte, string, error) {
	out, err := s.api.GetObject(s.withCount(ctx), &s3.GetObjectInput{Bucket: &s.bucket, Key: aws.String(s.key(key))})
	if err != nil {
		if isS3NotFound(err) {
			return nil, "", fmt.Errorf("remote %s: %s: %w", s.url, key, objects.ErrNotFound)
		}
		return nil, "", s.errS3("GET", s.key(key), err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, limit+1))
	if err != nil {
		return nil, "", s.errS3("GET", s.key(key), err)
	}
	if int64(len(b)) > limit {
		return nil, "", fmt.Errorf("remote %s: %s: %w: larger than %d bytes", s.url, key, ErrProtocol, limit)
	}
	return b, aws.ToString(out.ETag), nil
}

// Has implements Remote: an object is present if a pack that the last
// gc did not condemn holds it, in the view taken when the remote was
// first written to (or, for a reader, first asked). Objects pushed by
// others since are reported absent and sent again: that costs bytes,
// never correctness.
func (s *S3) Has(ctx context.Context, ids []objects.ID) ([]bool, error) {
	v, err := s.currentView(ctx)
	if err != nil {
		return nil, err
	}
	has := make([]bool, len(ids))
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, id := range ids {
		_, has[i] = v.where[id]
	}
	return has, nil
}

func (s *S3) hasIsFree() {}

// Get implements Remote: objects are read out of their packs with
// ranged GETs, one per run of wanted objects whose gaps are under
// rangeGap bytes, up to rangeMax bytes each. An object not found, or
// whose pack went away (a gc moved it), is looked for again in a fresh
// listing of the packs once.
func (s *S3) Get(ctx context.Context, ids []objects.ID, fn func(objects.ID, []byte) error) error {
	var mu sync.Mutex
	deliver := func(id objects.ID, stored []byte) error {
		mu.Lock()
		defer mu.Unlock()
		return fn(id, stored)
	}
	v, err := s.currentView(ctx)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		missing, err := s.getFrom(ctx, v, ids, deliver)
		if err != nil || len(missing) == 0 {
			return err
		}
		if attempt == 1 {
			return fmt.Errorf("remote %s: object %s: %w", s.url, missing[0], objects.ErrNotFound)
		}
		if v, err = s.loadView(ctx); err != nil {
			return err
		}
		ids = missing
	}
}

// getFrom reads ids from the packs v knows and returns those it could
// not find there.
func (s *S3) getFrom(ctx context.Context, v *packView, ids []objects.ID, deliver func(objects.ID, []byte) error) ([]objects.ID, error) {
	var missing []objects.ID
	byPack := map[*s3Pack][]objects.PackEntry{}
	s.mu.Lock()
	for _, id := range ids {
		if sl, ok := v.slot(id); ok {
			byPack[sl.pack] = append(byPack[sl.pack], sl.entry)
		} else {
			missing = append(missing, id)
		}
	}
	s.mu.Unlock()
	var mu sync.Mutex
	gone := func(run []objects.PackEntry) {
		mu.Lock()
		for _, e := range run {
			missing = append(missing, e.ID)
		}
		mu.Unlock()
	}
	g := newGroup(ctx, StaticConcurrency)
	for p, entries := range byPack {
		if s.cacheable(p) {
			g.run(func(ctx context.Context) error {
				isGone, err := s.readCached(ctx, p, entries, deliver)
				if isGone {
					gone(entries)
				}
				return err
			})
			continue
		}
		for _, run := range rangeRuns(entries) {
			g.run(func(ctx context.Context) error {
				isGone, err := s.readRunAgain(ctx, p, run, deliver)
				if isGone {
					gone(run)
				}
				return err
			})
		}
	}
	if err := g.wait(); err != nil {
		return nil, err
	}
	return missing, ctx.Err()
}

// rangeRuns sorts entries by offset and cuts them into runs, each read
// with one range request.
func rangeRuns(entries []objects.PackEntry) [][]objects.PackEntry {
	sort.Slice(entries, func(i, j int) bool { return entries[i].Offset < entries[j].Offset })
	var runs [][]objects.PackEntry
	for len(entries) > 0 {
		n := 1
		start, end := entries[0].Offset, entries[0].Offset+uint64(entries[0].Size)
		for n < len(entries) {
			e := entries[n]
			if e.Offset > end+rangeGap || e.Offset+uint64(e.Size)-start > rangeMax {
				break
			}
			end = max(end, e.Offset+uint64(e.Size))
			n++
		}
		runs = append(runs, entries[:n])
		entries = entries[n:]
	}
	return runs
}

// readRunAgain is readRun, tried again when the answer is cut off in
// passing (the SDK retries requests, but not the reading of a body).
func (s *S3) readRunAgain(ctx context.Context, p *s3Pack, run []objects.PackEntry, deliver func(objects.ID, []byte) error) (bool, error) {
	for attempt := 1; ; attempt++ {
		gone, err := s.readRun(ctx, p, run, deliver)
		if err == nil || !errors.Is(err, errCutOff) || attempt >= s.limits.Attempts || ctx.Err() != nil {
			return gone, err
		}
		select {
		case <-time.After(time.Duration(attempt) * 250 * time.Millisecond):
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// readRun reads one run of objects of pack p and delivers them. gone
// reports that the pack is not there any more.
func (s *S3) readRun(ctx context.Context, p *s3Pack, run []objects.PackEntry, deliver func(objects.ID, []byte) error) (gone bool, err error) {
	start, end := run[0].Offset, run[len(run)-1].Offset+uint64(run[len(run)-1].Size)
	data, gone, err := s.readRange(ctx, p, start, end)
	if gone || err != nil {
		return gone, err
	}
	return false, s.deliverRun(p, run, data, start, deliver)
}

// readRange reads bytes [start, end) of pack p with a range request.
// gone reports that the pack is not there any more; an answer cut off in
// passing gives an error wrapping errCutOff.
func (s *S3) readRange(ctx context.Context, p *s3Pack, start, end uint64) (data []byte, gone bool, err error) {
	key := s.key("packs/" + p.path() + ".pack")
	out, err := s.api.GetObject(s.withCount(ctx), &s3.GetObjectInput{
		Bucket: &s.bucket, Key: &key, Range: aws.String(fmt.Sprintf("bytes=%d-%d", start, end-1)),
	})
	if err != nil {
		if isS3NotFound(err) {
			return nil, true, nil
		}
		return nil, false, s.errS3("GET", key, err)
	}
	defer out.Body.Close()
	if cr := aws.ToString(out.ContentRange); !strings.HasPrefix(cr, fmt.Sprintf("bytes %d-%d/", start, end-1)) {
		return nil, false, fmt.Errorf("remote %s: GET %s: asked for bytes %d-%d, got Content-Range %q", s.url, key, start, end-1, cr)
	}
	data = make([]byte, end-start)
	if _, err := io.ReadFull(out.Body, data); err != nil {
		if transient(err) {
			return nil, false, fmt.Errorf("remote %s: GET %s: %w: %w", s.url, key, errCutOff, err)
		}
		return nil, false, s.errS3("GET", key, err)
	}
	return data, false, nil
}

// deliverRun delivers the objects of run out of data, the bytes of pack
// p from offset start on, each checked against the index's CRC.
func (s *S3) deliverRun(p *s3Pack, run []objects.PackEntry, data []byte, start uint64, deliver func(objects.ID, []byte) error) error {
	for _, e := range run {
		stored := data[e.Offset-start : e.Offset-start+uint64(e.Size) : e.Offset-start+uint64(e.Size)]
		if !e.Check(stored) {
			return fmt.Errorf("remote %s: object %s in %s: %w: its CRC does not match the pack index", s.url, e.ID, s.key("packs/"+p.path()+".pack"), objects.ErrCorrupt)
		}
		if err := deliver(e.ID, stored); err != nil {
			return err
		}
	}
	return nil
}

// Small packs (tree packs, mostly) are kept in memory as they are read,
// up to cacheBudget bytes in all: a fetch or a gc reads a tree pack level
// by level, and the ranges of neighbouring levels overlap.
const (
	cacheMax    = 4 << 20
	cacheBudget = 256 << 20
	// cacheGap is the largest gap between two spans to read that is read
	// too, to save a request.
	cacheGap = 4 << 10
)

// cacheable reports whether p is read through the cache, reserving its
// room on first use.
func (s *S3) cacheable(p *s3Pack) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.buf != nil {
		return true
	}
	if p.size > cacheMax || s.cacheBytes.Add(p.size) > cacheBudget {
		if p.size <= cacheMax {
			s.cacheBytes.Add(-p.size)
		}
		return false
	}
	p.buf = make([]byte, p.size)
	return true
}

// readCached delivers entries of the small pack p, reading what the
// cache lacks of them: the spans of the entries' runs, or, once the
// bytes asked of p add up to half of it, all it lacks of p. gone
// reports that the pack is not there any more.
func (s *S3) readCached(ctx context.Context, p *s3Pack, entries []objects.PackEntry, deliver func(objects.ID, []byte) error) (gone bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var want []span
	for _, run := range rangeRuns(entries) {
		want = append(want, span{run[0].Offset, run[len(run)-1].Offset + uint64(run[len(run)-1].Size)})
		p.ranged += int64(want[len(want)-1].end - want[len(want)-1].start)
	}
	if p.ranged >= p.size/2 {
		want = []span{{0, uint64(p.size)}}
	}
	for _, sp := range p.lacking(want) {
		if gone, err := s.readSpan(ctx, p, sp); gone || err != nil {
			return gone, err
		}
		p.have = addSpan(p.have, sp)
	}
	// The cache stays: each object is handed over in a copy.
	return false, s.deliverRun(p, entries, p.buf, 0, func(id objects.ID, stored []byte) error {
		return deliver(id, append([]byte(nil), stored...))
	})
}

// lacking returns the parts of want (sorted, disjoint) that p.have
// lacks, those closer than cacheGap merged.
func (p *s3Pack) lacking(want []span) []span {
	var out []span
	for _, w := range want {
		at := w.start
		for _, h := range p.have {
			if h.end <= at || h.start >= w.end {
				continue
			}
			if h.start > at {
				out = addGap(out, span{at, h.start})
			}
			at = max(at, h.end)
		}
		if at < w.end {
			out = addGap(out, span{at, w.end})
		}
	}
	return out
}

// addGap appends sp to spans, merging it with the last if they are
// closer than cacheGap.
func addGap(spans []span, sp span) []span {
	if n := len(spans); n > 0 && sp.start <= spans[n-1].end+cacheGap {
		spans[n-1].end = max(spans[n-1].end, sp.end)
		return spans
	}
	return append(spans, sp)
}

// addSpan adds sp to the sorted, disjoint spans, merging what touches.
func addSpan(spans []span, sp span) []span {
	var out []span
	for _, h := range spans {
		switch {
		case h.end < sp.start || h.start > sp.end:
			out = append(out, h)
		default:
			sp = span{min(sp.start, h.start), max(sp.end, h.end)}
		}
	}
	out = append(out, sp)
	sort.Slice(out, func(i, j int) bool { return out[i].start < out[j].start })
	return out
}

// readSpan reads sp of pack p into p.buf with one range request, again
// if it is cut off in passing.
func (s *S3) readSpan(ctx context.Context, p *s3Pack, sp span) (gone bool, err error) {
	for attempt := 1; ; attempt++ {
		var data []byte
		data, gone, err = s.readRange(ctx, p, sp.start, sp.end)
		if err == nil && !gone {
			copy(p.buf[sp.start:sp.end], data)
		}
		if err == nil || !errors.Is(err, errCutOff) || attempt >= s.limits.Attempts || ctx.Err() != nil {
			return gone, err
		}
	}
}

// Put implements Remote. An empty objs gets the remote ready to be
// written (see beginWrites). Otherwise each object is verified against
// its ID, and refused if it references an object that is neither earlier
// in objs nor present; then the objects that reference nothing are
// uploaded as one data pack and the others as one tree pack, each pack
// before its index, the data pack's index before the tree pack.
func (s *S3) Put(ctx context.Context, objs []Object) error {
	if err := s.beginWrites(ctx); err != nil || len(objs) == 0 {
		return err
	}
	leaves, interior, err := s.checkObjects(objs)
	if err != nil {
		return err
	}
	for _, part := range []struct {
		kind string
		objs []Object
	}{{packData, leaves}, {packTree, interior}} {
		if len(part.objs) == 0 {
			continue
		}
		p, err := s.uploadPack(ctx, part.kind, part.objs)
		if err != nil {
			return err
		}
		s.mu.Lock()
		for _, e := range p.entries {
			s.view.where[e.ID] = s3Slot{pack: p, entry: e}
		}
		s.view.packs[p.path()] = p
		s.mu.Unlock()
	}
	return nil
}

// checkObjects verifies objs as a receiver must (see Receive) and splits
// them into those that reference nothing and the others.
func (s *S3) checkObjects(objs []Object) (leaves, interior []Object, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	earlier := objects.Seen{}
	for _, o := range objs {
		if len(o.Stored) > MaxStoredSize {
			return nil, nil, fmt.Errorf("object %s: %w: stored form of %d bytes exceeds the limit of %d", o.ID, objects.ErrCorrupt, len(o.Stored), MaxStoredSize)
		}
		enc, err := objects.Unseal(o.ID, o.Stored)
		if err != nil {
			return nil, nil, err
		}
		_, refs, err := objects.References(enc)
		if err != nil {
			return nil, nil, fmt.Errorf("object %s: %w: %v", o.ID, objects.ErrCorrupt, err)
		}
		for _, r := range refs {
			if _, ok := earlier[r]; ok {
				continue
			}
			if _, ok := s.view.where[r]; !ok {
				return nil, nil, fmt.Errorf("object %s: %w %s (send it first)", o.ID, ErrMissingReference, r)
			}
		}
		earlier.Add(o.ID)
		if len(refs) == 0 {
			leaves = append(leaves, o)
		} else {
			interior = append(interior, o)
		}
	}
	return leaves, interior, nil
}

// uploadPack writes objs as one pack of kind: the pack, then its index.
func (s *S3) uploadPack(ctx context.Context, kind string, objs []Object) (*s3Pack, error) {
	var buf bytes.Buffer
	enc, err := objects.NewPackEncoder(&buf)
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		if err := enc.Add(o.ID, o.Stored); err != nil {
			return nil, err
		}
	}
	idx, name := enc.Index()
	p := &s3Pack{kind: kind, name: name + "-" + randomName()[:16], size: int64(buf.Len())}
	if err := s.putLarge(ctx, "packs/"+p.path()+".pack", buf.Bytes()); err != nil {
		return nil, err
	}
	if err := s.putObject(ctx, "packs/"+p.path()+".idx", idx, putPlain); err != nil {
		return nil, err
	}
	if p.entries, err = objects.DecodePackIndex(idx); err != nil {
		return nil, err
	}
	return p, nil
}

// Store returns the bucket's objects as an objects.Reader, as the remote
// sees them (see Has): for checking a bucket, as fsck checks a
// scrapbook. Objects reach a bucket only by Push, and leave it only by
// gc.
func (s *S3) Store() objects.Reader { return s3Store{s} }

type s3Store struct{ s *S3 }

func (st s3Store) Has(ctx context.Context, id objects.ID) (bool, error) {
	has, err := st.s.Has(ctx, []objects.ID{id})
	if err != nil {
		return false, err
	}
	return has[0], nil
}

func (st s3Store) Get(ctx context.Context, id objects.ID) ([]byte, error) {
	var out []byte
	err := st.s.Get(ctx, []objects.ID{id}, func(_ objects.ID, stored []byte) error {
		out = stored
		return nil
	})
	return out, err
}

func (st s3Store) List(ctx context.Context, fn func(objects.ID, int64) error) error {
	v, err := st.s.currentView(ctx)
	if err != nil {
		return err
	}
	for id, sl := range v.where {
		if err := fn(id, int64(sl.entry.Size)); err != nil {
			return err
		}
	}
	return nil
}
