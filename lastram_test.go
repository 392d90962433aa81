package sbuml

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sbuml/sbuml/objects"
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
		{"table of another size", func(l *lastRAM) { l.ids = l.ids[:pages-1]; l.save(stream) }, stream, false},
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
			if err := l.save(stream); err != nil {
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
