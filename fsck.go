package sbuml

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/sbuml/sbuml/internal/lockfile"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/scrapbook"
)

// A Problem is one thing fsck found wrong.
type Problem struct {
	// Object is the bad or missing object, or Zero for a ref problem.
	Object objects.ID `json:"object"`
	// Where names the object's file or the ref.
	Where   string `json:"where"`
	Problem string `json:"problem"`
}

func (p Problem) String() string { return p.Where + ": " + p.Problem }

// FsckReport is the result of a full verification.
type FsckReport struct {
	Objects  int64     `json:"objects"`
	Bytes    int64     `json:"bytes"`
	Refs     int       `json:"refs"`
	Problems []Problem `json:"problems"`
	// Leftovers counts the files killed writers left in the store (packs
	// never finished), and LeftoverBytes their size: not a problem,
	// only space that sbuml gc frees.
	Leftovers     int   `json:"leftovers"`
	LeftoverBytes int64 `json:"leftover_bytes"`
	// StaleLocks are lock files left by killed writers: not a problem
	// either, the next update of what they guard removes them.
	StaleLocks []string `json:"stale_locks"`
}

// OK reports whether fsck found nothing wrong.
func (r *FsckReport) OK() bool { return len(r.Problems) == 0 }

// Fsck verifies the whole scrapbook: every object is read back, its hash
// checked and its encoding decoded; every reference must name a present
// object of the kind the referrer says; every ref must name a present
// snapshot; every reflog line must be one a writer could have written
// (refs.Store.CheckReflogs). All problems are listed, not just the first.
// Lock files left by killed writers are listed too, as StaleLocks: they
// are no problem, the next update removes them.
func (s *Scrapbook) Fsck(ctx context.Context) (*FsckReport, error) {
	// Objects come and go while gc runs: fsck does not run meanwhile.
	release, err := s.holdObjects()
	if err != nil {
		return nil, fmt.Errorf("fsck: %w", err)
	}
	defer release()
	r := &FsckReport{}
	sizes, err := s.fsckStore(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("fsck: %w", err)
	}
	kinds, expected := s.fsckObjects(ctx, r, sizes)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.fsckReferences(s.Objects, sizes, kinds, expected)
	s.fsckRefs(r, sizes, kinds)
	for _, d := range s.Refs.CheckReflogs() {
		r.Problems = append(r.Problems, Problem{Where: d.File, Problem: "damaged reflog: " + d.Problem})
	}
	if r.StaleLocks, err = s.staleLocks(); err != nil {
		return nil, fmt.Errorf("fsck: %w", err)
	}
	sort.Slice(r.Problems, func(i, j int) bool { return r.Problems[i].Where < r.Problems[j].Where })
	return r, nil
}

// fsckStore lists the objects of the store with their stored sizes, and
// notes the store's leftovers and damaged packs.
func (s *Scrapbook) fsckStore(ctx context.Context, r *FsckReport) (map[objects.ID]int64, error) {
	sizes := map[objects.ID]int64{}
	if err := s.Objects.List(ctx, func(id objects.ID, size int64) error {
		sizes[id] = size
		r.Objects++
		r.Bytes += size
		return nil
	}); err != nil {
		return nil, err
	}
	fc, ok := s.Objects.(objects.FileChecker)
	if !ok {
		return sizes, nil
	}
	names, size, err := fc.Leftovers()
	if err != nil {
		return nil, err
	}
	r.Leftovers, r.LeftoverBytes = len(names), size
	for _, err := range fc.CheckFiles(ctx) {
		r.Problems = append(r.Problems, Problem{Where: "objects/pack", Problem: err.Error()})
	}
	return sizes, nil
}

// fsckObjects reads back every object, on all cores, and returns the
// kind of each sound one and, for each object referenced, who references
// it as what.
func (s *Scrapbook) fsckObjects(ctx context.Context, r *FsckReport, sizes map[objects.ID]int64) (map[objects.ID]objects.Kind, map[objects.ID][]referrer) {
	var (
		mu       sync.Mutex
		kinds    = make(map[objects.ID]objects.Kind, len(sizes))
		expected = map[objects.ID][]referrer{}
	)
	report := func(p Problem) {
		mu.Lock()
		r.Problems = append(r.Problems, p)
		mu.Unlock()
	}
	work := make(chan objects.ID, 256)
	var wg sync.WaitGroup
	for i := 0; i < runtime.GOMAXPROCS(0); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				k, refs, p := s.fsckObject(ctx, id)
				if p != nil {
					report(*p)
					continue
				}
				mu.Lock()
				kinds[id] = k
				for _, ref := range refs {
					expected[ref.ID] = append(expected[ref.ID], referrer{id, ref.Kind})
				}
				mu.Unlock()
			}
		}()
	}
	for id := range sizes {
		if ctx.Err() != nil {
			break
		}
		work <- id
	}
	close(work)
	wg.Wait()
	return kinds, expected
}

