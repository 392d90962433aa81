package main

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/stream"
	"github.com/sbuml/sbuml/transport"
)

// ansi matches the escape sequences a bar moves the cursor with.
var ansi = regexp.MustCompile("\x1b\\[[0-9;]*[A-Za-z]")

// TestProgressBar draws bars on an 80-column pseudo-terminal, and
// nothing into a file: every line fits the terminal and shows the
// percentage, done of total, the rate and the time left.
func TestProgressBar(t *testing.T) {
	file, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	quiet := newBarOn(file)
	quiet.transfer(transport.Progress{Phase: "sending", Objects: 5, TotalObjects: 10})
	quiet.done()
	if fi, _ := file.Stat(); fi.Size() != 0 {
		t.Errorf("the bar drew %d bytes into a file", fi.Size())
	}
	file.Close()

	master, slave := openPTY(t)
	if err := unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 80}); err != nil {
		t.Fatal(err)
	}
	b := newBarOn(slave)
	b.transfer(transport.Progress{Phase: "finding", Objects: 7})
	b.transfer(transport.Progress{Phase: "receiving", Objects: 5, TotalObjects: 10})
	store := storeBar{b, "importing"}
	store.update(sbuml.StoreProgress{Stats: stream.Stats{LogicalBytes: 3 << 20}, TotalBytes: 10 << 20})
	store.update(sbuml.StoreProgress{Stats: stream.Stats{LogicalBytes: 10 << 20}, TotalBytes: 10 << 20})
	b.done()
	slave.Close()
	got, _ := io.ReadAll(master) // ends with EIO once the slave is closed

	var lines []string
	for _, l := range strings.FieldsFunc(string(got), func(r rune) bool { return r == '\r' || r == '\n' }) {
		if l = strings.TrimSpace(ansi.ReplaceAllString(l, "")); l != "" {
			lines = append(lines, l)
		}
	}
	for _, l := range lines {
		if n := utf8.RuneCountInString(l); n > 80 {
			t.Errorf("a line of %d columns on an 80-column terminal: %q", n, l)
		}
	}
	want := []*regexp.Regexp{
		regexp.MustCompile(`finding \(7/-, \d+ obj/s\)`),                                             // no total yet: a spinner and the count
		regexp.MustCompile(`^receiving\s+50% .*\(5/10, \d+ obj/s\) \[\d+s:\d+s\]`),                   // objects
		regexp.MustCompile(`^importing\s+30% .*\(3\.0/10 MiB, [0-9.]+ [KMGT]?i?B/s\) \[\d+s:\d+s\]`), // bytes
	}
	for _, w := range want {
		found := false
		for _, l := range lines {
			found = found || w.MatchString(l)
		}
		if !found {
			t.Errorf("no line matches %s in\n%s", w, strings.Join(lines, "\n"))
		}
	}
}
