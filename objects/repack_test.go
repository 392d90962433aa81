package objects

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-billy/v5/osfs"
)

// packedDir returns a directory for a scrapbook's objects and a function
// that opens a new Packed store on it, as a new process would.
func packedDir(t *testing.T) (string, func() *Packed) {
	dir := t.TempDir()
	fsys := osfs.New(dir)
	return dir, func() *Packed { return NewPacked(fsys, "objects", filepath.Join(dir, "objects")) }
}

// packNames lists the published pack files in a scrapbook's objects dir.
func packNames(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(dir, "objects", "pack"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		if strings.HasSuffix(de.Name(), ".pack") {
			names = append(names, de.Name())
		}
	}
	return names
}

// repack plans and carries out a repack of s that keeps what keep says.
func repack(t *testing.T, s *Packed, keep func(ID) bool) (RepackStats, error) {
	t.Helper()
	plan, err := s.PlanRepack(context.Background(), keep)
	if err != nil {
		return RepackStats{}, err
	}
	return s.Repack(context.Background(), plan, nil)
}

// TestRepack drops one set of objects of three, and a second copy of a
// kept one, and merges what is kept into one pack.
// It is long because it is one scenario: each step starts from what the
// steps before it left.
func TestRepack(t *testing.T) {
	ctx := context.Background()
	dir, open := packedDir(t)
	s := open()

	// Three packs (three syncs), and a loose object.
	var sets []map[ID][]byte
	for i := 0; i < 3; i++ {
		sets = append(sets, putChunks(t, s, 200, int64(i+1)))
		if err := s.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	looseEnc := EncodeChunk([]byte("a loose object, from an older scrapbook"))
	looseID := Sum(looseEnc)
	if err := s.loose.Put(ctx, looseID, Seal(looseEnc, nil)); err != nil {
		t.Fatal(err)
	}
	// A second copy of a kept object, in a pack of its own.
	dupID := firstKey(sets[0])
	other := open()
	other.mu.Lock()
	other.loaded = true // blind to the packs: it writes the copy anyway
	other.mu.Unlock()
	if err := other.Put(ctx, dupID, Seal(sets[0][dupID], nil)); err != nil {
		t.Fatal(err)
	}
	if err := other.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(packNames(t, dir)); n != 4 {
		t.Fatalf("%d packs before repack, want 4", n)
	}

	// Keep sets 0 and 2 and the loose object; drop set 1.
	keep := map[ID]bool{looseID: true}
	for _, i := range []int{0, 2} {
		for id := range sets[i] {
			keep[id] = true
		}
	}
	keepFn := func(id ID) bool { return keep[id] }

	s = open()
	plan, err := s.PlanRepack(ctx, keepFn)
	if err != nil {
		t.Fatal(err)
	}
	dry := plan.Stats
	if n := len(packNames(t, dir)); n != 4 || dry.Removed == 0 {
		t.Fatalf("the plan: %d packs left, stats %+v", n, dry)
	}

	st, err := s.Repack(ctx, plan, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Removed != dry.Removed || st.Kept != dry.Kept || st.Copied != dry.Copied || st.PacksAfter != dry.PacksAfter {
		t.Errorf("the plan said %+v, repack did %+v", dry, st)
	}
	if st.Kept != int64(len(keep)) || st.Removed != int64(len(sets[1])+1) || st.PacksBefore != 4 || st.PacksAfter != 1 || st.LooseBefore != 1 {
		t.Errorf("stats %+v: want %d kept, %d removed, 4 packs -> 1, 1 loose", st, len(keep), len(sets[1])+1)
	}
	if st.FileBytesAfter >= st.FileBytesBefore {
		t.Errorf("files grew: %d -> %d bytes", st.FileBytesBefore, st.FileBytesAfter)
	}
	if names := packNames(t, dir); len(names) != 1 {
		t.Fatalf("packs after repack: %v", names)
	}
	if des, _ := os.ReadDir(filepath.Join(dir, "objects")); len(des) != 1 {
		t.Errorf("objects/ holds more than pack/ after repack: %d entries (loose objects left?)", len(des))
	}

	// Both the store that repacked and a fresh one see exactly what was kept.
	for _, st := range []*Packed{s, open()} {
		for i, set := range sets {
			for id, enc := range set {
				got, err := Load(ctx, st, id)
				if keep[id] {
					if err != nil || !bytes.Equal(got, enc) {
						t.Fatalf("set %d: kept %s: %v", i, id.Short(), err)
					}
				} else if ok, _ := st.Has(ctx, id); ok {
					t.Fatalf("set %d: dropped %s is still there", i, id.Short())
				}
			}
		}
		if got, err := Load(ctx, st, looseID); err != nil || !bytes.Equal(got, looseEnc) {
			t.Fatalf("loose object after repack: %v", err)
		}
		if errs := st.CheckFiles(ctx); len(errs) != 0 {
			t.Fatalf("packs after repack: %v", errs)
		}
	}

	// Nothing more to do: a second repack leaves the one pack alone.
	again, err := repack(t, open(), keepFn)
	if err != nil {
		t.Fatal(err)
	}
	if again.Removed != 0 || again.Copied != 0 || again.PacksAfter != 1 {
		t.Errorf("second repack: %+v", again)
	}
	// Writing goes on after a repack.
	more := putChunks(t, s, 10, 9)
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for id := range more {
		if ok, _ := open().Has(ctx, id); !ok {
			t.Fatalf("object written after repack is missing")
		}
	}
}

// A pack left by a writer killed before publishing, and a pack whose
// index went missing, are removed by a repack; nothing readable is lost.
func TestRepackRemovesLeftovers(t *testing.T) {
	ctx := context.Background()
	dir, open := packedDir(t)
	s := open()
	want := putChunks(t, s, 50, 1)
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	packDir := filepath.Join(dir, "objects", "pack")
	for _, name := range []string{".tmp-killed.pack", "pack-0123.pack"} {
		if err := os.WriteFile(filepath.Join(packDir, name), []byte("junk"), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	if names, size, err := s.Leftovers(); err != nil || len(names) != 2 || size != 8 {
		t.Errorf("Leftovers = %v, %d bytes, %v; want the two junk files, 8 bytes", names, size, err)
	}
	keepAll := func(ID) bool { return true }
	if _, err := repack(t, open(), keepAll); err != nil {
		t.Fatal(err)
	}
	if names, _, err := s.Leftovers(); err != nil || len(names) != 0 {
		t.Errorf("Leftovers after repack = %v, %v", names, err)
	}
	des, _ := os.ReadDir(packDir)
	for _, de := range des {
		if !strings.HasPrefix(de.Name(), "pack-") || de.Name() == "pack-0123.pack" {
			t.Errorf("left in pack/: %s", de.Name())
		}
	}
	s = open()
	for id, enc := range want {
		if got, err := Load(ctx, s, id); err != nil || !bytes.Equal(got, enc) {
			t.Fatalf("%s: %v", id.Short(), err)
		}
	}
}

// A repack refuses to copy an object whose bytes no longer match the
// checksum in its pack index, and removes nothing.
func TestRepackRefusesCorruptPack(t *testing.T) {
	ctx := context.Background()
	dir, open := packedDir(t)
	s := open()
	for seed := int64(1); seed <= 2; seed++ { // two small packs, to be merged
		putChunks(t, s, 20, seed)
		if err := s.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	names := packNames(t, dir)
	p := filepath.Join(dir, "objects", "pack", names[0])
	b, _ := os.ReadFile(p)
	b[len(b)-10] ^= 1
	os.Chmod(p, 0o644)
	if err := os.WriteFile(p, b, 0o444); err != nil {
		t.Fatal(err)
	}
	_, err := repack(t, open(), func(ID) bool { return true })
	if err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("repack of a corrupt pack: %v", err)
	}
	if after := packNames(t, dir); len(after) != 2 || after[0] != names[0] || after[1] != names[1] {
		t.Fatalf("packs after a refused repack: %v", after)
	}
}

// A repack killed after its journal was published leaves the listed packs
// and loose objects in place: readers do not see them, and the next
// repack removes them.
func TestRepackJournal(t *testing.T) {
	ctx := context.Background()
	dir, open := packedDir(t)
	s := open()
	gone := putChunks(t, s, 20, 1)
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	goneName := strings.TrimSuffix(packNames(t, dir)[0], ".pack")
	kept := putChunks(t, s, 20, 2)
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	looseEnc := EncodeChunk([]byte("a loose object the journal removes"))
	looseID := Sum(looseEnc)
	if err := s.loose.Put(ctx, looseID, Seal(looseEnc, nil)); err != nil {
		t.Fatal(err)
	}
	journal := fmt.Sprintf("pack %s\nloose %s\nend\n", goneName, looseID)
	if err := os.WriteFile(filepath.Join(dir, "objects", "pack", journalFile), []byte(journal), 0o444); err != nil {
		t.Fatal(err)
	}

	r := open()
	for id := range gone {
		if ok, _ := r.Has(ctx, id); ok {
			t.Fatalf("%s of a journaled pack is visible", id.Short())
		}
	}
	if ok, _ := r.Has(ctx, looseID); ok {
		t.Fatal("a journaled loose object is visible")
	}
	if _, err := r.Get(ctx, looseID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a journaled loose object: %v", err)
	}
	n := 0
	r.List(ctx, func(ID, int64) error { n++; return nil })
	if n != len(kept) {
		t.Fatalf("List gives %d objects, want the %d not journaled", n, len(kept))
	}
	if ids, _ := r.FindPrefix(ctx, looseID.String()[:8]); len(ids) != 0 {
		t.Fatalf("FindPrefix finds a journaled loose object")
	}

	if _, err := repack(t, r, func(ID) bool { return true }); err != nil {
		t.Fatal(err)
	}
	des, _ := os.ReadDir(filepath.Join(dir, "objects", "pack"))
	for _, de := range des {
		if strings.HasPrefix(de.Name(), goneName) || de.Name() == journalFile {
			t.Errorf("left after the repack finished the journal: %s", de.Name())
		}
	}
	for id, enc := range kept {
		if got, err := Load(ctx, open(), id); err != nil || !bytes.Equal(got, enc) {
			t.Fatalf("%s: %v", id.Short(), err)
		}
	}

	// A journal that does not end as written is refused, not half read.
	if err := os.WriteFile(filepath.Join(dir, "objects", "pack", journalFile), []byte("pack "+goneName+"\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := open().Refresh(); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a truncated journal: %v", err)
	}
}

// A store opened before another process repacked sees, once refreshed,
// what the repack kept and nothing it dropped.
func TestRefreshAfterRepackElsewhere(t *testing.T) {
	ctx := context.Background()
	_, open := packedDir(t)
	w := open()
	a := putChunks(t, w, 20, 1)
	w.Sync(ctx)
	b := putChunks(t, w, 20, 2)
	w.Sync(ctx)

	old := open()
	for id := range a {
		if ok, _ := old.Has(ctx, id); !ok {
			t.Fatal("not loaded")
		}
	}
	if _, err := repack(t, open(), func(id ID) bool { _, ok := b[id]; return ok }); err != nil {
		t.Fatal(err)
	}
	if err := old.Refresh(); err != nil {
		t.Fatal(err)
	}
	for id := range a {
		if ok, _ := old.Has(ctx, id); ok {
			t.Fatalf("%s, dropped by a repack elsewhere, is still seen", id.Short())
		}
	}
	for id, enc := range b {
		if got, err := Load(ctx, old, id); err != nil || !bytes.Equal(got, enc) {
			t.Fatalf("%s: %v", id.Short(), err)
		}
	}
	if errs := old.CheckFiles(ctx); len(errs) != 0 {
		t.Fatalf("CheckFiles after a repack elsewhere: %v", errs)
	}
}

// A writer that stores, after a repack was killed with its journal in
// place, exactly the objects of a pack that journal removes makes a pack
// of the same content: it must get a name of its own, or finishing the
// removal would take it too.
func TestRepackJournalNameTaken(t *testing.T) {
	ctx := context.Background()
	dir, open := packedDir(t)
	s := open()
	enc := EncodeChunk([]byte("the same chunk, stored twice"))
	id := Sum(enc)
	if err := s.Put(ctx, id, Seal(enc, nil)); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	old := strings.TrimSuffix(packNames(t, dir)[0], ".pack")
	// A gc dropped the chunk and was killed after publishing its journal.
	journal := fmt.Sprintf("pack %s\nend\n", old)
	if err := os.WriteFile(filepath.Join(dir, "objects", "pack", journalFile), []byte(journal), 0o444); err != nil {
		t.Fatal(err)
	}
	w := open()
	if ok, _ := w.Has(ctx, id); ok {
		t.Fatal("a journaled object is visible")
	}
	if err := w.Put(ctx, id, Seal(enc, nil)); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := repack(t, open(), func(ID) bool { return true }); err != nil {
		t.Fatal(err)
	}
	if got, err := Load(ctx, open(), id); err != nil || !bytes.Equal(got, enc) {
		t.Fatalf("the chunk stored again after the killed gc: %v", err)
	}
}

// A plan is carried out only on the store as it was planned: packs
// published since make Repack refuse it, and change nothing.
func TestRepackRefusesStalePlan(t *testing.T) {
	ctx := context.Background()
	dir, open := packedDir(t)
	s := open()
	putChunks(t, s, 20, 1)
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	plan, err := s.PlanRepack(ctx, func(ID) bool { return false })
	if err != nil {
		t.Fatal(err)
	}
	if plan.Stats.Removed != 20 || plan.Stats.PacksAfter != 0 {
		t.Fatalf("plan to drop everything: %+v", plan.Stats)
	}
	later := putChunks(t, s, 5, 2)
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Repack(ctx, plan, nil); err == nil || !strings.Contains(err.Error(), "plan it again") {
		t.Fatalf("repack on a stale plan: %v", err)
	}
	if n := len(packNames(t, dir)); n != 2 {
		t.Fatalf("%d packs after a refused repack, want 2", n)
	}
	for id := range later {
		if ok, _ := open().Has(ctx, id); !ok {
			t.Fatalf("%s lost by a refused repack", id.Short())
		}
	}
	if _, err := open().Repack(ctx, plan, nil); err == nil {
		t.Fatal("a plan made for another store was carried out")
	}
}
