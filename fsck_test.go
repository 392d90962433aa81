package sbuml_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/chunker"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/stream"
)

// fsckFixture is a small scrapbook holding objects of every kind: an
// imported directory (files of one and many chunks, compressible and
// not, symlinks, nested directories) and, on branch "deep", a file whose
// stream has an index tree several levels high.
type fsckFixture struct {
	s    *sbuml.Scrapbook
	main objects.ID // the imported snapshot
	deep objects.ID // the snapshot holding the deep stream
}

func newFsckFixture(t *testing.T) *fsckFixture {
	t.Helper()
	ctx := context.Background()
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "hello.txt"), []byte("hello, fsck\n"), 0o644)
	writeFile(t, filepath.Join(src, "empty"), nil, 0o600)
	writeFile(t, filepath.Join(src, "text", "jack.txt"), bytes.Repeat([]byte("all work and no play\n"), 4000), 0o644)
	writeFile(t, filepath.Join(src, "data", "random.bin"), randomBytes(3, 600*kib), 0o644)
	writeFile(t, filepath.Join(src, "data", "copy.bin"), randomBytes(3, 600*kib), 0o644)
	if err := os.Symlink("hello.txt", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(src, "a", "b", "c"), 0o755); err != nil {
		t.Fatal(err)
	}
	f := &fsckFixture{s: newScrapbook(t)}
	f.main = mustImport(t, f.s, src, sbuml.SnapshotOptions{Message: "fixture"}).ID

	// A stream cut into small chunks with a small fanout has an index
	// tree several levels high.
	saver := stream.NewSaver(f.s.Objects, 0)
	defer saver.Close()
	p := stream.Params{Chunking: chunker.Params{Kind: chunker.FastCDC, Min: 64, Avg: 256, Max: 1024}, Fanout: 4}
	data := randomBytes(4, 24*kib)
	sid, st, err := saver.SaveStream(ctx, bytes.NewReader(data), p)
	if err != nil {
		t.Fatal(err)
	}
	tree := &objects.Tree{Entries: []objects.TreeEntry{{Name: "deep.bin", Kind: objects.EntryFile, Mode: 0o644, Size: st.Length, ID: sid}}}
	tid, err := saver.SaveObject(ctx, tree.Encode())
	if err != nil {
		t.Fatal(err)
	}
	sn := &objects.Snapshot{Tree: tid, Parents: []objects.ID{f.main}, Time: time.Now(), Message: "deep index"}
	if f.deep, err = saver.SaveObject(ctx, sn.Encode()); err != nil {
		t.Fatal(err)
	}
	// Objects are published before a ref names them.
	if err := f.s.Objects.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Refs.Update("refs/heads/deep", objects.Zero, f.deep, "test"); err != nil {
		t.Fatal(err)
	}
	return f
}

// objectFile returns the path of id's file in a loose store.
func objectFile(s *sbuml.Scrapbook, id objects.ID) string {
	h := id.String()
	return filepath.Join(s.Dir, "objects", h[:2], h[2:])
}

