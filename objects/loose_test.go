package objects_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/memfs"
	"github.com/go-git/go-billy/v5/osfs"

	"github.com/sbuml/sbuml/objects"
)

// looseFixture is a Loose store and the file system under it.
type looseFixture struct {
	store   *objects.Loose
	fs      billy.Filesystem
	hostDir string // the objects directory on the host, "" for memfs
}

// looseBackends open an empty Loose store on each kind of file system it
// is used with: memory in tests, and a host directory through osfs with
// its default (chroot) and bound options.
var looseBackends = []struct {
	name string
	open func(t *testing.T) looseFixture
}{
	{"memfs", func(t *testing.T) looseFixture {
		fs := memfs.New()
		return looseFixture{objects.NewLoose(fs, "objects", ""), fs, ""}
	}},
	{"osfs", func(t *testing.T) looseFixture {
		dir := t.TempDir()
		fs := osfs.New(dir)
		host := filepath.Join(dir, "objects")
		return looseFixture{objects.NewLoose(fs, "objects", host), fs, host}
	}},
	{"osfs-bound", func(t *testing.T) looseFixture {
		dir := t.TempDir()
		fs := osfs.New(dir, osfs.WithBoundOS())
		host := filepath.Join(dir, "objects")
		return looseFixture{objects.NewLoose(fs, "objects", host), fs, host}
	}},
}

// forEachBackend runs test on a fresh store of every backend.
func forEachBackend(t *testing.T, test func(t *testing.T, f looseFixture)) {
	for _, b := range looseBackends {
		t.Run(b.name, func(t *testing.T) { test(t, b.open(t)) })
	}
}

// storedObject is a sealed object ready to Put.
type storedObject struct {
	id     objects.ID
	stored []byte
}

func sealed(e []byte) storedObject { return storedObject{objects.Sum(e), objects.Seal(e, nil)} }

func listAll(t *testing.T, s objects.Store) map[objects.ID]int64 {
	t.Helper()
	got := map[objects.ID]int64{}
	err := s.List(context.Background(), func(id objects.ID, size int64) error {
		if _, dup := got[id]; dup {
			t.Errorf("List reported %s twice", id)
		}
		got[id] = size
		return nil
	})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return got
}

func TestLooseGetMissing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f looseFixture) {
		ctx := context.Background()
		id := idOf("missing")
		for _, when := range []string{"empty store", "fan-out directory exists"} {
			_, err := f.store.Get(ctx, id)
			if !errors.Is(err, objects.ErrNotFound) {
				t.Fatalf("%s: Get of a missing object: %v, want ErrNotFound", when, err)
			}
			if !strings.Contains(err.Error(), id.String()) {
				t.Errorf("%s: error %q does not name the object", when, err)
			}
			if _, err := objects.Load(ctx, f.store, id); !errors.Is(err, objects.ErrNotFound) {
				t.Errorf("%s: Load of a missing object: %v", when, err)
			}
			// Make a neighbour in the same fan-out directory.
			var n objects.ID
			n[0] = id[0]
			n[31] = 1
			if err := f.store.Put(ctx, n, []byte{1, 1}); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestLooseConcurrentPutSameObject has many goroutines store the same
// object at once: all must succeed, the object must be whole, and no
// temporary file may stay behind.
func TestLooseConcurrentPutSameObject(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f looseFixture) {
		ctx := context.Background()
		o := sealed(objects.EncodeChunk(randomBytes(5, 256<<10)))
		const writers = 16
		var wg sync.WaitGroup
		errs := make([]error, writers)
		start := make(chan struct{})
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = f.store.Put(ctx, o.id, o.stored)
			}()
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("writer %d: %v", i, err)
			}
		}
		if _, err := objects.Load(ctx, f.store, o.id); err != nil {
			t.Fatalf("Load after concurrent Puts: %v", err)
		}
		if got := mustGet(t, f.store, o.id); !bytes.Equal(got, o.stored) {
			t.Errorf("stored form after concurrent Puts has %d bytes, want %d", len(got), len(o.stored))
		}
		h := o.id.String()
		names := dirNames(t, f.fs, path.Join("objects", h[:2]))
		if !slices.Equal(names, []string{h[2:]}) {
			t.Errorf("fan-out directory holds %q, want only the object", names)
		}
	})
}

