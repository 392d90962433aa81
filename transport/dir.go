package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/go-git/go-billy/v5/osfs"

	"github.com/sbuml/sbuml/internal/atomicfile"
	"github.com/sbuml/sbuml/internal/lockfile"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
	"github.com/sbuml/sbuml/scrapbook"
)

// RefListFile is the name of the ref list in a published directory.
const RefListFile = "refs.json"

// Dir is a Remote on a directory of this machine: either another
// scrapbook, or a published directory (objects in packs listed in
// packs.json, refs in refs.json, see CreatePublished) which any web
// server can serve.
type Dir struct {
	path  string
	refs  refBackend
	count counter
	// release drops the gc lock of a scrapbook directory.
	release func()

	storeMu sync.Mutex
	store   objects.Store
	// reopen, for a scrapbook, opens its object store afresh (see objects).
	reopen func() objects.Store
	// upgrade, for a scrapbook, makes its config say the current format
	// before the first object is put (see scrapbook.Dir.Upgrade).
	upgrade func() error
}

// refBackend reads and updates the refs of a Dir.
type refBackend interface {
	list() (*RefList, error)
	// update is a compare-and-swap; a lost race wraps refs.ErrConflict.
	update(name string, old, new objects.ID, why string) error
}

// OpenDir opens the scrapbook or published directory at path.
func OpenDir(path string) (*Dir, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open remote %s: %w", path, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("open remote %s: %w", path, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("open remote %s: not a directory", abs)
	}
	switch {
	case scrapbook.Is(abs):
		return OpenScrapbook(abs)
	case isFile(filepath.Join(abs, RefListFile)):
		return openPublished(abs), nil
	}
	return nil, fmt.Errorf("open remote %s: neither a scrapbook (no config file) nor a published scrapbook (no %s)", abs, RefListFile)
}

// OpenScrapbook opens the scrapbook at path as a remote (for sbuml serve,
// and for OpenDir), through package scrapbook, which checks its format.
// The scrapbook's gc lock is held shared until Close, so that gc never
// removes an object a push is about to name.
func OpenScrapbook(path string) (*Dir, error) {
	book, err := scrapbook.Open(path)
	if err != nil {
		return nil, err
	}
	release, err := book.Hold()
	if err != nil {
		book.Close()
		return nil, fmt.Errorf("open remote %s: %w", book.Path, err)
	}
	return &Dir{
		path:    book.Path,
		store:   book.Objects,
		reopen:  book.NewObjects,
		upgrade: book.Upgrade,
		refs:    scrapbookRefs{book.Refs},
		release: release,
	}, nil
}

// CreatePublished opens the published directory at path for writing,
// creating it with no objects and no refs if it does not exist or is
// empty. A directory holding anything else is refused, so that
// publishing never scribbles over unrelated files.
//
// A published directory stores each object once, in a pack: the objects
// Put receives go into the pack being written, which UpdateRef and Close
// publish (pack, then index, then packs.json) before any ref names them.
func CreatePublished(path string) (*Dir, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("publish to %s: %w", path, err)
	}
	if isFile(filepath.Join(abs, RefListFile)) {
		return openPublished(abs), nil
	}
	entries, err := os.ReadDir(abs)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("publish to %s: %w", abs, err)
	}
	if len(entries) > 0 {
		return nil, fmt.Errorf("publish to %s: the directory is not empty and holds no %s; choose a new or empty directory", abs, RefListFile)
	}
	if err := os.MkdirAll(filepath.Join(abs, PackDir), 0o755); err != nil {
		return nil, fmt.Errorf("publish to %s: %w", abs, err)
	}
	d := openPublished(abs)
	if err := d.refs.(*publishedRefs).write(&RefList{Format: RefListFormat, Refs: []Ref{}}); err != nil {
		return nil, fmt.Errorf("publish to %s: %w", abs, err)
	}
	return d, nil
}

