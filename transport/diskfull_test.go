package transport_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	sbuml "github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/internal/tinyfs"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/transport"
)

// TestServerDiskFull pushes to a server whose scrapbook is on a full
// tmpfs: the push fails saying so and moves no ref; once there is room
// again, the next push to the same server, not restarted, goes through
// and leaves the scrapbook whole.
func TestServerDiskFull(t *testing.T) {
	mnt := tinyfs.Mount(t, 16<<20)
	ctx := context.Background()
	dir := filepath.Join(mnt, "scrapbook")
	if _, err := sbuml.Init(dir); err != nil {
		t.Fatal(err)
	}
	d := openDir(t, dir)
	srv := httptest.NewServer(transport.NewServer(d, transport.ServerOptions{Token: testToken}))
	defer srv.Close()

	local := newLocal(t)
	work := t.TempDir()
	writeFiles(t, work, 5, map[string]int{"big.bin": 6 << 20})
	snap, err := local.Import(ctx, work, sbuml.SnapshotOptions{Branch: "main"})
	if err != nil {
		t.Fatal(err)
	}
	push := func() error {
		r := transport.NewSmart(srv.URL, testToken, srv.Client())
		defer r.Close()
		_, _, err := transport.Push(ctx, local.Objects, r, []transport.RefUpdate{{Name: "refs/heads/main", New: snap.ID}}, transport.Options{})
		return err
	}

	emptyFiller := tinyfs.Fill(t, mnt, 2<<20)
	err = push()
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "no space left on device") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("push to a full disk: want one line saying there is no space, got %v", err)
	}
	t.Logf("push to a full disk: %v", err)
	if l, err := d.ListRefs(ctx); err != nil || !l.Get("refs/heads/main").IsZero() {
		t.Fatalf("the failed push moved main (%v)", err)
	}

	emptyFiller()
	if err := push(); err != nil {
		t.Fatalf("push with room again: %v", err)
	}
	fresh, err := sbuml.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if r, err := fresh.Fsck(ctx); err != nil || len(r.Problems) > 0 {
		t.Fatalf("fsck after the pushes: %v %v", err, r)
	}
	if tip, err := fresh.Resolve(ctx, "main"); err != nil || tip != snap.ID {
		t.Fatalf("main is %v (%v), want %s", tip, err, snap.ID.Short())
	}
	if _, err := objects.LoadSnapshot(ctx, fresh.Objects, snap.ID); err != nil {
		t.Fatal(err)
	}
}