// storedObjects lists every object in s with its kind.
func storedObjects(t *testing.T, s *sbuml.Scrapbook) map[objects.ID]objects.Kind {
	t.Helper()
	ctx := context.Background()
	kinds := map[objects.ID]objects.Kind{}
	err := s.Objects.List(ctx, func(id objects.ID, _ int64) error {
		enc, err := objects.Load(ctx, s.Objects, id)
		if err != nil {
			return err
		}
		kinds[id], err = objects.KindOf(enc)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return kinds
}

// packedObject says where a pack keeps an object's stored form.
type packedObject struct {
	pack      string // the pack file
	off, size int64
}

// readPackIndexes parses the published pack indexes of s, whose format
// docs/format.md gives: magic, count, count × (id, offset, size), checksum.
func readPackIndexes(t *testing.T, s *sbuml.Scrapbook) map[objects.ID]packedObject {
	t.Helper()
	idxs, err := filepath.Glob(filepath.Join(s.Dir, "objects", "pack", "pack-*.idx"))
	if err != nil {
		t.Fatal(err)
	}
	m := map[objects.ID]packedObject{}
	for _, idx := range idxs {
		b, err := os.ReadFile(idx)
		if err != nil {
			t.Fatal(err)
		}
		const entry = objects.IDSize + 8 + 4 + 4 // id, offset, size, crc
		n := int(binary.LittleEndian.Uint32(b[8:]))
		if len(b) != 12+n*entry+objects.IDSize {
			t.Fatalf("%s: %d bytes for %d entries", idx, len(b), n)
		}
		for i := range n {
			e := b[12+i*entry:]
			m[objects.ID(e[:objects.IDSize])] = packedObject{
				pack: strings.TrimSuffix(idx, ".idx") + ".pack",
				off:  int64(binary.LittleEndian.Uint64(e[objects.IDSize:])),
				size: int64(binary.LittleEndian.Uint32(e[objects.IDSize+8:])),
			}
		}
	}
	return m
}

// flipByte xors the byte at off of the read-only file path with mask, and
// returns a function that puts the byte back.
func flipByte(t *testing.T, path string, off int64, mask byte) (undo func()) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	xor := func() {
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		b[0] ^= mask
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	xor()
	return xor
}

// rewriteFile replaces the content of a read-only file and returns a
// function that puts the old content back.
func rewriteFile(t *testing.T, path string, data []byte) (undo func()) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	write := func(data []byte) {
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	write(data)
	return func() { write(orig) }
}

// toLoose moves every object of s out of its packs into loose files, the
// layout of older scrapbooks, and returns the scrapbook opened afresh.
func toLoose(t *testing.T, s *sbuml.Scrapbook) *sbuml.Scrapbook {
	t.Helper()
	ctx := context.Background()
	loose := objects.NewLoose(osfs.New(s.Dir), "objects", filepath.Join(s.Dir, "objects"))
	err := s.Objects.List(ctx, func(id objects.ID, _ int64) error {
		stored, err := s.Objects.Get(ctx, id)
		if err != nil {
			return err
		}
		return loose.Put(ctx, id, stored)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(s.Dir, "objects", "pack")); err != nil {
		t.Fatal(err)
	}
	s, err = sbuml.Open(s.Dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// reopen opens s afresh, as a new sbuml process would.
func reopen(t *testing.T, s *sbuml.Scrapbook) *sbuml.Scrapbook {
	t.Helper()
	s, err := sbuml.Open(s.Dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fsck runs Fsck and returns its problems.
func fsck(t *testing.T, s *sbuml.Scrapbook) []sbuml.Problem {
	t.Helper()
	r, err := s.Fsck(context.Background())
	if err != nil {
		t.Fatalf("fsck: %v", err)
	}
	return r.Problems
}

// requireOneProblem fails the test unless problems holds exactly one
// problem, at where, about object id, whose text contains every part.
func requireOneProblem(t *testing.T, problems []sbuml.Problem, where string, id objects.ID, parts ...string) {
	t.Helper()
	if len(problems) != 1 {
		t.Fatalf("fsck found %d problems, want 1 at %s: %v", len(problems), where, problems)
	}
	p := problems[0]
	if p.Where != where || p.Object != id {
		t.Errorf("problem %q is at %s about %s, want %s about %s", p, p.Where, p.Object.Short(), where, id.Short())
	}
	for _, part := range parts {
		if !strings.Contains(p.Problem, part) {
			t.Errorf("problem %q does not say %q", p, part)
		}
	}
}

// TestFsckFindsEveryFlippedByte corrupts each stored object of a
// scrapbook in turn by flipping bits of one byte, at a random place:
// fsck must name that object's location as corrupt and nothing else, and
// be clean again once the byte is restored. Objects are checked where
// sbuml writes them, in packs, and as loose files.
//
// It is long because it is one scenario: each step starts from what the
// steps before it left.
func TestFsckFindsEveryFlippedByte(t *testing.T) {
	f := newFsckFixture(t)
	kinds := storedObjects(t, f.s)
	count := map[objects.Kind]int{}
	compressed, levels := 0, map[uint8]bool{}
	for id, k := range kinds {
		count[k]++
		stored, err := f.s.Objects.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.HasPrefix(stored, zstdMagic) {
			compressed++
		}
		if k == objects.KindIndex {
			x, err := objects.LoadIndex(context.Background(), f.s.Objects, id)
			if err != nil {
				t.Fatal(err)
			}
			levels[x.Level] = true
		}
	}
	t.Logf("%d objects: %v; %d compressed; index levels %v", len(kinds), count, compressed, levels)
	for k := objects.KindChunk; k <= objects.KindSnapshot; k++ {
		if count[k] == 0 {
			t.Fatalf("the fixture has no %s object", k)
		}
	}
	if !levels[0] || !levels[1] || !levels[2] {
		t.Fatalf("the fixture's index nodes have levels %v, want 0, 1 and 2", levels)
	}
	if compressed == 0 || compressed == len(kinds) {
		t.Fatalf("%d of %d objects are stored compressed, want some but not all", compressed, len(kinds))
	}
	requireFsckClean(t, f.s)

	// Visit the objects by kind and ID so that the same bytes are flipped
	// in every run (but those of the snapshots, whose IDs depend on
	// the time, and which come last).
	ids := slices.SortedFunc(maps.Keys(kinds), func(a, b objects.ID) int {
		if kinds[a] != kinds[b] {
			return int(kinds[a]) - int(kinds[b])
		}
		return bytes.Compare(a[:], b[:])
	})
	rng := rand.New(rand.NewPCG(2, 7))
	check := func(t *testing.T, s *sbuml.Scrapbook, id objects.ID, file string, at, size int64) {
		mask := byte(1 + rng.IntN(255))
		undo := flipByte(t, file, at, mask)
		problems := fsck(t, s)
		undo()
		where := objects.Where(s.Objects, id)
		if !strings.HasPrefix(where, file) {
			t.Fatalf("object %s is in %s, but fsck would say it is at %s", id.Short(), file, where)
		}
		if len(problems) != 1 || problems[0].Where != where || problems[0].Object != id ||
			!strings.Contains(problems[0].Problem, "corrupt") {
			t.Errorf("%s %s (%d bytes), byte at %d xor %#02x: fsck says %v, want one problem: %s: corrupt…",
				kinds[id], id.Short(), size, at, mask, problems, where)
		}
		if problems := fsck(t, s); len(problems) != 0 {
			t.Fatalf("%s restored, fsck still says %v", where, problems)
		}
	}

	t.Run("packed", func(t *testing.T) {
		packed := readPackIndexes(t, f.s)
		if len(packed) != len(kinds) {
			t.Fatalf("the pack indexes list %d objects, the store %d", len(packed), len(kinds))
		}
		for _, id := range ids {
			loc := packed[id]
			check(t, f.s, id, loc.pack, loc.off+rng.Int64N(loc.size), loc.size)
		}
	})
	t.Run("loose", func(t *testing.T) {
		s := toLoose(t, f.s)
		for _, id := range ids {
			file := objectFile(s, id)
			fi, err := os.Stat(file)
			if err != nil {
				t.Fatal(err)
			}
			check(t, s, id, file, rng.Int64N(fi.Size()), fi.Size())
		}
	})
}

// zstdMagic starts the stored form of a compressed object.
var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// TestFsckFindsZstdHeaderFlips flips bits of compressed objects' zstd
// frame headers that a decoder may ignore without changing the decoded
// bytes: the unused bit of the frame header descriptor, and the window
// size of a frame that declares one (small objects) while the window
// stays large enough. The stored bytes are no longer those sbuml wrote,
// so fsck must call the object corrupt.
func TestFsckFindsZstdHeaderFlips(t *testing.T) {
	tests := []struct {
		name string
		// fits reports whether a compressed stored form has the field.
		fits      func(stored []byte) bool
		at        int64
		mask      byte
		condition string
	}{
		{"unused bit", func([]byte) bool { return true }, 4, 0x10, "a frame header"},
		{"window descriptor", func(b []byte) bool { return b[4]&0x20 == 0 }, 5, 0x01, "a window descriptor"},
	}
	f := newFsckFixture(t)
	packed := readPackIndexes(t, f.s)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for id, loc := range packed {
				stored, err := f.s.Objects.Get(context.Background(), id)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.HasPrefix(stored, zstdMagic) || !tt.fits(stored) {
					continue
				}
				undo := flipByte(t, loc.pack, loc.off+tt.at, tt.mask)
				defer undo()
				requireOneProblem(t, fsck(t, f.s), objects.Where(f.s.Objects, id), id, "corrupt")
				return
			}
			t.Fatalf("no compressed object with %s in the fixture", tt.condition)
		})
	}
}

// TestFsckDamagedPacks damages the pack files themselves: fsck must name
// the damaged file, and an undamaged scrapbook again once it is repaired.
func TestFsckDamagedPacks(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 9))
	tests := []struct {
		name string
		// damage damages the pack holding the fixture's main snapshot and
		// returns the file fsck must name.
		damage func(t *testing.T, f *fsckFixture, loc packedObject) (file string, undo func())
	}{
		{"index byte", func(t *testing.T, f *fsckFixture, loc packedObject) (string, func()) {
			idx := strings.TrimSuffix(loc.pack, ".pack") + ".idx"
			fi, err := os.Stat(idx)
			if err != nil {
				t.Fatal(err)
			}
			return idx, flipByte(t, idx, rng.Int64N(fi.Size()), byte(1+rng.IntN(255)))
		}},
		{"truncated index", func(t *testing.T, f *fsckFixture, loc packedObject) (string, func()) {
			idx := strings.TrimSuffix(loc.pack, ".pack") + ".idx"
			return idx, rewriteFile(t, idx, []byte("SBPIDX\x00\x01"))
		}},
		{"record header", func(t *testing.T, f *fsckFixture, loc packedObject) (string, func()) {
			// The id and size in front of the stored form, which
			// exist to rebuild a lost index.
			return loc.pack, flipByte(t, loc.pack, loc.off-1-rng.Int64N(objects.IDSize+4), byte(1+rng.IntN(255)))
		}},
		{"pack magic", func(t *testing.T, f *fsckFixture, loc packedObject) (string, func()) {
			return loc.pack, flipByte(t, loc.pack, rng.Int64N(8), byte(1+rng.IntN(255)))
		}},
		{"missing pack", func(t *testing.T, f *fsckFixture, loc packedObject) (string, func()) {
			moved := loc.pack + ".moved"
			if err := os.Rename(loc.pack, moved); err != nil {
				t.Fatal(err)
			}
			return loc.pack, func() { os.Rename(moved, loc.pack) }
		}},
		{"truncated pack", func(t *testing.T, f *fsckFixture, loc packedObject) (string, func()) {
			b, err := os.ReadFile(loc.pack)
			if err != nil {
				t.Fatal(err)
			}
			return loc.pack, rewriteFile(t, loc.pack, b[:len(b)-1])
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFsckFixture(t)
			loc := readPackIndexes(t, f.s)[f.main]
			file, undo := tt.damage(t, f, loc)
			s := reopen(t, f.s)
			r, err := s.Fsck(context.Background())
			undo()
			if err != nil {
				t.Fatalf("fsck: %v; want a report naming %s", err, file)
			}
			named := false
			for _, p := range r.Problems {
				t.Logf("fsck: %s", p)
				named = named || strings.Contains(p.String(), file)
			}
			if !named {
				t.Errorf("fsck says %v, want a problem naming %s", r.Problems, file)
			}
			requireFsckClean(t, reopen(t, f.s))
		})
	}
}

// TestFsckDamagedObjects checks what fsck reports for objects that are
// missing, truncated or referenced as the wrong kind, and for refs that
// name missing objects or objects that are not snapshots.
//
// It is long because of its table: one case of damage, with how to make
// and undo it, a few lines each.
func TestFsckDamagedObjects(t *testing.T) {
	ctx := context.Background()
	f := newFsckFixture(t)
	// Objects in packs cannot be deleted one by one: use loose files.
	s := toLoose(t, f.s)
	main, err := objects.LoadSnapshot(ctx, s.Objects, f.main)
	if err != nil {
		t.Fatal(err)
	}
	root, err := objects.LoadTree(ctx, s.Objects, main.Tree)
	if err != nil {
		t.Fatal(err)
	}
	hello := root.Find("hello.txt")
	link := root.Find("link")
	dataDir := root.Find("data")
	helloStream, err := objects.LoadStream(ctx, s.Objects, hello.ID)
	if err != nil {
		t.Fatal(err)
	}
	helloIndex, err := objects.LoadIndex(ctx, s.Objects, helloStream.Root)
	if err != nil {
		t.Fatal(err)
	}
	helloChunk := helloIndex.Entries[0].ID

	// remove deletes an object and returns a function that puts it back.
	remove := func(t *testing.T, id objects.ID) func() {
		path := objectFile(s, id)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		return func() {
			if err := os.WriteFile(path, data, 0o444); err != nil {
				t.Fatal(err)
			}
		}
	}

	tests := []struct {
		name   string
		damage func(t *testing.T) (undo func())
		where  string
		object objects.ID
		parts  []string
	}{
		{
			name:   "missing chunk",
			damage: func(t *testing.T) func() { return remove(t, helloChunk) },
			where:  objectFile(s, helloStream.Root), object: helloStream.Root,
			parts: []string{"references missing chunk " + helloChunk.String()},
		},
		{
			name:   "missing symlink target",
			damage: func(t *testing.T) func() { return remove(t, link.ID) },
			where:  objectFile(s, main.Tree), object: main.Tree,
			parts: []string{"references missing chunk " + link.ID.String()},
		},
		{
			name:   "missing index node",
			damage: func(t *testing.T) func() { return remove(t, helloStream.Root) },
			where:  objectFile(s, hello.ID), object: hello.ID,
			parts: []string{"references missing index " + helloStream.Root.String()},
		},
		{
			name:   "missing subtree",
			damage: func(t *testing.T) func() { return remove(t, dataDir.ID) },
			where:  objectFile(s, main.Tree), object: main.Tree,
			parts: []string{"references missing tree " + dataDir.ID.String()},
		},
		{
			name:   "missing root tree",
			damage: func(t *testing.T) func() { return remove(t, main.Tree) },
			where:  objectFile(s, f.main), object: f.main,
			parts: []string{"references missing tree " + main.Tree.String()},
		},
		{
			name: "missing parent and branch tip",
			damage: func(t *testing.T) func() {
				// The deep snapshot's parent is main's tip: both
				// the snapshot and the ref report it.
				return remove(t, f.main)
			},
			where: objectFile(s, f.deep), object: f.deep,
			parts: []string{"references missing snapshot " + f.main.String()},
		},
		{
			name: "truncated object",
			damage: func(t *testing.T) func() {
				path := objectFile(s, main.Tree)
				orig, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				return rewriteFile(t, path, orig[:len(orig)/2])
			},
			where: objectFile(s, main.Tree), object: main.Tree,
			parts: []string{"corrupt"},
		},
		{
			name:   "empty object file",
			damage: func(t *testing.T) func() { return rewriteFile(t, objectFile(s, helloChunk), nil) },
			where:  objectFile(s, helloChunk), object: helloChunk,
			parts: []string{"corrupt"},
		},
		{
			name: "ref to a missing snapshot",
			damage: func(t *testing.T) func() {
				return updateRef(t, s, "refs/heads/ghost", objects.Sum([]byte("no such snapshot")))
			},
			where: "refs/heads/ghost", object: objects.Sum([]byte("no such snapshot")),
			parts: []string{"names missing snapshot " + objects.Sum([]byte("no such snapshot")).String()},
		},
		{
			name:   "tag naming a tree",
			damage: func(t *testing.T) func() { return updateRef(t, s, "refs/tags/tree", main.Tree) },
			where:  "refs/tags/tree", object: main.Tree,
			parts: []string{"a tree, not a snapshot"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			undo := tt.damage(t)
			problems := fsck(t, s)
			undo()
			if tt.name == "missing parent and branch tip" {
				// main names the missing snapshot too.
				if len(problems) != 2 || problems[1].Where != "refs/heads/main" ||
					!strings.Contains(problems[1].Problem, "names missing snapshot "+f.main.String()) {
					t.Errorf("fsck says %v, want refs/heads/main reported as naming a missing snapshot", problems)
				}
				problems = problems[:min(1, len(problems))]
			}
			requireOneProblem(t, problems, tt.where, tt.object, tt.parts...)
			requireFsckClean(t, s)
		})
	}

	t.Run("wrong kind", func(t *testing.T) {
		// A tree whose directory entry names a stream.
		bad := &objects.Tree{Entries: []objects.TreeEntry{{Name: "dir", Kind: objects.EntryDir, Mode: 0o755, Size: hello.Size, ID: hello.ID}}}
		enc := bad.Encode()
		id := objects.Sum(enc)
		loose := objects.NewLoose(osfs.New(s.Dir), "objects", filepath.Join(s.Dir, "objects"))
		if err := loose.Put(ctx, id, objects.Seal(enc, nil)); err != nil {
			t.Fatal(err)
		}
		requireOneProblem(t, fsck(t, s), objectFile(s, id), id,
			"references "+hello.ID.String()+" as a tree, but it is a stream")
		if err := loose.Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
		requireFsckClean(t, s)
	})

	t.Run("leftover temporary file", func(t *testing.T) {
		// A writer killed before renaming its temporary file leaves
		// it behind: that is not a problem.
		tmp := filepath.Join(s.Dir, "objects", main.Tree.String()[:2], ".tmp-0123456789abcdef")
		if err := os.WriteFile(tmp, []byte("half an obj"), 0o444); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(tmp)
		requireFsckClean(t, s)
	})
}

// updateRef points ref at id and returns a function that deletes it again.
func updateRef(t *testing.T, s *sbuml.Scrapbook, ref string, id objects.ID) func() {
	t.Helper()
	if err := s.Refs.Update(ref, objects.Zero, id, "test"); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := s.Refs.Update(ref, id, objects.Zero, "test"); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFsckCommand runs `sbuml fsck` on a clean and on a damaged scrapbook:
// it lists each problem on its own line and exits 1 if there is any.
func TestFsckCommand(t *testing.T) {
	bin := sbumlCommand(t)
	f := newFsckFixture(t)
	run := func(args ...string) (stdout, stderr string, code int) {
		cmd := exec.Command(bin, append([]string{"--scrapbook", f.s.Dir}, args...)...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), errOut.String(), code
	}

	out, errOut, code := run("fsck")
	if code != 0 || errOut != "" || !strings.HasSuffix(out, " 0 problems\n") {
		t.Fatalf("fsck of a clean scrapbook: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	// Damage the root tree of main.
	ctx := context.Background()
	sn, err := objects.LoadSnapshot(ctx, f.s.Objects, f.main)
	if err != nil {
		t.Fatal(err)
	}
	loc := readPackIndexes(t, f.s)[sn.Tree]
	undo := flipByte(t, loc.pack, loc.off+loc.size/2, 0xff)
	where := objects.Where(f.s.Objects, sn.Tree)

	out, errOut, code = run("fsck")
	if code != 1 {
		t.Errorf("fsck of a damaged scrapbook exits %d, want 1", code)
	}
	if errOut != "" {
		t.Errorf("fsck wrote %q to stderr, want nothing but its report on stdout", errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], where+": corrupt") || !strings.HasSuffix(lines[1], " 1 problems") {
		t.Errorf("fsck output:\n%s\nwant one line %q and a summary of 1 problem", out, where+": corrupt…")
	}

	out, _, code = run("fsck", "--json")
	var r sbuml.FsckReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("fsck --json: %v\n%s", err, out)
	}
	if code != 1 || len(r.Problems) != 1 || r.Problems[0].Where != where || r.Problems[0].Object != sn.Tree || r.Refs != 2 {
		t.Errorf("fsck --json: exit %d, report %+v", code, r)
	}
	undo()

	// A missing object is reported by the object that names it.
	root, err := objects.LoadTree(ctx, f.s.Objects, sn.Tree)
	if err != nil {
		t.Fatal(err)
	}
	s := toLoose(t, f.s)
	link := root.Find("link")
	if err := os.Remove(objectFile(s, link.ID)); err != nil {
		t.Fatal(err)
	}
	out, _, code = run("fsck")
	want := objectFile(s, sn.Tree) + ": references missing chunk " + link.ID.String()
	if code != 1 || !strings.HasPrefix(out, want+"\n") {
		t.Errorf("fsck: exit %d, output:\n%s\nwant it to start with %q", code, out, want)
	}
}
