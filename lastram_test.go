package sbuml

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/stream"
)

// TestLastRAMValid checks when a commit may take page IDs from the copy
// of the last snapshot's RAM: only when its table names the RAM stream
// of the machine's last snapshot and fits the RAM file and the copy.
func TestLastRAMValid(t *testing.T) {
	const pages = 8
	stream := objects.Sum([]byte("the last snapshot's RAM"))
	other := objects.Sum([]byte("another RAM"))
	cases := []struct {
		name  string
		setup func(l *lastRAM)
		want  objects.ID
		valid bool
	}{
		{"table of the last snapshot", nil, stream, true},
		{"no table", func(l *lastRAM) { l.invalidate() }, stream, false},
		{"last snapshot unknown", nil, objects.Zero, false},
		{"table of another stream", nil, other, false},
		{"no copy", func(l *lastRAM) { os.Remove(l.copyPath()) }, stream, false},
		{"copy of another size", func(l *lastRAM) { os.Truncate(l.copyPath(), pages*ramPage/2) }, stream, false},
		{"table of another size", func(l *lastRAM) { l.ids = l.ids[:pages-1]; l.save(stream, nil) }, stream, false},
		{"table of another version", func(l *lastRAM) {
			path := filepath.Join(l.dir, lastRAMTable)
			b, _ := os.ReadFile(path)
			b[16]++
			os.WriteFile(path, b, 0o600)
		}, stream, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ramFile := filepath.Join(t.TempDir(), "ram")
			if err := os.WriteFile(ramFile, make([]byte, pages*ramPage), 0o600); err != nil {
				t.Fatal(err)
			}
			// What a commit leaves: the copy and its table.
			l, err := openLastRAM(ramFile, stream)
			if err != nil {
				t.Fatal(err)
			}
			if l.valid {
				t.Fatal("a new copy is valid")
			}
			if err := os.WriteFile(l.copyPath(), make([]byte, pages*ramPage), 0o600); err != nil {
				t.Fatal(err)
			}
			for k := range l.ids {
				l.ids[k] = objects.Sum([]byte{byte(k)})
			}
			if err := l.save(stream, nil); err != nil {
				t.Fatal(err)
			}
			if c.setup != nil {
				c.setup(l)
			}
			got, err := openLastRAM(ramFile, c.want)
			if err != nil {
				t.Fatal(err)
			}
			if got.valid != c.valid || len(got.ids) != pages {
				t.Fatalf("valid %v with %d pages, want %v with %d", got.valid, len(got.ids), c.valid, pages)
			}
			if got.valid && got.ids[3] != objects.Sum([]byte{3}) {
				t.Fatal("the table's IDs did not come back")
			}
			if !got.valid && !got.ids[3].IsZero() {
				t.Fatal("an invalid table's IDs were kept")
			}
		})
	}
}

// TestLastRAMSaveInPlace checks that a commit that reused the table
// writes back only the IDs of the pages it hashed, and the next commit
// reads the table whole and right.
func TestLastRAMSaveInPlace(t *testing.T) {
	const pages = 64
	ramFile := filepath.Join(t.TempDir(), "ram")
	os.WriteFile(ramFile, make([]byte, pages*ramPage), 0o600)
	first, second := objects.Sum([]byte("first")), objects.Sum([]byte("second"))
	l, err := openLastRAM(ramFile, first)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(l.copyPath(), make([]byte, pages*ramPage), 0o600)
	for k := range l.ids {
		l.ids[k] = objects.Sum([]byte{byte(k)})
	}
	if err := l.save(first, nil); err != nil {
		t.Fatal(err)
	}
	// The next commit: the table is valid, then cleared while the copy
	// changes, and pages 3-5 and 60 get new IDs.
	l, err = openLastRAM(ramFile, first)
	if err != nil || !l.valid {
		t.Fatalf("reopened: valid %v, %v", l != nil && l.valid, err)
	}
	if err := l.invalidate(); err != nil {
		t.Fatal(err)
	}
	if again, _ := openLastRAM(ramFile, first); again.valid {
		t.Fatal("a table being updated is valid")
	}
	changed := []stream.PageRange{{Start: 3, End: 6}, {Start: 60, End: 61}}
	for _, r := range changed {
		for k := r.Start; k < r.End; k++ {
			l.ids[k] = objects.Sum([]byte{byte(k), 1})
		}
	}
	if err := l.save(second, changed); err != nil {
		t.Fatal(err)
	}
	got, err := openLastRAM(ramFile, second)
	if err != nil || !got.valid {
		t.Fatalf("after the update: valid %v, %v", got != nil && got.valid, err)
	}
	if !slices.Equal(got.ids, l.ids) {
		t.Fatal("the table read back differs from the IDs saved")
	}
}