// TestLooseListSkipsStrays plants what killed writers and other tools
// leave in a store; List must report only objects.
func TestLooseListSkipsStrays(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f looseFixture) {
		ctx := context.Background()
		o := sealed(objects.EncodeChunk([]byte("kept")))
		if err := f.store.Put(ctx, o.id, o.stored); err != nil {
			t.Fatal(err)
		}
		h := o.id.String()
		strays := []string{
			path.Join("objects", h[:2], ".tmp-0123456789abcdef"),       // killed writer
			path.Join("objects", h[:2], ".tmp-"+h[7:]),                 // as long as an object name
			path.Join("objects", h[:2], strings.Repeat("x", len(h)-2)), // not hex
			path.Join("objects", h[:2], h[2:]+".bak"),
			path.Join("objects", "README"),
			path.Join("objects", "abc", h[3:]), // fan-out name of 3 digits
			path.Join("objects", "zz", h[2:]),  // fan-out name not hex
		}
		for _, name := range strays {
			writeFile(t, f.fs, name, []byte("stray"))
		}
		if err := f.fs.MkdirAll(path.Join("objects", h[:2], strings.Repeat("0", len(h)-2)), 0o755); err != nil {
			t.Fatal(err)
		}
		got := listAll(t, f.store)
		if len(got) != 1 || got[o.id] != int64(len(o.stored)) {
			t.Errorf("List gave %v, want only %s", got, o.id.Short())
		}
	})
}

// TestLooseSyncMissingDir: a store whose directory is gone says so.
func TestLooseSyncMissingDir(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "gone")
	err := objects.NewLoose(osfs.New(missing), "objects", missing).Sync(context.Background())
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("Sync of a missing directory: %v, want an error naming it", err)
	}
}

func TestLooseLocate(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f looseFixture) {
		ctx := context.Background()
		o := sealed(objects.EncodeChunk([]byte("here")))
		if err := f.store.Put(ctx, o.id, o.stored); err != nil {
			t.Fatal(err)
		}
		h := o.id.String()
		loc := f.store.Locate(o.id)
		if objects.Where(f.store, o.id) != loc {
			t.Errorf("Where = %q, Locate = %q", objects.Where(f.store, o.id), loc)
		}
		if f.hostDir == "" {
			if want := path.Join("objects", h[:2], h[2:]); loc != want {
				t.Errorf("Locate = %q, want %q", loc, want)
			}
			return
		}
		if want := filepath.Join(f.hostDir, h[:2], h[2:]); loc != want {
			t.Errorf("Locate = %q, want %q", loc, want)
		}
		b, err := os.ReadFile(loc)
		if err != nil || !bytes.Equal(b, o.stored) {
			t.Errorf("the file Locate names does not hold the object: %v", err)
		}
	})
	// A Store that cannot locate is described by the ID.
	id := idOf("x")
	if got := objects.Where(storeOnly{objects.NewLoose(memfs.New(), "o", "")}, id); got != id.String() {
		t.Errorf("Where without a Locator = %q", got)
	}
}

func compareIDs(a, b objects.ID) int { return bytes.Compare(a[:], b[:]) }

// storeOnly hides every method of a Store but the interface's.
type storeOnly struct{ objects.Store }

