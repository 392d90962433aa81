package sbuml_test

import (
	"crypto/sha256"
	"encoding/json"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/vmm"
)

// TestCheckoutTwoMachinesDiverge checks out one snapshot twice: both
// machines run at once, carry on from the snapshot, and each sees only the
// files written in it; their commits start two branches from the snapshot.
func TestCheckoutTwoMachinesDiverge(t *testing.T) {
	t.Parallel()
	s := guestScrapbook(t, 2)
	g := bootGuest(t, s, "m1", 0)
	g.startCounter()
	g.run("echo base > /mnt/base; echo base > /tmp/base")
	tl := commitTimeline(g, sbuml.CommitOptions{})
	g.halt()

	a, _ := checkoutGuest(t, s, tl.id.String(), "a", sbuml.CheckoutOptions{Continue: true})
	b, _ := checkoutGuest(t, s, tl.id.String(), "b", sbuml.CheckoutOptions{Continue: true})
	for _, in := range []*guest{a, b} {
		if st := in.state(); st != vmm.StateRunning {
			t.Fatalf("%s is %s, want running", in.name, st)
		}
	}
	a.run("echo only-a > /mnt/only-a; echo only-a > /tmp/only-a")
	b.run("echo only-b > /mnt/only-b; echo only-b > /tmp/only-b")
	for _, in := range []*guest{a, b} {
		in.requireCounterContinues(tl.lo, tl.hi)
		other := map[string]string{"a": "b", "b": "a"}[in.name]
		requireFiles(in, map[string]string{
			"/mnt/base": "base", "/tmp/base": "base",
			"/mnt/only-" + in.name: "only-" + in.name, "/tmp/only-" + in.name: "only-" + in.name,
			"/mnt/only-" + other: "", "/tmp/only-" + other: "",
		})
	}
	ca, cb := a.commit(sbuml.CommitOptions{}), b.commit(sbuml.CommitOptions{})
	for _, c := range []*sbuml.CommitResult{ca, cb} {
		if c.Parent != tl.id {
			t.Errorf("commit to %s has parent %s, want the snapshot both came from, %s", c.Branch, c.Parent.Short(), tl.id.Short())
		}
	}
	if ca.Branch != "refs/heads/a" || cb.Branch != "refs/heads/b" {
		t.Errorf("commits went to %s and %s, want refs/heads/a and refs/heads/b", ca.Branch, cb.Branch)
	}
}

// TestCheckoutExported checks out a machine snapshot from a directory
// written by Export: it carries on from the snapshot, and running it does
// not change the directory.
func TestCheckoutExported(t *testing.T) {
	t.Parallel()
	s := guestScrapbook(t, 1)
	g := bootGuest(t, s, "m1", 0)
	g.startCounter()
	g.run("echo exported > /mnt/file")
	tl := commitTimeline(g, sbuml.CommitOptions{})
	g.halt()
	dir := filepath.Join(t.TempDir(), "snap")
	if _, err := s.Export(guestContext(t), "m1", dir); err != nil {
		t.Fatal(err)
	}
	before := hashTree(t, dir)

	c, res := checkoutGuest(t, s, dir, "c", sbuml.CheckoutOptions{Continue: true})
	if !res.Snapshot.IsZero() || !res.Running {
		t.Errorf("checkout of an exported directory: %+v, want no snapshot ID, running", res)
	}
	requireResumed(c, tl)
	requireFiles(c, map[string]string{"/mnt/file": "exported"})
	c.run("echo changed > /mnt/file; echo new > /mnt/new")
	c.commit(sbuml.CommitOptions{})
	if after := hashTree(t, dir); !maps.Equal(before, after) {
		t.Errorf("running a machine checked out from %s changed it:\nbefore %v\nafter  %v", dir, before, after)
	}
}

