package sbuml_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	sbuml "github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/transport"
)

// BenchmarkPushIdleCommit measures what moves on the wire, over smart
// HTTP on the loopback, for an idle commit of a 512 MiB guest, per byte
// of the commit's new objects: its push from the scrapbook to a server
// that has the parent (push-wire/new, bytes sent and received), the same
// objects sent to a second server by transport.Send with no haves, which
// must find the parent by asking (nohaves-wire/new), and a pull of the
// commit into a clone that has the parent (pull-wire/new).
//
//	go test -run '^$' -bench BenchmarkPushIdleCommit -benchtime 5x .
func BenchmarkPushIdleCommit(b *testing.B) {
	if testing.Short() {
		b.Skip("boots a guest; skipped with -short")
	}
	ctx := context.Background()
	s := guestScrapbook(b, 1)
	g := bootGuest(b, s, "m1", 512<<20)
	prev := g.commit(sbuml.CommitOptions{}).ID
	srv, _ := smartServer(b, "tok")
	if err := s.AddRemote(sbuml.RemoteConfig{Name: "origin", URL: srv.URL, TokenFile: writeToken(b, "tok")}); err != nil {
		b.Fatal(err)
	}
	if _, err := s.Push(ctx, "origin", []string{"m1"}, sbuml.TransferOptions{}); err != nil {
		b.Fatal(err)
	}
	other, _ := smartServer(b, "tok")
	plain := transport.NewSmart(other.URL, "tok", other.Client())
	defer plain.Close()
	if _, _, err := transport.Push(ctx, s.Objects, plain, []transport.RefUpdate{{Name: "refs/heads/m1", New: prev}}, transport.Options{}); err != nil {
		b.Fatal(err)
	}
	puller, _, err := sbuml.Clone(ctx, srv.URL, filepath.Join(b.TempDir(), "clone"), sbuml.TransferOptions{})
	if err != nil {
		b.Fatal(err)
	}
	var newBytes, pushWire, plainWire, pullWire int64
	b.ResetTimer()
	for range b.N {
		time.Sleep(3 * time.Second) // idle
		id := g.commit(sbuml.CommitOptions{Message: "idle"}).ID
		n := newObjectBytes(b, s.Objects, prev, id)
		pushed, err := s.Push(ctx, "origin", []string{"m1"}, sbuml.TransferOptions{})
		if err != nil {
			b.Fatal(err)
		}
		sent, err := transport.Send(ctx, s.Objects, plain, []objects.ID{id}, transport.Options{})
		if err != nil {
			b.Fatal(err)
		}
		if err := plain.UpdateRef(ctx, "refs/heads/m1", prev, id); err != nil {
			b.Fatal(err)
		}
		pulled, err := puller.Pull(ctx, "origin", nil, sbuml.TransferOptions{})
		if err != nil {
			b.Fatal(err)
		}
		p, o, l := wire(pushed.Stats), wire(sent), wire(pulled.Stats)
		b.Logf("idle commit: %d new bytes; push %d on the wire (%.3fx), without haves %d (%.3fx), pull %d (%.3fx)",
			n, p, float64(p)/float64(n), o, float64(o)/float64(n), l, float64(l)/float64(n))
		newBytes, pushWire, plainWire, pullWire = newBytes+n, pushWire+p, plainWire+o, pullWire+l
		prev = id
	}
	b.StopTimer()
	b.ReportMetric(float64(newBytes)/1024/float64(b.N), "new-KiB")
	b.ReportMetric(float64(pushWire)/float64(newBytes), "push-wire/new")
	b.ReportMetric(float64(plainWire)/float64(newBytes), "nohaves-wire/new")
	b.ReportMetric(float64(pullWire)/float64(newBytes), "pull-wire/new")
}

// wire is what a transfer moved on the wire, both ways.
func wire(st *transport.Stats) int64 { return st.BytesSent + st.BytesReceived }
