package refs

import (
	"fmt"
	"strings"
	"testing"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/util"
	"github.com/sbuml/sbuml/objects"
)

// reflogHistory gives s refs whose reflogs hold creations, moves, a
// deletion and a re-creation, updates through HEAD, and a line an update
// killed before the ref moved left behind.
func reflogHistory(t *testing.T, fs billy.Filesystem, s *Store) {
	t.Helper()
	if err := s.SetSymbolic("HEAD", "refs/heads/main"); err != nil {
		t.Fatal(err)
	}
	mustUpdate(t, s, "HEAD", objects.Zero, id(1), "import: first")
	mustUpdate(t, s, "refs/heads/main", id(1), id(2), "import:  two\tspaces")
	mustUpdate(t, s, "refs/heads/feature/x", objects.Zero, id(2), "branch")
	mustUpdate(t, s, "refs/heads/feature/x", id(2), objects.Zero, "branch -d")
	mustUpdate(t, s, "refs/heads/feature/x", objects.Zero, id(3), "branch again")
	// Killed after its reflog line, before the rename: main stays at 2.
	killed := formatReflogLine(ReflogEntry{Old: id(2), New: id(9), Time: s.now(), Why: "killed"})
	appendFile(t, fs, "logs/refs/heads/main", killed)
	mustUpdate(t, s, "HEAD", id(2), id(4), "import: héllo")
}

func appendFile(t *testing.T, fs billy.Filesystem, name, content string) {
	t.Helper()
	old, err := util.ReadFile(fs, name)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, fs, name, string(old)+content)
}

// CheckReflogs finds nothing wrong with reflogs as writers leave them,
// including a line of an update that was killed, and finds every flipped
// bit of an ID, a separator or a line end, naming the file and line.
func TestCheckReflogs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fs billy.Filesystem, s *Store) {
		reflogHistory(t, fs, s)
		if d := s.CheckReflogs(); len(d) != 0 {
			t.Fatalf("CheckReflogs of sound reflogs: %v", d)
		}
		const file = "logs/refs/heads/main"
		clean, err := util.ReadFile(fs, file)
		if err != nil {
			t.Fatal(err)
		}
		// Each bit flip must be found where the line holds what can be
		// checked: the IDs, the separators around them and after the
		// time, the line end; not the new ID of the line that never took
		// effect (the third), whose reason and time digits may change
		// unseen.
		const idCols, sepAfterTime = 2*2*objects.IDSize + 2, 2*2*objects.IDSize + 2 + 10
		found, flips := 0, 0
		line, col := 1, 0
		for i := range clean {
			must := col < idCols || col == sepAfterTime || clean[i] == '\n'
			if line == 3 && col > 2*objects.IDSize && col < idCols-1 {
				must = false
			}
			for _, mask := range []byte{0x01, 0x08, 0x20, 0x80} {
				damaged := append([]byte(nil), clean...)
				damaged[i] ^= mask
				writeFile(t, fs, file, string(damaged))
				d := s.CheckReflogs()
				flips++
				switch {
				case len(d) > 0:
					found++
					if !strings.HasPrefix(d[0].Error(), s.display(file)+": line ") {
						t.Fatalf("damage reported as %q, want it to name %s and a line", d[0], s.display(file))
					}
				case must:
					t.Errorf("line %d column %d, %q ^ %#x: not found", line, col, clean[i], mask)
				}
			}
			col++
			if clean[i] == '\n' {
				line, col = line+1, 0
			}
		}
		writeFile(t, fs, file, string(clean))
		t.Logf("%d of %d bit flips found", found, flips)
		if found*100 < flips*85 {
			t.Errorf("found only %d of %d bit flips", found, flips)
		}
	})
}

// A reflog whose last line does not leave the ref where it is, or that
// ends without a newline, is damaged.
func TestCheckReflogsEnd(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fs billy.Filesystem, s *Store) {
		reflogHistory(t, fs, s)
		appendFile(t, fs, "logs/refs/heads/feature/x", formatReflogLine(ReflogEntry{Old: id(3), New: id(5), Time: s.now(), Why: "lost"}))
		appendFile(t, fs, "logs/refs/heads/feature/x", formatReflogLine(ReflogEntry{Old: id(5), New: id(6), Time: s.now(), Why: "lost"}))
		appendFile(t, fs, "logs/HEAD", "cut")
		d := fmt.Sprint(s.CheckReflogs())
		for _, want := range []string{
			"feature/x: line 5: the last line leaves refs/heads/feature/x at " + id(6).String() + ", but it is at " + id(3).String(),
			"logs/HEAD: line 3: no newline at end",
		} {
			if !strings.Contains(d, want) {
				t.Errorf("CheckReflogs = %s; want it to say %q", d, want)
			}
		}
	})
}