// hashTree returns the SHA-256 of every file under dir, by relative path.
func hashTree(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = string(h.Sum(nil))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCheckoutRefusals checks that checkout refuses, with one clear line
// and without leaving a machine behind: a name already in use; a snapshot
// some of whose objects are missing; a snapshot whose QEMU machine type
// this QEMU does not have.
//
// It is long because one guest and its snapshot serve all three refusals:
// each guest costs seconds to boot under TCG.
func TestCheckoutRefusals(t *testing.T) {
	t.Parallel()
	s := guestScrapbook(t, 1)
	g := bootGuest(t, s, "m1", 0)
	snap := g.commit(sbuml.CommitOptions{}).ID
	ctx := guestContext(t)

	requireNoMachine := func(s *sbuml.Scrapbook, name string) {
		t.Helper()
		if _, err := os.Stat(filepath.Join(s.MachinesDir(), name)); !os.IsNotExist(err) {
			t.Errorf("refused checkout left %s behind (%v)", filepath.Join(s.MachinesDir(), name), err)
		}
	}

	t.Run("name in use", func(t *testing.T) {
		_, err := s.Checkout(ctx, snap.String(), "m1", sbuml.CheckoutOptions{Continue: true, Accel: guestAccel})
		if err == nil {
			t.Fatal("checkout into the name of a running machine succeeded")
		}
		requireOneLine(t, err, "m1", "already exists", "running")
		t.Log(err)
		// The running machine is untouched.
		if out := g.run("echo alive-$((1+1))"); out != "alive-2" {
			t.Errorf("m1 after the refused checkout: %q", out)
		}
	})

	t.Run("missing objects", func(t *testing.T) {
		// A second scrapbook got all objects of the snapshot except
		// three RAM chunks and one index node of the disk.
		partial, err := sbuml.Init(filepath.Join(t.TempDir(), "partial"))
		if err != nil {
			t.Fatal(err)
		}
		haltAllOnCleanup(t, partial)
		ram := streamObjects(t, s, snap, "ram", objects.KindChunk)
		disk := streamObjects(t, s, snap, "disks/disk.img", objects.KindIndex)
		if len(ram) < 3 || len(disk) < 1 {
			t.Fatalf("snapshot has %d RAM chunks and %d disk index nodes", len(ram), len(disk))
		}
		drop := slices.Concat(ram[len(ram)/2:len(ram)/2+3], disk[:1])
		copyObjectsExcept(t, s, partial, drop)
		if err := partial.Refs.Update("refs/heads/m1", objects.Zero, snap, "test: partial copy"); err != nil {
			t.Fatal(err)
		}
		missing, err := partial.Missing(ctx, snap)
		if err != nil {
			t.Fatal(err)
		}
		var got []objects.ID
		for _, r := range missing {
			got = append(got, r.ID)
		}
		if !sameIDs(got, drop) {
			t.Errorf("Missing found %v, want the dropped %v", got, drop)
		}
		_, err = partial.Checkout(ctx, "m1", "x", sbuml.CheckoutOptions{Continue: true, Accel: guestAccel})
		if err == nil {
			t.Fatal("checkout of an incomplete snapshot succeeded")
		}
		requireOneLine(t, err, snap.Short(), "4 objects missing", drop[0].String())
		t.Log(err)
		requireNoMachine(partial, "x")
	})

	t.Run("unknown machine type", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "snap")
		if _, err := s.Export(ctx, snap.String(), dir); err != nil {
			t.Fatal(err)
		}
		mj := filepath.Join(dir, "machine.json")
		raw, err := os.ReadFile(mj)
		if err != nil {
			t.Fatal(err)
		}
		var cfg map[string]any
		if err := json.Unmarshal(raw, &cfg); err != nil {
			t.Fatal(err)
		}
		cfg["machine_type"] = "pc-q35-1.0-nonexistent"
		raw, _ = json.Marshal(cfg)
		if err := os.WriteFile(mj, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err = s.Checkout(ctx, dir, "y", sbuml.CheckoutOptions{Continue: true, Accel: guestAccel})
		if err == nil {
			t.Fatal("checkout of a snapshot with an unknown machine type succeeded")
		}
		requireOneLine(t, err, "pc-q35-1.0-nonexistent", "QEMU")
		t.Log(err)
		requireNoMachine(s, "y")
	})
}

