package transport_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	sbuml "github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/stream"
	"github.com/sbuml/sbuml/transport"
)

// ramMachine is a scrapbook holding a line of snapshots that look like
// the commits of an idle machine: each holds one RAM image, cut as
// commits cut RAM, that differs from its parent's in a few pages.
type ramMachine struct {
	book  *sbuml.Scrapbook
	pages int
	ram   []byte
	rng   *rand.Rand
	snaps []objects.ID
	// patched: each commit stores the RAM as a patch on the last one's
	// index tree, as machine commits do (see stream.Saver.SaveStreamFrom);
	// otherwise as a tree of its own.
	patched bool
	lastRAM objects.ID
}

// newRAMMachine makes the first snapshot of a RAM of pages 4 KiB pages:
// half the pages zero, the others a kilobyte of noise and zeros (so they
// compress about as much as a kernel's pages).
func newRAMMachine(t testing.TB, pages int) *ramMachine {
	t.Helper()
	book, err := sbuml.Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := &ramMachine{book: book, pages: pages, ram: make([]byte, pages*4096), rng: rand.New(rand.NewPCG(1, 2))}
	for p := range pages {
		if m.rng.IntN(2) == 0 {
			m.fill(p)
		}
	}
	m.commit(t)
	return m
}

func (m *ramMachine) fill(page int) {
	b := m.ram[page*4096 : page*4096+1024]
	for i := range b {
		b[i] = byte(m.rng.Uint32())
	}
}

// idle changes scattered pages and commits the RAM as a child of
// the last snapshot.
func (m *ramMachine) idle(t testing.TB, pages int) objects.ID {
	for range pages {
		m.fill(m.rng.IntN(m.pages))
	}
	return m.commit(t)
}

