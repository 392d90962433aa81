package transport_test

import (
	"context"
	"net/http/httptest"
	"testing"

	sbuml "github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/transport"
)

// benchSource imports 32 MiB of incompressible files.
func benchSource(b *testing.B) (*sbuml.Scrapbook, objects.ID, int64) {
	b.Helper()
	book, err := sbuml.Init(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	work := b.TempDir()
	writeFiles(b, work, 1, map[string]int{"a": 16 << 20, "b": 8 << 20, "c/d": 8 << 20})
	r, err := book.Import(context.Background(), work, sbuml.SnapshotOptions{Message: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	_, size := sum(reachable(b, book.Objects, r.ID), nil)
	return book, r.ID, size
}

// BenchmarkFetchSmart fetches a 32 MiB snapshot over smart HTTP on the
// loopback into an empty scrapbook.
func BenchmarkFetchSmart(b *testing.B) {
	book, id, size := benchSource(b)
	d, err := transport.OpenDir(book.Dir)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	srv := httptest.NewServer(transport.NewServer(d, transport.ServerOptions{}))
	defer srv.Close()
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		local, err := sbuml.Init(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := transport.Fetch(context.Background(), local.Objects, transport.NewSmart(srv.URL, "", srv.Client()), []objects.ID{id}, transport.Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPushSmart pushes a 32 MiB snapshot over smart HTTP on the
// loopback into an empty scrapbook.
func BenchmarkPushSmart(b *testing.B) {
	book, id, size := benchSource(b)
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		remote, err := sbuml.Init(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		d, err := transport.OpenDir(remote.Dir)
		if err != nil {
			b.Fatal(err)
		}
		srv := httptest.NewServer(transport.NewServer(d, transport.ServerOptions{Token: "t"}))
		b.StartTimer()
		_, _, err = transport.Push(context.Background(), book.Objects, transport.NewSmart(srv.URL, "t", srv.Client()),
			[]transport.RefUpdate{{Name: "refs/heads/main", New: id}}, transport.Options{})
		b.StopTimer()
		srv.Close()
		d.Close()
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