// streamObjects returns the objects of one kind under the file at name in
// snapshot id's tree.
func streamObjects(t testing.TB, s *sbuml.Scrapbook, id objects.ID, name string, kind objects.Kind) []objects.ID {
	t.Helper()
	ctx := guestContext(t)
	sn, err := objects.LoadSnapshot(ctx, s.Objects, id)
	if err != nil {
		t.Fatal(err)
	}
	tree := sn.Tree
	parts := strings.Split(name, "/")
	var entry *objects.TreeEntry
	for _, p := range parts {
		tr, err := objects.LoadTree(ctx, s.Objects, tree)
		if err != nil {
			t.Fatal(err)
		}
		if entry = tr.Find(p); entry == nil {
			t.Fatalf("snapshot %s has no %s", id.Short(), name)
		}
		tree = entry.ID
	}
	var out []objects.ID
	seen := objects.Seen{}
	err = objects.Walk(ctx, s.Objects, objects.Ref{ID: entry.ID, Kind: objects.KindStream}, func(r objects.Ref) (bool, error) {
		if !seen.Add(r.ID) {
			return false, nil
		}
		if r.Kind == kind {
			out = append(out, r.ID)
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// copyObjectsExcept copies every object of from into to, except skip.
func copyObjectsExcept(t testing.TB, from, to *sbuml.Scrapbook, skip []objects.ID) {
	t.Helper()
	ctx := guestContext(t)
	var ids []objects.ID
	if err := from.Objects.List(ctx, func(id objects.ID, _ int64) error {
		if !slices.Contains(skip, id) {
			ids = append(ids, id)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		b, err := from.Objects.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if err := to.Objects.Put(ctx, id, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := to.Objects.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

// sameIDs reports whether a and b hold the same IDs, in any order.
func sameIDs(a, b []objects.ID) bool {
	x := slices.Clone(a)
	y := slices.Clone(b)
	cmp := func(p, q objects.ID) int { return strings.Compare(p.String(), q.String()) }
	slices.SortFunc(x, cmp)
	slices.SortFunc(y, cmp)
	return slices.Equal(x, y)
}

// TestRewind rewinds a running machine to an earlier snapshot: it loses
// the later files and keeps running. Its next commit is refused on its old
// branch, which has moved on, and accepted on a new branch, with the
// snapshot it was rewound to as parent.
func TestRewind(t *testing.T) {
	t.Parallel()
	s := guestScrapbook(t, 1)
	g := bootGuest(t, s, "m1", 0)
	g.run("echo a > /mnt/a; echo a > /tmp/a")
	first := g.commit(sbuml.CommitOptions{})
	g.run("echo b > /mnt/b; echo b > /tmp/b")
	second := g.commit(sbuml.CommitOptions{})
	ctx := guestContext(t)

	res, err := s.Rewind(ctx, "m1", "m1~1", sbuml.CheckoutOptions{Accel: guestAccel})
	if err != nil {
		t.Fatal(err)
	}
	if res.Snapshot != first.ID || !res.Running {
		t.Fatalf("rewind: %+v, want snapshot %s, running (it was running)", res, first.ID.Short())
	}
	g = &guest{t: t, s: s, name: "m1"}
	requireFiles(g, map[string]string{"/mnt/a": "a", "/tmp/a": "a", "/mnt/b": "", "/tmp/b": ""})

	_, err = s.Commit(ctx, "m1", sbuml.CommitOptions{})
	if err == nil {
		t.Fatal("commit after rewind moved branch m1 back without --branch or --force")
	}
	requireOneLine(t, err, "m1", second.ID.Short(), "--branch")
	t.Log(err)
	if tip, _ := s.Resolve(ctx, "m1"); tip != second.ID {
		t.Fatalf("refused commit moved m1 to %s", tip.Short())
	}

	g.run("echo c > /mnt/c")
	third := g.commit(sbuml.CommitOptions{Branch: "new"})
	if third.Parent != first.ID || third.Branch != "refs/heads/new" {
		t.Fatalf("commit --branch new after rewind: parent %s on %s, want parent %s on refs/heads/new", third.Parent.Short(), third.Branch, first.ID.Short())
	}
	// The machine now commits to its new branch.
	fourth := g.commit(sbuml.CommitOptions{})
	if fourth.Parent != third.ID || fourth.Branch != "refs/heads/new" {
		t.Errorf("next commit: parent %s on %s, want parent %s on refs/heads/new", fourth.Parent.Short(), fourth.Branch, third.ID.Short())
	}
	if tip, _ := s.Resolve(ctx, "m1"); tip != second.ID {
		t.Errorf("branch m1 moved to %s", tip.Short())
	}
}

// TestRewindRefusalsKeepTheMachine checks that a rewind to what cannot
// be checked out as a machine (a directory snapshot, a name of nothing)
// fails with one line and leaves the machine running as it was.
func TestRewindRefusalsKeepTheMachine(t *testing.T) {
	t.Parallel()
	s := guestScrapbook(t, 1)
	g := bootGuest(t, s, "m1", 0)
	g.run("echo kept > /tmp/kept")
	ctx := guestContext(t)
	dir := filepath.Join(t.TempDir(), "d")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644)
	imp, err := s.Import(ctx, dir, sbuml.SnapshotOptions{Branch: "files"})
	if err != nil {
		t.Fatal(err)
	}
	for _, rev := range []string{imp.ID.String(), "nosuch"} {
		_, err := s.Rewind(ctx, "m1", rev, sbuml.CheckoutOptions{Accel: guestAccel})
		if err == nil {
			t.Fatalf("rewind to %s succeeded", rev)
		}
		requireOneLine(t, err, "m1")
		t.Log(err)
	}
	if out := g.run("cat /tmp/kept"); out != "kept" {
		t.Errorf("after the refused rewinds the machine's tmpfs holds %q", out)
	}
	ms, err := s.Machines(ctx)
	if err != nil || len(ms) != 1 || ms[0].State != "running" {
		t.Errorf("machines after the refused rewinds: %+v, %v", ms, err)
	}
}