func openPublished(abs string) *Dir {
	return &Dir{
		path:  abs,
		store: objects.NewPackedIn(osfs.New(abs), PackDir, filepath.Join(abs, PackDir), "objects", filepath.Join(abs, "objects")),
		refs:  &publishedRefs{dir: abs},
	}
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// Path returns the directory.
func (d *Dir) Path() string { return d.path }

// Store returns the directory's object store.
func (d *Dir) Store() objects.Store { return d.objects() }

// objects returns the object store for one call. A scrapbook's store
// whose write failed (a full disk) writes no more, because objects it
// believed stored may not be (see objects.Packed.Err); a long-running
// server would refuse every push from then on. As Put checks every
// object's references against what the store holds (see Receive) and
// UpdateRef checks the snapshot, a fresh store can take over for the
// calls that follow: a push caught by the failure still fails, the next
// one goes through. The failed store is not closed, since calls begun on
// it may still read from it; its files close when it is collected.
func (d *Dir) objects() objects.Store {
	d.storeMu.Lock()
	defer d.storeMu.Unlock()
	if f, ok := d.store.(objects.FailStopper); ok && d.reopen != nil && f.Err() != nil {
		d.store = d.reopen()
	}
	return d.store
}

// URL implements Remote.
func (d *Dir) URL() string { return d.path }

// ListRefs implements Remote.
func (d *Dir) ListRefs(context.Context) (*RefList, error) {
	l, err := d.refs.list()
	if err != nil {
		return nil, fmt.Errorf("remote %s: %w", d.path, err)
	}
	return l, nil
}

// Has implements Remote. Another process may have added objects since
// the store last looked (a scrapbook's packs appear all at once), so a
// miss is checked again against the directory before it is reported.
func (d *Dir) Has(ctx context.Context, ids []objects.ID) ([]bool, error) {
	store := d.objects()
	has := make([]bool, len(ids))
	var missed []int
	for i, id := range ids {
		ok, err := store.Has(ctx, id)
		if err != nil {
			return nil, err
		}
		has[i] = ok
		if !ok {
			missed = append(missed, i)
		}
	}
	if len(missed) == 0 {
		return has, nil
	}
	r, ok := store.(objects.Refresher)
	if !ok {
		return has, nil
	}
	if err := r.Refresh(); err != nil {
		return nil, err
	}
	for _, i := range missed {
		ok, err := store.Has(ctx, ids[i])
		if err != nil {
			return nil, err
		}
		has[i] = ok
	}
	return has, nil
}

func (d *Dir) hasIsFree() {}

// Get implements Remote. The stored forms are checked (see readStored),
// so that damage in the directory is reported as such, not by the
// receiver.
func (d *Dir) Get(ctx context.Context, ids []objects.ID, fn func(objects.ID, []byte) error) error {
	store := d.objects()
	for _, id := range ids {
		stored, err := readStored(ctx, store, id)
		if err != nil {
			return err
		}
		d.count.received.Add(int64(len(stored)))
		if err := fn(id, stored); err != nil {
			return err
		}
	}
	return nil
}

// Put implements Remote: each object is verified and stored only if its
// references are present (see Receive).
func (d *Dir) Put(ctx context.Context, objs []Object) error {
	if d.upgrade != nil {
		if err := d.upgrade(); err != nil {
			return err
		}
	}
	store := d.objects()
	for _, o := range objs {
		d.count.sent.Add(int64(len(o.Stored)))
		if _, err := Receive(ctx, store, o.ID, o.Stored); err != nil {
			return err
		}
	}
	return nil
}

// UpdateRef implements Remote. Before the ref moves, the new snapshot is
// checked and every object stored so far is made durable and visible (in
// a published directory, listed in packs.json).
func (d *Dir) UpdateRef(ctx context.Context, name string, old, new objects.ID) error {
	if err := d.Sync(ctx); err != nil {
		return fmt.Errorf("update %s: %w", name, err)
	}
	return updateRef(ctx, d.objects(), d.refs, name, old, new, "push")
}

// updateRef checks and performs a ref update on a local store: the name
// must be valid and below refs/, the new snapshot present; the store is
// synced before the compare-and-swap.
func updateRef(ctx context.Context, s objects.Store, b refBackend, name string, old, new objects.ID, why string) error {
	if err := validatePushName(name); err != nil {
		return err
	}
	if old.IsZero() && new.IsZero() {
		return fmt.Errorf("update %s: old and new are both zero", name)
	}
	if !new.IsZero() {
		if err := checkSnapshot(ctx, s, new); err != nil {
			return fmt.Errorf("update %s: %w", name, err)
		}
		if err := s.Sync(ctx); err != nil {
			return fmt.Errorf("update %s: %w", name, err)
		}
	}
	return b.update(name, old, new, why)
}

// Traffic implements Remote: the stored bytes read and written.
func (d *Dir) Traffic() Traffic { return d.count.traffic() }

// Sync makes the objects received so far durable and visible to other
// processes: in a scrapbook, in its packs; in a published directory, to
// web clients too, in packs.json (see listPacks).
func (d *Dir) Sync(ctx context.Context) error {
	return d.listPacks(ctx)
}

// Close implements Remote: the objects received are kept (see Sync) and
// the store's files are closed.
func (d *Dir) Close() error {
	err := d.Sync(context.Background())
	if cerr := d.objects().Close(); err == nil {
		err = cerr
	}
	if d.release != nil {
		d.release()
		d.release = nil
	}
	return err
}

// scrapbookRefs are the refs of a scrapbook directory.
type scrapbookRefs struct{ s *refs.Store }

func (r scrapbookRefs) list() (*RefList, error) {
	all, err := r.s.List("refs/")
	if err != nil {
		return nil, err
	}
	l := &RefList{Format: RefListFormat, Refs: make([]Ref, 0, len(all))}
	for _, ref := range all {
		l.Refs = append(l.Refs, Ref{Name: ref.Name, ID: ref.ID})
	}
	if head, err := r.s.Symbolic("HEAD"); err == nil {
		l.Head = head
	}
	return l, nil
}

func (r scrapbookRefs) update(name string, old, new objects.ID, why string) error {
	return r.s.Update(name, old, new, why)
}

// publishedRefs keeps the refs of a published directory in refs.json,
// updated under the lock file refs.json.lock and replaced by rename, so
// a web server always serves a whole list.
type publishedRefs struct{ dir string }

func (p *publishedRefs) file() string { return filepath.Join(p.dir, RefListFile) }

func (p *publishedRefs) list() (*RefList, error) {
	data, err := os.ReadFile(p.file())
	if err != nil {
		return nil, err
	}
	return parseRefList(data, p.file(), DefaultMaxRefs)
}

func (p *publishedRefs) update(name string, old, new objects.ID, _ string) error {
	return p.locked(func(l *RefList) error {
		cur := l.Get(name)
		if cur != old {
			return casError(name, cur, old)
		}
		refs := l.Refs[:0]
		for _, r := range l.Refs {
			if r.Name != name {
				refs = append(refs, r)
			}
		}
		if !new.IsZero() {
			refs = append(refs, Ref{Name: name, ID: new})
		}
		sort.Slice(refs, func(i, j int) bool { return refs[i].Name < refs[j].Name })
		l.Refs = refs
		return nil
	})
}

// setHead records the ref HEAD names.
func (p *publishedRefs) setHead(name string) error {
	return p.locked(func(l *RefList) error {
		l.Head = name
		return nil
	})
}

// locked reads refs.json under its lock, lets change edit it, and writes
// it back.
func (p *publishedRefs) locked(change func(*RefList) error) error {
	lock, err := lockfile.Create(p.file()+".lock", 0o644, refs.LockWait)
	if errors.Is(err, lockfile.ErrHeld) {
		return fmt.Errorf("%w: %v: another publish is running", refs.ErrLocked, err)
	}
	if err != nil {
		return err
	}
	defer lock.Release()
	l, err := p.list()
	if err != nil {
		return err
	}
	if err := change(l); err != nil {
		return err
	}
	return p.write(l)
}

func (p *publishedRefs) write(l *RefList) error {
	data, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(p.file(), append(data, '\n'), 0o644)
}

// SetHead records in a published directory the ref that HEAD names.
func (d *Dir) SetHead(name string) error {
	p, ok := d.refs.(*publishedRefs)
	if !ok {
		return fmt.Errorf("remote %s: SetHead works on published directories only", d.path)
	}
	if err := validatePushName(name); err != nil {
		return err
	}
	return p.setHead(name)
}

// casError describes a lost compare-and-swap.
func casError(name string, cur, old objects.ID) error {
	switch {
	case cur.IsZero():
		return fmt.Errorf("%w: ref %s does not exist, expected %s", refs.ErrConflict, name, old)
	case old.IsZero():
		return fmt.Errorf("%w: ref %s already exists at %s, expected it not to exist", refs.ErrConflict, name, cur)
	}
	return fmt.Errorf("%w: ref %s is at %s, expected %s", refs.ErrConflict, name, cur, old)
}
