package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sbuml/sbuml/objects"
)

// generationFile holds the generation of the last gc, if one is pending.
const generationFile = "gc/generation"

// A generation is what one gc condemned, pending until a later gc
// deletes it (see GCS3).
type generation struct {
	Format int `json:"format"`
	// Condemned are the packs (paths below packs/) to delete.
	Condemned []string `json:"condemned"`
	// Vouched are packs all of whose objects were reachable from the
	// refs when the generation was made, or that gc wrote: nothing below
	// their objects is in a condemned pack only.
	Vouched []string `json:"vouched"`
	// Leases are the push leases alive once the generation was visible;
	// Sealed says that they were recorded.
	Leases []string `json:"leases"`
	Sealed bool     `json:"sealed"`
}

const generationFormat = 1

// condemnedSet returns the condemned packs of g (none for nil).
func (g *generation) condemnedSet() map[string]bool {
	set := map[string]bool{}
	if g != nil {
		for _, p := range g.Condemned {
			set[p] = true
		}
	}
	return set
}

// readGeneration returns the pending generation, or nil.
func (s *S3) readGeneration(ctx context.Context) (*generation, error) {
	b, err := s.getObject(ctx, generationFile, 64<<20)
	if errors.Is(err, objects.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var g generation
	if err := json.Unmarshal(b, &g); err != nil || g.Format != generationFormat {
		return nil, fmt.Errorf("remote %s: %s is not a gc generation of format %d; remove it if no gc runs", s.url, s.key(generationFile), generationFormat)
	}
	return &g, nil
}

func (s *S3) writeGeneration(ctx context.Context, g *generation) error {
	b, err := json.Marshal(g)
	if err != nil {
		return err
	}
	return s.putObject(ctx, generationFile, b, putPlain)
}

// GCOptions tune GCS3.
type GCOptions struct {
	// MinAge spares packs younger than this (by the store's clock) from
	// being condemned: they may belong to a push under way, whose objects
	// would otherwise be copied once its ref moves. 0 means DefaultGCMinAge;
	// a negative value spares none.
	MinAge time.Duration
}

// DefaultGCMinAge is the default GCOptions.MinAge.
const DefaultGCMinAge = time.Hour

// GCResult says what GCS3 did.
type GCResult struct {
	// Deleted packs of the previous generation, and their bytes.
	Deleted      int   `json:"deleted_packs"`
	DeletedBytes int64 `json:"deleted_bytes"`
	// Waiting is the number of pushes, begun before the previous gc, that
	// its deletions wait for (nothing was condemned then).
	Waiting int `json:"waiting_pushes"`
	// Condemned packs of this gc and their bytes; GarbageBytes is what
	// deleting them frees.
	Condemned      int   `json:"condemned_packs"`
	CondemnedBytes int64 `json:"condemned_bytes"`
	GarbageBytes   int64 `json:"garbage_bytes"`
	// Copied objects (and bytes) out of condemned packs into new ones.
	Copied      int   `json:"copied_objects"`
	CopiedBytes int64 `json:"copied_bytes"`
	// Live is the number of objects the refs reach.
	Live int `json:"live_objects"`
}

// GCS3 removes from a bucket what no ref reaches, safely while other
// hosts push, in two steps that are two runs of gc:
//
//  1. It marks what the refs reach, condemns the packs that hold enough
//     garbage (and are older than MinAge), copies the reachable objects
//     they hold into new packs, and writes the generation: the
//     condemned packs, then the push leases alive at that moment. A
//     push takes its lease before it reads the generation, so a push
//     that did not see the generation is among those leases; a push
//     that saw it treats the objects of condemned packs as absent and
//     sends them again if it needs them.
//  2. The next gc deletes the condemned packs once every lease recorded
//     has ended (its push finished, or it went stale: the push died).
//     First it walks again, from the refs and from every object in a
//     pack neither vouched for nor condemned, and copies what it finds
//     only in condemned packs: whatever a push that missed the
//     generation named in the meantime.
//
// One gc runs at a time (the lock locks/gc). A generation recorded
// without its leases (a gc killed in between) is dropped: condemning
// is undone, nothing is deleted.
func GCS3(ctx context.Context, s *S3, opts GCOptions) (*GCResult, error) {
	if opts.MinAge == 0 {
		opts.MinAge = DefaultGCMinAge
	}
	if err := s.checkScrapbook(ctx); err != nil {
		return nil, err
	}
	lock, err := s.takeGCLock(ctx)
	if err != nil {
		return nil, err
	}
	defer lock.release(context.WithoutCancel(ctx))
	res := &GCResult{}
	gen, err := s.readGeneration(ctx)
	if err != nil {
		return nil, err
	}
	if gen != nil {
		done, err := s.finishGeneration(ctx, gen, res)
		if err != nil || !done {
			return res, err
		}
	}
	if err := lock.check(); err != nil {
		return res, err
	}
	if err := s.condemn(ctx, opts, lock, res); err != nil {
		return res, err
	}
	return res, s.tidy(ctx)
}

// finishGeneration deletes the packs gen condemned, if every push that
// might have missed gen has ended, and reports whether it did.
func (s *S3) finishGeneration(ctx context.Context, gen *generation, res *GCResult) (bool, error) {
	if !gen.Sealed {
		return true, s.deleteObject(ctx, generationFile)
	}
	leases, now, err := s.listLeases(ctx)
	if err != nil {
		return false, err
	}
	for _, k := range gen.Leases {
		if t, ok := leases[k]; ok && now.Sub(t) < s.opts.Lease.Stale {
			res.Waiting++
		}
	}
	if res.Waiting > 0 {
		return false, nil
	}
	v, err := s.loadView(ctx)
	if err != nil {
		return false, err
	}
	vouched, condemned := map[string]bool{}, gen.condemnedSet()
	for _, p := range gen.Vouched {
		vouched[p] = true
	}
	covered := objects.Seen{}
	var roots []objects.Ref
	for path, p := range v.packs {
		for _, e := range p.entries {
			switch {
			case vouched[path]:
				covered.Add(e.ID)
			case !condemned[path] && p.kind == packTree:
				roots = append(roots, objects.Ref{ID: e.ID, Kind: anyKind})
			}
		}
	}
	refRoots, err := s.refRoots(ctx)
	if err != nil {
		return false, err
	}
	var rescue []copyItem
	at := map[objects.ID]int{} // index of an object in rescue
	err = s.walkRemote(ctx, append(refRoots, roots...), func(r objects.Ref) (bool, error) {
		if _, ok := covered[r.ID]; ok {
			return false, nil
		}
		if _, ok := v.where[r.ID]; ok {
			return true, nil
		}
		if _, ok := v.spare[r.ID]; ok {
			at[r.ID] = len(rescue)
			rescue = append(rescue, copyItem{id: r.ID})
			return true, nil
		}
		return false, fmt.Errorf("remote %s: object %s (%s) is missing, so the bucket is damaged; gc removed nothing", s.url, r.ID, r.Kind)
	}, func(id objects.ID, refs []objects.Ref) {
		if i, ok := at[id]; ok {
			rescue[i].interior = len(refs) > 0
		}
	})
	if err != nil {
		return false, err
	}
	n, size, _, err := s.copyOut(ctx, rescue)
	res.Copied, res.CopiedBytes = res.Copied+n, res.CopiedBytes+size
	if err != nil {
		return false, err
	}
	return true, s.deletePacks(ctx, v, gen, res)
}

// deletePacks deletes the packs gen condemned, each index before its
// pack so that no reader finds an index without its pack, then gen.
func (s *S3) deletePacks(ctx context.Context, v *packView, gen *generation, res *GCResult) error {
	for _, path := range gen.Condemned {
		if err := s.deleteObject(ctx, "packs/"+path+".idx"); err != nil {
			return err
		}
		if err := s.deleteObject(ctx, "packs/"+path+".pack"); err != nil {
			return err
		}
		res.Deleted++
		if p := v.packs[path]; p != nil {
			res.DeletedBytes += p.size
		}
	}
	return s.deleteObject(ctx, generationFile)
}

// anyKind is the kind of a walk's root whose kind is not known: the
// walk reads it and takes whatever it is.
const anyKind objects.Kind = 0

// refRoots returns the snapshots the refs name.
func (s *S3) refRoots(ctx context.Context) ([]objects.Ref, error) {
	l, err := s.ListRefs(ctx)
	if err != nil {
		return nil, err
	}
	roots := make([]objects.Ref, len(l.Refs))
	for i, r := range l.Refs {
		roots[i] = objects.Ref{ID: r.ID, Kind: objects.KindSnapshot}
	}
	return roots, nil
}

// walkRemote visits the objects reachable from roots, level by level,
// each once: enter decides whether an object is read (unless it is a
// chunk, which has nothing below it) and descended into; read is told
// the references of each object read. Objects are verified against
// their IDs and the kinds their referrers give.
func (s *S3) walkRemote(ctx context.Context, roots []objects.Ref, enter func(objects.Ref) (bool, error), read func(objects.ID, []objects.Ref)) error {
	seen := objects.Seen{}
	level := roots
	for len(level) > 0 {
		var ids []objects.ID
		kinds := map[objects.ID]objects.Kind{}
		for _, r := range level {
			if !seen.Add(r.ID) {
				continue
			}
			ok, err := enter(r)
			if err != nil {
				return err
			}
			if ok && r.Kind != objects.KindChunk {
				ids = append(ids, r.ID)
				kinds[r.ID] = r.Kind
			}
		}
		var next []objects.Ref
		for lo := 0; lo < len(ids); lo += fetchBatchObjects {
			err := s.Get(ctx, ids[lo:min(lo+fetchBatchObjects, len(ids))], func(id objects.ID, stored []byte) error {
				enc, err := objects.Unseal(id, stored)
				if err != nil {
					return err
				}
				k, refs, err := objects.Refs(enc)
				if err == nil && kinds[id] != anyKind && k != kinds[id] {
					err = fmt.Errorf("is a %s, but it is referenced as a %s", k, kinds[id])
				}
				if err != nil {
					return fmt.Errorf("remote %s: object %s: %w: %v", s.url, id, objects.ErrCorrupt, err)
				}
				read(id, refs)
				next = append(next, refs...)
				return nil
			})
			if err != nil {
				return err
			}
		}
		level = next
	}
	return nil
}

// A copyItem is an object gc copies out of a condemned pack.
type copyItem struct {
	id       objects.ID
	interior bool // it references other objects: a tree pack's
}

// copyOut writes items, read from wherever they are, into new packs:
// data packs of up to 64 MiB first, then one tree pack, so that the
// bucket keeps the closure invariant. It returns the number of objects
// and bytes copied and the new packs' paths.
func (s *S3) copyOut(ctx context.Context, items []copyItem) (int, int64, []string, error) {
	var leaves, interior []objects.ID
	for _, it := range items {
		if it.interior {
			interior = append(interior, it.id)
		} else {
			leaves = append(leaves, it.id)
		}
	}
	var paths []string
	var n int
	var size int64
	var batch []Object
	var batchBytes int
	flush := func(kind string) error {
		if len(batch) == 0 {
			return nil
		}
		p, err := s.uploadPack(ctx, kind, batch)
		if err != nil {
			return err
		}
		paths = append(paths, p.path())
		batch, batchBytes = nil, 0
		return nil
	}
	for _, part := range []struct {
		kind string
		ids  []objects.ID
	}{{packData, leaves}, {packTree, interior}} {
		for lo := 0; lo < len(part.ids); lo += fetchBatchObjects {
			err := s.Get(ctx, part.ids[lo:min(lo+fetchBatchObjects, len(part.ids))], func(id objects.ID, stored []byte) error {
				if _, err := objects.Unseal(id, stored); err != nil {
					return err
				}
				batch = append(batch, Object{ID: id, Stored: stored})
				batchBytes += len(stored)
				n++
				size += int64(len(stored))
				if part.kind == packData && batchBytes >= 64<<20 {
					return flush(packData)
				}
				return nil
			})
			if err != nil {
				return n, size, paths, err
			}
		}
		if err := flush(part.kind); err != nil {
			return n, size, paths, err
		}
	}
	return n, size, paths, nil
}

// condemn is the first step of a gc: mark, condemn, copy out, and write
// the generation with the leases alive once it is visible.
func (s *S3) condemn(ctx context.Context, opts GCOptions, lock *lease, res *GCResult) error {
	v, err := s.loadView(ctx)
	if err != nil {
		return err
	}
	roots, err := s.refRoots(ctx)
	if err != nil {
		return err
	}
	live := objects.Seen{}
	interior := objects.Seen{}
	err = s.walkRemote(ctx, roots, func(r objects.Ref) (bool, error) {
		if _, ok := v.where[r.ID]; !ok {

			return false, fmt.Errorf("remote %s: object %s (%s) is missing, so the bucket is damaged; gc removed nothing", s.url, r.ID, r.Kind)
		}
		live.Add(r.ID)
		return true, nil
	}, func(id objects.ID, refs []objects.Ref) {
		if len(refs) > 0 {
			interior.Add(id)
		}
	})
	if err != nil {
		return err
	}
	res.Live = len(live)
	gen := s.choosePacks(v, live, opts, res)
	if len(gen.Condemned) == 0 {
		return nil
	}
	// Live objects that only condemned packs hold are copied out first.
	kept := objects.Seen{}
	condemned := gen.condemnedSet()
	for path, p := range v.packs {
		if !condemned[path] {
			for _, e := range p.entries {
				kept.Add(e.ID)
			}
		}
	}
	var items []copyItem
	for id := range live {
		if _, ok := kept[id]; !ok {
			_, in := interior[id]
			items = append(items, copyItem{id: id, interior: in})
		}
	}
	n, size, paths, err := s.copyOut(ctx, items)
	res.Copied, res.CopiedBytes = res.Copied+n, res.CopiedBytes+size
	if err != nil {
		return err
	}
	gen.Vouched = append(gen.Vouched, paths...)
	if err := lock.check(); err != nil {
		return err
	}
	return s.publishGeneration(ctx, gen)
}

// choosePacks returns the generation that condemns the packs at least a
// tenth of whose bytes are garbage (objects no ref reaches, or second
// copies) and that are older than opts.MinAge, and vouches for the
// others that hold nothing but reachable objects.
func (s *S3) choosePacks(v *packView, live objects.Seen, opts GCOptions, res *GCResult) *generation {
	gen := &generation{Format: generationFormat, Condemned: []string{}, Vouched: []string{}}
	now := s.clock.now()
	paths := make([]string, 0, len(v.packs))
	for path := range v.packs {
		paths = append(paths, path)
	}
	sort.Strings(paths)
	for _, path := range paths {
		p := v.packs[path]
		var garbage int64
		allLive := true
		for _, e := range p.entries {
			_, isLive := live[e.ID]
			allLive = allLive && isLive
			if !isLive || v.where[e.ID].pack != p {
				garbage += int64(e.Size) + packRecordHeader
			}
		}
		old := opts.MinAge < 0 || now.Sub(p.modified) >= opts.MinAge
		switch {
		case garbage > 0 && garbage*10 >= p.size && old:
			gen.Condemned = append(gen.Condemned, path)
			res.Condemned++
			res.CondemnedBytes += p.size
			res.GarbageBytes += garbage
		case allLive:
			gen.Vouched = append(gen.Vouched, path)
		}
	}
	return gen
}

// publishGeneration writes gen, then records the push leases alive now
// that it is visible and seals it.
func (s *S3) publishGeneration(ctx context.Context, gen *generation) error {
	if err := s.writeGeneration(ctx, gen); err != nil {
		return err
	}
	leases, now, err := s.listLeases(ctx)
	if err != nil {
		return err
	}
	gen.Leases = []string{}
	for k, t := range leases {
		if k != gcLockKey && now.Sub(t) < s.opts.Lease.Stale {
			gen.Leases = append(gen.Leases, k)
		}
	}
	sort.Strings(gen.Leases)
	gen.Sealed = true
	return s.writeGeneration(ctx, gen)
}

// tidy removes what dead processes left: leases gone stale, probe
// objects, and multipart uploads begun longer ago than a lease lives.
func (s *S3) tidy(ctx context.Context) error {
	leases, now, err := s.listLeases(ctx)
	if err != nil {
		return err
	}
	stale := s.opts.Lease.Stale
	for k, t := range leases {
		if k != gcLockKey && now.Sub(t) > stale {
			if err := s.deleteObject(ctx, k); err != nil {
				return err
			}
		}
	}
	var probes []string
	if err := s.list(ctx, "probe/", func(name string, _ int64, t time.Time) {
		if now.Sub(t) > stale {
			probes = append(probes, "probe/"+name)
		}
	}); err != nil {
		return err
	}
	for _, k := range probes {
		if err := s.deleteObject(ctx, k); err != nil {
			return err
		}
	}
	return s.abortStaleUploads(ctx, now.Add(-stale))
}

// abortStaleUploads aborts the multipart uploads under the prefix begun
// before cutoff: pushes killed while uploading a large pack.
func (s *S3) abortStaleUploads(ctx context.Context, cutoff time.Time) error {
	cctx := s.withCount(ctx)
	p := s3.NewListMultipartUploadsPaginator(s.api, &s3.ListMultipartUploadsInput{Bucket: &s.bucket, Prefix: aws.String(s.key("packs/"))})
	for p.HasMorePages() {
		out, err := p.NextPage(cctx)
		if err != nil {
			if isS3NotImplemented(err) {
				return nil
			}
			return s.errS3("LIST uploads", s.key("packs/"), err)
		}
		for _, u := range out.Uploads {
			if aws.ToTime(u.Initiated).Before(cutoff) {
				_, err := s.api.AbortMultipartUpload(cctx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: u.Key, UploadId: u.UploadId})
				if err != nil && !isS3NotFound(err) {
					return s.errS3("abort the upload of", aws.ToString(u.Key), err)
				}
			}
		}
	}
	return nil
}
