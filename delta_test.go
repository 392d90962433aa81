package sbuml_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/internal/s3test"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/stream"
)

// deltaPages is the number of pages of the RAM-like file of
// deltaSnapshots.
const deltaPages = 256

// deltaSnapshots commits to s, without a guest, two snapshots of a
// directory holding a RAM-like file, ram.bin, saved page by page as a
// commit saves RAM: the first on branch old, the second, in which a
// counter went up in most pages, on main. It returns the second's ID
// and content of ram.bin, and checks that its changed pages were stored
// as deltas.
func deltaSnapshots(t *testing.T, s *sbuml.Scrapbook) (objects.ID, []byte) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, deltaPages*4096)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	saver := stream.NewSaver(s.Objects, 2)
	defer saver.Close()
	ids := make([]objects.ID, deltaPages)
	deltaSnapshot(t, s, saver, data, ids, []stream.PageRange{{Start: 0, End: deltaPages}}, "old")
	for pg := 0; pg < deltaPages-10; pg++ {
		data[pg*4096+64]++
	}
	second := deltaSnapshot(t, s, saver, data, ids, []stream.PageRange{{Start: 0, End: deltaPages - 10}}, "main")
	if n := saver.Stats().DeltaChunks; n != deltaPages-10 {
		t.Fatalf("stored %d pages as deltas, want %d", n, deltaPages-10)
	}
	fsckClean(t, s)
	return second, data
}

// deltaSnapshot saves the changed pages of data, whose other pages are
// those ids names, and commits a snapshot of a directory holding it as
// ram.bin to branch. The stream is a tree of its own, not a version of
// the last (no patch), so that gc may drop the pages it replaces. It
// returns the snapshot's ID.
func deltaSnapshot(t *testing.T, s *sbuml.Scrapbook, saver *stream.Saver, data []byte, ids []objects.ID, changed []stream.PageRange, branch string) objects.ID {
	t.Helper()
	ctx := context.Background()
	id, _, err := saver.SavePages(ctx, bytes.NewReader(data), sbuml.RAMParams, ids, changed, objects.Zero, false)
	if err != nil {
		t.Fatal(err)
	}
	tree := &objects.Tree{Entries: []objects.TreeEntry{{Name: "ram.bin", Kind: objects.EntryFile, Mode: 0o644, Size: uint64(len(data)), ID: id}}}
	treeID, _, err := objects.Save(ctx, s.Objects, tree.Encode())
	if err != nil {
		t.Fatal(err)
	}
	sn := &objects.Snapshot{Tree: treeID, Time: time.Unix(1e9, 0).UTC(), Author: "test", Host: "test", Message: branch}
	snID, _, err := objects.Save(ctx, s.Objects, sn.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Objects.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Refs.Update("refs/heads/"+branch, objects.Zero, snID, "test"); err != nil {
		t.Fatal(err)
	}
	return snID
}

// deltaRecords counts the delta records the pack indexes in dir list.
func deltaRecords(t *testing.T, dir string) int {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.idx"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		entries, err := objects.DecodePackIndex(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, e := range entries {
			if e.Delta {
				n++
			}
		}
	}
	return n
}

// scrapbookPacks is the pack directory of a scrapbook.
func scrapbookPacks(s *sbuml.Scrapbook) string { return filepath.Join(s.Dir, "objects", "pack") }

