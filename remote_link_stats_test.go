package sbuml

import (
	"context"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/sbuml/sbuml/objects"
)

// A checkout of a link reads the snapshot's top tree before it fetches
// the rest; from a web server that ignores range requests (as python3 -m
// http.server does), that first read downloads the whole pack. The
// bytes on the wire count it.
func TestFetchLinkCountsEveryByte(t *testing.T) {
	ctx := context.Background()
	a, err := Init(filepath.Join(t.TempDir(), "a"))
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	data := make([]byte, 3<<20)
	rand.NewChaCha8([32]byte{5}).Read(data)
	if err := os.WriteFile(filepath.Join(src, "random.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Import(ctx, src, SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(t.TempDir(), "pub")
	files := http.FileServer(http.Dir(pub))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("Range") // a server that sends whole files
		files.ServeHTTP(w, r)
	}))
	defer srv.Close()
	if _, err := a.Publish(ctx, pub, srv.URL, TransferOptions{}); err != nil {
		t.Fatal(err)
	}
	var packBytes int64
	packs, _ := filepath.Glob(filepath.Join(pub, "packs", "*.pack"))
	for _, p := range packs {
		fi, _ := os.Stat(p)
		packBytes += fi.Size()
	}

	b, err := Init(filepath.Join(t.TempDir(), "b"))
	if err != nil {
		t.Fatal(err)
	}
	peeked := false
	_, st, err := b.fetchLink(ctx, srv.URL+"/#main", TransferOptions{}, func(*objects.Tree) error { peeked = true; return nil })
	if err != nil || !peeked {
		t.Fatalf("fetch: %v (peeked: %v)", err, peeked)
	}
	if st.BytesReceived < packBytes {
		t.Errorf("fetch says %d bytes received on the wire; it downloaded a pack of %d", st.BytesReceived, packBytes)
	}
}
