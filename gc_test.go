package sbuml_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/scrapbook"
	"github.com/sbuml/sbuml/transport"
)

// TestGc deletes a branch and checks that gc frees exactly what only that
// branch reached, keeps what a tag, a machine or another branch still
// reaches, and leaves a scrapbook that fsck finds clean.
//
// It is long because it is one scenario: each step starts from what the
// steps before it left.
func TestGc(t *testing.T) {
	ctx := context.Background()
	s := newScrapbook(t)
	src := t.TempDir()
	dirs := map[string]string{}
	for i, name := range []string{"kept", "dropped", "tagged", "machine"} {
		dirs[name] = filepath.Join(src, name)
		if err := os.MkdirAll(dirs[name], 0o755); err != nil {
			t.Fatal(err)
		}
		writeRandomFile(t, filepath.Join(dirs[name], "f"), 3*mib, uint64(i+1))
	}
	// Shared by every snapshot: must survive however many refs go.
	for _, d := range dirs {
		writeRandomFile(t, filepath.Join(d, "common"), 1*mib, 99)
	}
	ids := map[string]objects.ID{}
	for _, name := range []string{"kept", "dropped", "tagged", "machine"} {
		branch := name
		if name == "kept" {
			branch = sbuml.DefaultBranch
		}
		ids[name] = mustImport(t, s, dirs[name], sbuml.SnapshotOptions{Branch: branch, Message: name}).ID
	}
	// "tagged" stays reachable from a tag, "machine" from a machine that
	// continues from it; their branches, and "dropped", go.
	if err := s.Refs.Update("refs/tags/t1", objects.Zero, ids["tagged"], "test"); err != nil {
		t.Fatal(err)
	}
	machineDir := filepath.Join(s.MachinesDir(), "m1")
	writeFile(t, filepath.Join(machineDir, "sbuml-head.json"),
		[]byte(fmt.Sprintf(`{"snapshot": %q, "branch": "m1"}`, ids["machine"])), 0o644)
	for _, name := range []string{"dropped", "tagged", "machine"} {
		if err := s.Refs.Update("refs/heads/"+name, ids[name], objects.Zero, "test"); err != nil {
			t.Fatal(err)
		}
	}
	before, err := s.Du(ctx)
	if err != nil {
		t.Fatal(err)
	}

	dry, err := s.Gc(ctx, sbuml.GcOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.Objects.Has(ctx, ids["dropped"]); !ok || dry.Removed == 0 {
		t.Fatalf("dry run removed the snapshot, or found nothing to remove: %+v", dry.RepackStats)
	}

	phases := map[string]int{}
	var last sbuml.GcProgress
	r, err := s.Gc(ctx, sbuml.GcOptions{OnProgress: func(p sbuml.GcProgress) {
		phases[p.Phase]++
		last = p
	}})
	if err != nil {
		t.Fatal(err)
	}
	if phases["marking"] == 0 || (r.CopiedBytes >= 8*mib && (phases["copying"] == 0 || last.Total != r.CopiedBytes)) {
		t.Errorf("progress: phases %v, last %+v, copied %d bytes", phases, last, r.CopiedBytes)
	}
	if r.Roots != 3 || r.Removed != dry.Removed || r.Kept != dry.Kept || r.PacksAfter != 1 {
		t.Errorf("gc: %+v (dry run said %+v)", r, dry)
	}
	// What "dropped" alone reached: its snapshot, tree, stream, about
	// 3 MiB of chunks. The common file stays.
	freed := r.FileBytesBefore - r.FileBytesAfter
	if freed < 3*mib || freed > 4*mib {
		t.Errorf("gc freed %d bytes, want about 3 MiB", freed)
	}
	if ok, _ := s.Objects.Has(ctx, ids["dropped"]); ok {
		t.Errorf("the snapshot of the deleted branch is still there")
	}
	for _, name := range []string{"kept", "tagged", "machine"} {
		requireSameTree(t, dirs[name], mustExport(t, s, ids[name].String()))
	}
	requireFsckClean(t, s)

	// Another process sees the same.
	again, err := sbuml.Open(s.Dir)
	if err != nil {
		t.Fatal(err)
	}
	requireFsckClean(t, again)
	after, err := again.Du(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.StoredBytes >= before.StoredBytes-3*mib {
		t.Errorf("du: %d stored bytes before gc, %d after", before.StoredBytes, after.StoredBytes)
	}
	// du said beforehand what gc would free, and says nothing is left.
	if before.UnreferencedBytes != r.RemovedBytes || after.UnreferencedBytes != 0 || after.UnreferencedObjects != 0 {
		t.Errorf("du: %d unreferenced bytes before gc (gc removed %d), %d in %d objects after",
			before.UnreferencedBytes, r.RemovedBytes, after.UnreferencedBytes, after.UnreferencedObjects)
	}
	if r2, err := again.Gc(ctx, sbuml.GcOptions{}); err != nil || r2.Removed != 0 || r2.Copied != 0 {
		t.Errorf("second gc: %+v, %v", r2, err)
	}
	// And the scrapbook goes on: importing "dropped" again stores it anew.
	res := mustImport(t, again, dirs["dropped"], sbuml.SnapshotOptions{Branch: "back"})
	requireSameTree(t, dirs["dropped"], mustExport(t, again, res.ID.String()))
	requireFsckClean(t, again)
}

// Gc and writers exclude each other, with one clear error, across
// processes (the lock is on a file; two opens behave as two processes).
func TestGcExcludesWriters(t *testing.T) {
	ctx := context.Background()
	s := newScrapbook(t)
	src := t.TempDir()
	writeRandomFile(t, filepath.Join(src, "f"), 1*mib, 1)
	mustImport(t, s, src, sbuml.SnapshotOptions{})

	release, err := scrapbook.LockShared(s.Dir, 0) // a writer at work
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Gc(ctx, sbuml.GcOptions{}); !errors.Is(err, scrapbook.ErrBusy) {
		t.Fatalf("gc beside a writer: %v", err)
	}
	release()

	release, err = scrapbook.LockExclusive(s.Dir) // gc at work
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	defer func(w time.Duration) { scrapbook.LockWait = w }(scrapbook.LockWait)
	scrapbook.LockWait = 100 * time.Millisecond // writers wait this long for gc
	writeRandomFile(t, filepath.Join(src, "g"), 1*mib, 2)
	_, err = s.Import(ctx, src, sbuml.SnapshotOptions{})
	if !errors.Is(err, scrapbook.ErrBusy) {
		t.Fatalf("import during gc: %v", err)
	}
	t.Logf("import during gc: %v", err)
	if _, err := s.Fsck(ctx); !errors.Is(err, scrapbook.ErrBusy) {
		t.Fatalf("fsck during gc: %v", err)
	}
	if entries, err := os.ReadDir(filepath.Join(s.Dir, "objects", "pack")); err != nil || len(entries) == 0 {
		t.Fatalf("packs: %v", err)
	}
}

// TestCompactAfterManyWrites imports small changes many times: each
// leaves packs of its own, and once there are more than a few dozen the
// writer merges them, so that the pack count stays bounded and every
// snapshot stays whole.
func TestCompactAfterManyWrites(t *testing.T) {
	s := newScrapbook(t)
	src := t.TempDir()
	writeRandomFile(t, filepath.Join(src, "base"), 1*mib, 1)
	var ids []objects.ID
	maxPacks := 0
	for i := 0; i < 60; i++ {
		writeFile(t, filepath.Join(src, "n"), []byte(fmt.Sprint(i)), 0o644)
		ids = append(ids, mustImport(t, s, src, sbuml.SnapshotOptions{}).ID)
		packs, _ := filepath.Glob(filepath.Join(s.Dir, "objects", "pack", "*.pack"))
		maxPacks = max(maxPacks, len(packs))
	}
	if maxPacks > 40 {
		t.Errorf("%d packs after 60 imports: small packs are not merged", maxPacks)
	}
	t.Logf("at most %d packs during 60 imports", maxPacks)
	requireFsckClean(t, s)
	again, err := sbuml.Open(s.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		out := mustExport(t, again, id.String())
		if b, err := os.ReadFile(filepath.Join(out, "n")); err != nil || string(b) != fmt.Sprint(i) {
			t.Fatalf("snapshot %d: n holds %q, %v", i, b, err)
		}
	}
}

// A push holds off gc in the pushing scrapbook until it is done: a gc
// started while the remote moves its refs (here, by a server that runs it
// when the ref update arrives) is refused, so the snapshot pushed and the
// tracking ref set after stay whole.
func TestPushHoldsOffGc(t *testing.T) {
	ctx := context.Background()
	a := remoteBook(t)
	work := newRemoteWork(t)
	remoteImport(t, a, work.dir, "first")
	b := remoteBook(t)
	d, err := transport.OpenDir(b.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var gcErr error
	server := transport.NewServer(d, transport.ServerOptions{Token: "tok"})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/refs/update") {
			_, gcErr = a.Gc(ctx, sbuml.GcOptions{})
		}
		server.ServeHTTP(w, r)
	}))
	defer srv.Close()
	defer func(w time.Duration) { scrapbook.LockWait = w }(scrapbook.LockWait)
	scrapbook.LockWait = 0
	if _, err := a.Push(ctx, srv.URL, []string{"main"}, sbuml.TransferOptions{TokenFile: writeToken(t, "tok")}); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(gcErr, scrapbook.ErrBusy) {
		t.Errorf("gc during a push: %v", gcErr)
	}
	requireFsckClean(t, a)
}