// commit saves the RAM as a snapshot whose tree holds it as "ram".
func (m *ramMachine) commit(t testing.TB) objects.ID {
	t.Helper()
	ctx := context.Background()
	sv := stream.NewSaver(m.book.Objects, 2)
	defer sv.Close()
	base := objects.Zero
	if m.patched {
		base = m.lastRAM
	}
	sid, st, err := sv.SaveStreamFrom(ctx, bytes.NewReader(m.ram), sbuml.RAMParams, base)
	if err != nil {
		t.Fatal(err)
	}
	m.lastRAM = sid
	tree := &objects.Tree{Entries: []objects.TreeEntry{{Name: "ram", Kind: objects.EntryFile, Mode: 0o600, Size: st.Length, ID: sid}}}
	tid, err := sv.SaveObject(ctx, tree.Encode())
	if err != nil {
		t.Fatal(err)
	}
	sn := &objects.Snapshot{Tree: tid, Time: time.Unix(int64(len(m.snaps)), 0).UTC(), Author: "test", Message: "idle"}
	if len(m.snaps) > 0 {
		sn.Parents = []objects.ID{m.snaps[len(m.snaps)-1]}
	}
	id, err := sv.SaveObject(ctx, sn.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.book.Objects.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	m.snaps = append(m.snaps, id)
	return id
}

// TestPushIdleCommitWire pushes the snapshot of an idle machine (a few
// pages of 64 MiB of RAM changed) to a smart server whose branch has the
// parent, and checks that the push puts on the wire at most 1.1 times
// the new objects' bytes plus 1 KiB, and a pull of it takes as little.
// The 1.1 covers what each object costs besides its bytes: 36 bytes of
// record framing, and 32 for the question about it, as the walk asks
// about each new object once. The 1 KiB covers the ref update (about 200
// bytes of JSON) and the questions about the pushed snapshot and its
// parent. Before the walk went down the pushed tree side by side with
// the parent's, it asked about every reference of every new index node
// and sent about 1.45 times the new bytes. It runs on RAM stored as a
// tree of its own and as a patch on the last RAM's tree: patches are
// cumulative, and pages the base's patch named are not sent again.
func TestPushIdleCommitWire(t *testing.T) {
	for _, patched := range []bool{false, true} {
		t.Run(fmt.Sprintf("patched=%v", patched), func(t *testing.T) {
			m := newRAMMachine(t, 16384) // 64 MiB: an index tree of four levels
			m.patched = patched
			testPushIdleCommitWire(t, m)
		})
	}
}

// testPushIdleCommitWire is TestPushIdleCommitWire on the machine m.
func testPushIdleCommitWire(t *testing.T, m *ramMachine) {
	ctx := context.Background()
	dir := newBacking(t, implementations[2])
	remote := implementations[2].client(t, dir)
	if _, _, err := transport.Push(ctx, m.book.Objects, remote, []transport.RefUpdate{{Name: "refs/heads/m", New: m.snaps[0]}}, transport.Options{}); err != nil {
		t.Fatal(err)
	}
	clone := newLocal(t)
	if _, err := transport.Fetch(ctx, clone.Objects, remote, []objects.ID{m.snaps[0]}, transport.Options{}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		id := m.idle(t, 8)
		n, newBytes := sum(reachable(t, m.book.Objects, id), reachable(t, m.book.Objects, m.snaps[i-1]))
		limit := int64(1.1*float64(newBytes)) + 1024
		_, st, err := transport.Push(ctx, m.book.Objects, remote, []transport.RefUpdate{{Name: "refs/heads/m", New: id}}, transport.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("push of idle commit %d: %d new objects, %d bytes; %d bytes sent (%.3fx), %d received", i, n, newBytes, st.BytesSent, float64(st.BytesSent)/float64(newBytes), st.BytesReceived)
		if st.ObjectBytes != newBytes || st.BytesSent > limit {
			t.Errorf("push of idle commit %d sent %d object bytes, %d on the wire; want the %d new ones, at most %d on the wire", i, st.ObjectBytes, st.BytesSent, newBytes, limit)
		}
		fst, err := transport.Fetch(ctx, clone.Objects, remote, []objects.ID{id}, transport.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("pull of it: %d bytes sent, %d received (%.3fx)", fst.BytesSent, fst.BytesReceived, float64(fst.BytesReceived)/float64(newBytes))
		if fst.ObjectBytes != newBytes || fst.BytesReceived+fst.BytesSent > limit {
			t.Errorf("pull of idle commit %d received %d object bytes, %d bytes on the wire and sent %d; want the %d new ones, at most %d on the wire", i, fst.ObjectBytes, fst.BytesReceived, fst.BytesSent, newBytes, limit)
		}
	}
	checkClosed(t, backingStore(t, dir))
}

// TestPushWrongHave pushes with a have the remote does not hold: a
// remote-tracking ref left from a branch that was deleted on the remote,
// whose objects its gc then removed (on a smart server), and a snapshot
// the remote never had (on every remote that takes pushes). The push
// must end with the remote holding all of the pushed snapshot.
func TestPushWrongHave(t *testing.T) {
	ctx := context.Background()
	m := newRAMMachine(t, 2048)
	gone := m.snaps[0]
	pushed := m.idle(t, 8)
	t.Run("gc", func(t *testing.T) {
		dir := newBacking(t, implementations[2])
		d, err := transport.OpenDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := transport.Push(ctx, m.book.Objects, d, []transport.RefUpdate{{Name: "refs/heads/tmp", New: gone}}, transport.Options{}); err != nil {
			t.Fatal(err)
		}
		if err := d.UpdateRef(ctx, "refs/heads/tmp", gone, objects.Zero); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		served, err := sbuml.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := served.Gc(ctx, sbuml.GcOptions{}); err != nil {
			t.Fatal(err)
		}
		served.Close()
		if has(t, backingStore(t, dir), gone) {
			t.Fatal("gc kept the deleted branch's snapshot")
		}
		checkWrongHave(t, m, implementations[2].client(t, dir), dir, gone, pushed)
	})
	for _, impl := range implementations {
		if impl.readOnly {
			continue
		}
		t.Run("never-had/"+impl.name, func(t *testing.T) {
			dir := newBacking(t, impl)
			checkWrongHave(t, m, impl.client(t, dir), dir, gone, pushed)
		})
	}
}

// checkWrongHave pushes id to r claiming that r has have, and checks that
// the push succeeds and leaves r holding all of id.
func checkWrongHave(t *testing.T, m *ramMachine, r transport.Remote, dir string, have, id objects.ID) {
	t.Helper()
	_, st, err := transport.Push(context.Background(), m.book.Objects, r, []transport.RefUpdate{{Name: "refs/heads/m", New: id}}, transport.Options{Haves: []objects.ID{have}})
	if err != nil {
		t.Fatalf("push with a wrong have: %v", err)
	}
	_, all := sum(reachable(t, m.book.Objects, id), nil)
	t.Logf("push with a wrong have: %d object bytes of %d, %d bytes sent", st.ObjectBytes, all, st.BytesSent)
	store := backingStore(t, dir)
	if n := checkClosed(t, store); n == 0 {
		t.Error("the remote holds no objects")
	}
	for oid := range reachable(t, m.book.Objects, id) {
		if !has(t, store, oid) {
			t.Fatalf("the remote lacks %s, which the pushed snapshot reaches", oid.Short())
		}
	}
}

// TestPushFindsBaseOnRemote pushes a snapshot whose parent the remote
// holds though no remote ref names it: the remote's branch x went on
// from that parent, and the pushed snapshot forks from it onto branch m,
// which the remote has at an older snapshot. The push must find the
// parent by asking, and send only what the fork added to it.
func TestPushFindsBaseOnRemote(t *testing.T) {
	ctx := context.Background()
	m := newRAMMachine(t, 2048)
	first := m.snaps[0]
	parent := m.idle(t, 8)
	atParent := bytes.Clone(m.ram)
	x := m.idle(t, 8)
	m.ram, m.snaps = atParent, append(m.snaps, parent)
	fork := m.idle(t, 8)

	dir := newBacking(t, implementations[2])
	r := implementations[2].client(t, dir)
	for _, u := range []transport.RefUpdate{{Name: "refs/heads/m", New: first}, {Name: "refs/heads/x", New: x}} {
		if _, _, err := transport.Push(ctx, m.book.Objects, r, []transport.RefUpdate{u}, transport.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	_, st, err := transport.Push(ctx, m.book.Objects, r, []transport.RefUpdate{{Name: "refs/heads/m", New: fork}}, transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n, newBytes := sum(reachable(t, m.book.Objects, fork), reachable(t, m.book.Objects, parent))
	t.Logf("push of the fork: %d new objects, %d bytes; sent %d objects, %d bytes, %d on the wire", n, newBytes, st.Objects, st.ObjectBytes, st.BytesSent)
	if limit := int64(1.1*float64(newBytes)) + 1024; st.ObjectBytes != newBytes || st.BytesSent > limit {
		t.Errorf("the push sent %d object bytes, %d on the wire; want the %d the fork added to its parent, at most %d on the wire", st.ObjectBytes, st.BytesSent, newBytes, limit)
	}
}

// TestPushAsksAboutMovedContent pushes a snapshot in which a file became
// a copy of another file the remote has, plus a byte. Its chunks stand
// where the parent's file had other chunks, but outside a RAM image
// content moves: the push must ask about them and send only what is new.
func TestPushAsksAboutMovedContent(t *testing.T) {
	ctx := context.Background()
	book := newLocal(t)
	work := t.TempDir()
	writeFiles(t, work, 5, map[string]int{"a.bin": 2 << 20, "b.bin": 2 << 20})
	first, err := book.Import(ctx, work, sbuml.SnapshotOptions{Branch: "main", Message: "first"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(work, "b.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "a.bin"), append(b, 'x'), 0o644); err != nil {
		t.Fatal(err)
	}
	second, err := book.Import(ctx, work, sbuml.SnapshotOptions{Branch: "main", Message: "second"})
	if err != nil {
		t.Fatal(err)
	}
	r := implementations[2].client(t, newBacking(t, implementations[2]))
	if _, _, err := transport.Push(ctx, book.Objects, r, []transport.RefUpdate{{Name: "refs/heads/main", New: first.ID}}, transport.Options{}); err != nil {
		t.Fatal(err)
	}
	_, st, err := transport.Push(ctx, book.Objects, r, []transport.RefUpdate{{Name: "refs/heads/main", New: second.ID}}, transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n, newBytes := sum(reachable(t, book.Objects, second.ID), reachable(t, book.Objects, first.ID))
	t.Logf("push: %d new objects, %d bytes; sent %d objects, %d bytes", n, newBytes, st.Objects, st.ObjectBytes)
	if st.ObjectBytes != newBytes {
		t.Errorf("the push sent %d object bytes; want the %d new ones", st.ObjectBytes, newBytes)
	}
}
