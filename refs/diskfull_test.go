package refs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/go-git/go-billy/v5/osfs"

	"github.com/sbuml/sbuml/internal/tinyfs"
	"github.com/sbuml/sbuml/objects"
)

// TestUpdateDiskFull moves refs on a small tmpfs left with no room, one
// page, two pages..., so that space runs out while the lock file is
// written, while the reflog is appended to, or not at all. An update that
// fails says so in one line and changes nothing: the ref and its reflog
// are as they were and no lock file is left.
func TestUpdateDiskFull(t *testing.T) {
	mnt := tinyfs.Mount(t, 1<<20)
	s := New(osfs.New(filepath.Join(mnt, "book")))
	if err := s.Update("refs/heads/main", objects.Zero, id(1), "first"); err != nil {
		t.Fatal(err)
	}
	page := int64(os.Getpagesize())
	var failedAt []string
	for n := 0; n <= 8; n++ {
		failedBefore := len(failedAt)
		for _, name := range []string{"refs/heads/main", fmt.Sprintf("refs/heads/new%d", n)} {
			before, beforeErr := s.Get(name)
			logBefore, _ := s.Reflog(name)
			emptyFiller := tinyfs.Fill(t, mnt, int64(n)*page)
			err := s.Update(name, before, id(100+n), "disk full")
			emptyFiller()
			if err == nil {
				continue
			}
			failedAt = append(failedAt, fmt.Sprintf("%s with %d pages free: %v", name, n, err))
			if !errors.Is(err, syscall.ENOSPC) || strings.Contains(err.Error(), "\n") {
				t.Errorf("%s, %d pages free: want one line saying there is no space, got %q", name, n, err)
			}
			after, afterErr := s.Get(name)
			if after != before || (afterErr == nil) != (beforeErr == nil) {
				t.Errorf("%s, %d pages free: the ref went from %v to %v", name, n, before, after)
			}
			if logAfter, _ := s.Reflog(name); len(logAfter) != len(logBefore) {
				t.Errorf("%s, %d pages free: the reflog went from %d to %d entries", name, n, len(logBefore), len(logAfter))
			}
			locks, _ := filepath.Glob(filepath.Join(mnt, "book", "refs", "heads", "*.lock"))
			if len(locks) > 0 {
				t.Errorf("%s, %d pages free: lock files left: %v", name, n, locks)
			}
		}
		if len(failedAt) == failedBefore {
			break // this much room fits every update
		}
		if n == 8 {
			t.Fatal("updates still fail with 8 pages free")
		}
	}
	t.Logf("updates that ran out of space:\n%s", strings.Join(failedAt, "\n"))
	if len(failedAt) < 3 {
		t.Errorf("only %d updates ran out of space", len(failedAt))
	}
}
