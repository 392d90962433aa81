package sbuml

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestChildNumbersTravel checks the child numbering of a snapshot as it
// moves between scrapbooks: a push carries it, so the receiver numbers
// after the sender; a pull brings it back; numbering done apart is
// reported as diverged, never merged silently.
func TestChildNumbersTravel(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a, err := Init(filepath.Join(dir, "a"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Init(filepath.Join(dir, "b"))
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "f"), []byte("state"), 0o644)
	res, err := a.Import(ctx, src, SnapshotOptions{Branch: "main", Message: "a checkpoint"})
	if err != nil {
		t.Fatal(err)
	}
	snap := res.ID
	claim := func(s *Scrapbook, want int) {
		t.Helper()
		n, err := s.claimChild(ctx, snap, "m")
		if err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Fatalf("%s: child %d, want %d", filepath.Base(s.Dir), n, want)
		}
	}
	claim(a, 1)
	claim(a, 2)
	if err := a.AddRemote(RemoteConfig{Name: "b", URL: b.Dir}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Push(ctx, "b", []string{"main"}, TransferOptions{}); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if b, err = Open(b.Dir); err != nil {
		t.Fatal(err)
	}
	claim(b, 3) // after the two the push carried

	pr, err := a.Pull(ctx, "b", nil, TransferOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !hasRefStatus(pr, childrenRef(snap), "updated") {
		t.Errorf("pull: %+v, want %s updated", pr.Refs, childrenRef(snap))
	}
	claim(a, 4)

	// Apart: b, not having pulled a's fourth child, numbers one too.
	claim(b, 4)
	pr, err = a.Pull(ctx, "b", nil, TransferOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !hasRefStatus(pr, childrenRef(snap), "diverged") {
		t.Errorf("pull after numbering apart: %+v, want diverged", pr.Refs)
	}
	if _, n, err := a.lastChild(ctx, snap); err != nil || n != 4 {
		t.Errorf("a's numbering after the diverged pull: %d, %v", n, err)
	}
	// The numbering does not show in log.
	entries, err := a.Log(ctx, LogOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Labels[labelKind] == kindChildClaim {
			t.Errorf("log lists claim %s", e.ID.Short())
		}
	}
}

func hasRefStatus(pr *PullResult, name, status string) bool {
	for _, c := range pr.Refs {
		if c.Name == name && strings.Contains(c.Status, status) {
			return true
		}
	}
	return false
}