// TestSaveAndLoad goes through the sealing helpers, and checks that
// damage on disk comes back as ErrCorrupt naming the file.
func TestSaveAndLoad(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f looseFixture) {
		ctx := context.Background()
		s := f.store
		body := textBytes(2, 10000)
		chunkID, size, err := objects.Save(ctx, s, objects.EncodeChunk(body))
		if err != nil {
			t.Fatal(err)
		}
		if size >= len(body) {
			t.Errorf("Save stored %d bytes of text uncompressed (%d)", len(body), size)
		}
		tree := &objects.Tree{Entries: []objects.TreeEntry{{Name: "f", Kind: objects.EntrySymlink, Mode: 0o777, Size: uint64(len(body)), ID: chunkID}}}
		treeID, _, err := objects.Save(ctx, s, tree.Encode())
		if err != nil {
			t.Fatal(err)
		}
		x := &objects.Index{Entries: []objects.IndexEntry{{ID: chunkID, Length: uint64(len(body))}}}
		indexID, _, _ := objects.Save(ctx, s, x.Encode())
		st := &objects.Stream{Length: uint64(len(body)), Root: indexID}
		streamID, _, _ := objects.Save(ctx, s, st.Encode())
		snap := &objects.Snapshot{Tree: treeID, Time: time.Unix(1700000000, 5), Message: "m"}
		snapID, _, _ := objects.Save(ctx, s, snap.Encode())

		if got, err := objects.LoadChunk(ctx, s, chunkID); err != nil || !bytes.Equal(got, body) {
			t.Errorf("LoadChunk: %v", err)
		}
		if got, err := objects.LoadTree(ctx, s, treeID); err != nil || !sameObject(got, tree) {
			t.Errorf("LoadTree: %v", err)
		}
		if got, err := objects.LoadIndex(ctx, s, indexID); err != nil || !sameObject(got, x) {
			t.Errorf("LoadIndex: %v", err)
		}
		if got, err := objects.LoadStream(ctx, s, streamID); err != nil || !sameObject(got, st) {
			t.Errorf("LoadStream: %v", err)
		}
		if got, err := objects.LoadSnapshot(ctx, s, snapID); err != nil || !sameObject(got, snap) {
			t.Errorf("LoadSnapshot: %v", err)
		}

		// The wrong loader for a kind.
		_, err = objects.LoadTree(ctx, s, chunkID)
		if !errors.Is(err, objects.ErrCorrupt) || !strings.Contains(err.Error(), "is a chunk, not a tree") {
			t.Errorf("LoadTree of a chunk: %v", err)
		}

		// A well-hashed object that does not decode.
		bad := enc(objects.KindTree, uv(2), treeEntry("b", 1, 0, 0, chunkID), treeEntry("a", 1, 0, 0, chunkID))
		badID, _, _ := objects.Save(ctx, s, bad)
		_, err = objects.LoadTree(ctx, s, badID)
		if !errors.Is(err, objects.ErrCorrupt) || !strings.Contains(err.Error(), "not sorted") || !strings.Contains(err.Error(), s.Locate(badID)) {
			t.Errorf("LoadTree of an unsorted tree: %v", err)
		}

		// Damage on disk.
		damaged := append(bytes.Clone(mustGet(t, s, treeID)), 0)
		if err := s.Delete(ctx, treeID); err != nil {
			t.Fatal(err)
		}
		if err := s.Put(ctx, treeID, damaged); err != nil {
			t.Fatal(err)
		}
		_, err = objects.LoadTree(ctx, s, treeID)
		if !errors.Is(err, objects.ErrCorrupt) || !strings.Contains(err.Error(), s.Locate(treeID)) {
			t.Errorf("LoadTree of a damaged file: %v, want ErrCorrupt naming %s", err, s.Locate(treeID))
		}
	})
}

func mustGet(t *testing.T, s objects.Store, id objects.ID) []byte {
	t.Helper()
	b, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, fs billy.Filesystem, name string, b []byte) {
	t.Helper()
	if err := fs.MkdirAll(path.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := fs.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func dirNames(t *testing.T, fs billy.Filesystem, dir string) []string {
	t.Helper()
	infos, err := fs.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, fi := range infos {
		names = append(names, fi.Name())
	}
	slices.Sort(names)
	return names
}