// requireRAMFile checks that the snapshot at rev of s holds ram.bin with
// content want: all of it read back, the store fsck-clean, and, unless s
// is the scrapbook at home, no delta in it.
func requireRAMFile(t *testing.T, s *sbuml.Scrapbook, home, rev string, want []byte) {
	t.Helper()
	fsckClean(t, s)
	if n := deltaRecords(t, scrapbookPacks(s)); n != 0 && s.Dir != home {
		t.Errorf("%s holds %d deltas; deltas never leave their scrapbook", s.Dir, n)
	}
	dir := filepath.Join(t.TempDir(), "export")
	if _, err := s.Export(context.Background(), rev, dir); err != nil {
		t.Fatalf("export %s of %s: %v", rev, s.Dir, err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "ram.bin"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("ram.bin of %s in %s: %v, equal %v", rev, s.Dir, err, bytes.Equal(got, want))
	}
}

// TestDeltasStayHome moves a snapshot whose pages are stored as deltas
// out of its scrapbook by every way there is, and checks each far side
// with fsck and by reading the pages back: a push into a scrapbook
// directory, push and clone through a server, publish and clone from
// the static site, push to and clone from an S3 bucket. Then gc drops
// the snapshot the deltas' bases belong to, keeping the bases.
func TestDeltasStayHome(t *testing.T) {
	ctx := context.Background()
	a := remoteBook(t)
	_, data := deltaSnapshots(t, a)
	if n := deltaRecords(t, scrapbookPacks(a)); n != deltaPages-10 {
		t.Fatalf("the scrapbook holds %d deltas, want %d", n, deltaPages-10)
	}

	t.Run("push to a directory", func(t *testing.T) {
		far := remoteBook(t)
		if err := a.AddRemote(sbuml.RemoteConfig{Name: "dir", URL: far.Dir}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Push(ctx, "dir", []string{"main"}, sbuml.TransferOptions{}); err != nil {
			t.Fatal(err)
		}
		far.Objects.(objects.Refresher).Refresh()
		requireRAMFile(t, far, a.Dir, "main", data)
	})
	t.Run("server", func(t *testing.T) {
		srv, served := smartServer(t, "tok")
		if err := a.AddRemote(sbuml.RemoteConfig{Name: "srv", URL: srv.URL, TokenFile: writeToken(t, "tok")}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Push(ctx, "srv", []string{"main"}, sbuml.TransferOptions{}); err != nil {
			t.Fatal(err)
		}
		requireRAMFile(t, served, a.Dir, "main", data)
		b, _, err := sbuml.Clone(ctx, srv.URL, filepath.Join(t.TempDir(), "clone"), sbuml.TransferOptions{})
		if err != nil {
			t.Fatal(err)
		}
		requireRAMFile(t, b, a.Dir, "main", data)
	})
	t.Run("publish", func(t *testing.T) {
		pubDir := filepath.Join(t.TempDir(), "pub")
		srv := httptest.NewServer(http.FileServer(http.Dir(pubDir)))
		defer srv.Close()
		if _, err := a.Publish(ctx, pubDir, srv.URL, sbuml.TransferOptions{}); err != nil {
			t.Fatal(err)
		}
		if n := deltaRecords(t, filepath.Join(pubDir, "packs")); n != 0 {
			t.Errorf("the published directory holds %d deltas", n)
		}
		b, _, err := sbuml.Clone(ctx, srv.URL, filepath.Join(t.TempDir(), "clone"), sbuml.TransferOptions{})
		if err != nil {
			t.Fatal(err)
		}
		requireRAMFile(t, b, a.Dir, "main", data)
	})
	t.Run("s3", func(t *testing.T) { deltasThroughS3(t, a, data) })
	t.Run("gc", func(t *testing.T) {
		old, err := a.Refs.Get("refs/heads/old")
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Refs.Update("refs/heads/old", old, objects.Zero, "drop"); err != nil {
			t.Fatal(err)
		}
		r, err := a.Gc(ctx, sbuml.GcOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Removed == 0 {
			t.Errorf("gc removed nothing; the old snapshot's tree and stream should go")
		}
		requireRAMFile(t, a, a.Dir, "main", data)
		if n := deltaRecords(t, scrapbookPacks(a)); n != deltaPages-10 {
			t.Errorf("after gc the scrapbook holds %d deltas, want the %d it held", n, deltaPages-10)
		}
	})
	t.Run("fsck", func(t *testing.T) { fsckDamagedDeltas(t, a) })
}

// fsckDamagedDeltas adds to s a pack of damaged deltas, as a hostile or
// corrupt store may hold: one on a missing base, two on each other.
// Fsck reports each in one line that says what is wrong.
func fsckDamagedDeltas(t *testing.T, s *sbuml.Scrapbook) {
	old := objects.EncodeChunk(bytes.Repeat([]byte("old page "), 400))
	cur := objects.EncodeChunk(bytes.Repeat([]byte("new page "), 400))
	orphan := objects.EncodeChunk(bytes.Repeat([]byte("orphan   "), 400))
	oldID, curID, orphanID := objects.Sum(old), objects.Sum(cur), objects.Sum(orphan)
	var pack bytes.Buffer
	enc, err := objects.NewPackEncoder(&pack)
	if err != nil {
		t.Fatal(err)
	}
	enc.Add(orphanID, objects.EncodeDelta(objects.Sum([]byte("gone")), old, orphan, nil))
	enc.Add(curID, objects.EncodeDelta(oldID, old, cur, nil))
	enc.Add(oldID, objects.EncodeDelta(curID, cur, old, nil))
	idx, name := enc.Index()
	dir := scrapbookPacks(s)
	if err := os.WriteFile(filepath.Join(dir, name+".pack"), pack.Bytes(), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".idx"), idx, 0o444); err != nil {
		t.Fatal(err)
	}
	s.Objects.(objects.Refresher).Refresh()
	r, err := s.Fsck(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[objects.ID]string{orphanID: "which is missing", curID: "is a delta too", oldID: "is a delta too"}
	for _, p := range r.Problems {
		if w, ok := want[p.Object]; ok && strings.Contains(p.Problem, w) && !strings.Contains(p.Problem, "\n") {
			delete(want, p.Object)
		}
	}
	for id, w := range want {
		t.Errorf("fsck did not report %s saying %q; it reported %v", id.Short(), w, r.Problems)
	}
}

// deltasThroughS3 pushes main of a to a bucket and clones it, with the
// sbuml command, as AWS tools reach the bucket.
func deltasThroughS3(t *testing.T, a *sbuml.Scrapbook, data []byte) {
	srv := s3test.Shared(t)
	url := "s3://" + srv.Bucket(t) + "/deltas"
	if err := a.AddRemote(sbuml.RemoteConfig{Name: "s3", URL: url, S3: &sbuml.S3Settings{Endpoint: srv.Endpoint}}); err != nil {
		t.Fatal(err)
	}
	run := func(dir string, args ...string) {
		t.Helper()
		cmd := exec.Command(sbumlCommand(t), append([]string{"--scrapbook", dir}, args...)...)
		cmd.Env = append(os.Environ(), srv.Env()...)
		cmd.Env = append(cmd.Env, "AWS_ENDPOINT_URL="+srv.Endpoint)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sbuml %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run(a.Dir, "push", "s3", "main")
	clone := filepath.Join(t.TempDir(), "clone")
	run("", "clone", url, clone)
	b, err := sbuml.Open(clone)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	requireRAMFile(t, b, a.Dir, "main", data)
}
