package transport_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbuml/sbuml/scrapbook"
	"github.com/sbuml/sbuml/transport"
)

// A scrapbook remote is opened through package scrapbook, like every
// scrapbook: one of another format is refused, not misread, and a
// directory that is no scrapbook says what to run.
func TestOpenScrapbookChecksFormat(t *testing.T) {
	dir := t.TempDir()
	book, err := scrapbook.Init(dir)
	if err != nil {
		t.Fatal(err)
	}
	book.Close()
	d, err := transport.OpenDir(dir)
	if err != nil {
		t.Fatalf("OpenDir of a scrapbook: %v", err)
	}
	d.Close()
	if err := os.WriteFile(filepath.Join(dir, scrapbook.ConfigFile), []byte(`{"format":4}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, open := range map[string]func(string) (*transport.Dir, error){"OpenDir": transport.OpenDir, "OpenScrapbook": transport.OpenScrapbook} {
		if _, err := open(dir); err == nil || !strings.Contains(err.Error(), "format 4") {
			t.Errorf("%s of a scrapbook of format 4: %v", name, err)
		}
	}
	if _, err := transport.OpenScrapbook(t.TempDir()); !errors.Is(err, scrapbook.ErrNotScrapbook) {
		t.Errorf("OpenScrapbook of an empty directory: %v", err)
	}
}