// fsckObject reads back one object and returns its kind and references,
// or what is wrong with it.
func (s *Scrapbook) fsckObject(ctx context.Context, id objects.ID) (objects.Kind, []objects.Ref, *Problem) {
	where := objects.Where(s.Objects, id)
	stored, err := s.Objects.Get(ctx, id)
	var enc []byte
	if err == nil {
		enc, err = objects.Unseal(id, stored)
	}
	if err != nil {
		return 0, nil, &Problem{Object: id, Where: where, Problem: problemText(err)}
	}
	if !checksummed(s.Objects, id) && !bytes.Equal(stored, enc) && !bytes.Equal(objects.Compress(enc), stored) {
		// The content is intact, but bytes of the zstd frame that
		// decoding ignores have changed.
		return 0, nil, &Problem{Object: id, Where: where, Problem: "corrupt: stored bytes differ from their canonical compression (damaged zstd frame header)"}
	}
	k, refs, err := objects.Refs(enc)
	if err != nil {
		return 0, nil, &Problem{Object: id, Where: where, Problem: "corrupt: " + err.Error()}
	}
	return k, refs, nil
}

// fsckReferences reports references to missing objects and to objects
// of another kind than the referrer says.
func (r *FsckReport) fsckReferences(store objects.Store, sizes map[objects.ID]int64, kinds map[objects.ID]objects.Kind, expected map[objects.ID][]referrer) {
	for id, froms := range expected {
		k, present := kinds[id]
		_, listed := sizes[id]
		for _, f := range froms {
			switch {
			case !listed:
				r.Problems = append(r.Problems, Problem{Object: f.id, Where: objects.Where(store, f.id),
					Problem: fmt.Sprintf("references missing %s %s", f.kind, id)})
			case present && k != f.kind:
				r.Problems = append(r.Problems, Problem{Object: f.id, Where: objects.Where(store, f.id),
					Problem: fmt.Sprintf("references %s as a %s, but it is a %s", id, f.kind, k)})
			}
		}
	}
}

// fsckRefs reports refs that cannot be read or do not name a snapshot.
func (s *Scrapbook) fsckRefs(r *FsckReport, sizes map[objects.ID]int64, kinds map[objects.ID]objects.Kind) {
	all, err := s.Refs.List("refs/")
	if err != nil {
		r.Problems = append(r.Problems, Problem{Where: "refs", Problem: err.Error()})
	}
	if _, err := s.Refs.Get("HEAD"); err != nil && !isNotFound(err) {
		r.Problems = append(r.Problems, Problem{Where: "HEAD", Problem: err.Error()})
	}
	r.Refs = len(all)
	for _, ref := range all {
		k, present := kinds[ref.ID]
		_, listed := sizes[ref.ID]
		switch {
		case !listed:
			r.Problems = append(r.Problems, Problem{Object: ref.ID, Where: ref.Name, Problem: "names missing snapshot " + ref.ID.String()})
		case present && k != objects.KindSnapshot:
			r.Problems = append(r.Problems, Problem{Object: ref.ID, Where: ref.Name, Problem: fmt.Sprintf("names %s, a %s, not a snapshot", ref.ID, k)})
		}
	}
}

// staleLocks returns the lock files of refs and of the scrapbook's own
// files that no live process holds: left by writers that were killed.
func (s *Scrapbook) staleLocks() ([]string, error) {
	var locks []string
	check := func(path string) error {
		stale, err := lockfile.Stale(path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if stale {
			locks = append(locks, path)
		}
		return nil
	}
	top, err := filepath.Glob(filepath.Join(s.Dir, "*.lock"))
	if err != nil {
		return nil, err
	}
	for _, p := range top {
		if filepath.Base(p) != scrapbook.LockFile {
			if err := check(p); err != nil {
				return nil, err
			}
		}
	}
	err = filepath.WalkDir(filepath.Join(s.Dir, "refs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".lock") {
			return check(p)
		}
		return nil
	})
	return locks, err
}

type referrer struct {
	id   objects.ID
	kind objects.Kind
}

// checksummed reports whether the store and Unseal check every stored
// byte of id on reads (see objects.FileChecker).
func checksummed(s objects.Store, id objects.ID) bool {
	c, ok := s.(objects.FileChecker)
	return ok && c.Checksummed(id)
}

func problemText(err error) string {
	if errors.Is(err, objects.ErrCorrupt) {
		return "corrupt: " + err.Error()
	}
	return err.Error()
}
