package scrapbook

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbuml/sbuml/objects"
)

func TestInitOpen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "book")
	if Is(dir) {
		t.Fatal("Is says a missing directory holds a scrapbook")
	}
	if _, err := Open(dir); !errors.Is(err, ErrNotScrapbook) || !strings.Contains(err.Error(), "sbuml init") {
		t.Fatalf("Open of no scrapbook: %v", err)
	}
	d, err := Init(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if !Is(dir) || d.Path != dir {
		t.Fatalf("after Init: Is %v, Path %s", Is(dir), d.Path)
	}
	if head, err := d.Refs.Symbolic("HEAD"); err != nil || head != "refs/heads/"+DefaultBranch {
		t.Errorf("HEAD of a new scrapbook names %q (%v)", head, err)
	}
	if _, err := Init(dir); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("Init over a scrapbook: %v", err)
	}
	// What one opener writes and syncs, another sees.
	enc := objects.EncodeChunk([]byte("kept"))
	id, _, err := objects.Save(context.Background(), d.Objects, enc)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Objects.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	o, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if ok, err := o.Objects.Has(context.Background(), id); !ok || err != nil {
		t.Errorf("another opener does not see a synced object: %v, %v", ok, err)
	}
}

// Open refuses a config file it does not understand, in one line that
// names the file and what it should hold.
func TestOpenChecksConfig(t *testing.T) {
	tests := []struct {
		config string
		want   string
	}{
		{`{"format":2}`, "says scrapbook format 2, this sbuml reads format 1"},
		{`{"format":0}`, "names no format"},
		{`{}`, "names no format"},
		{`{"format":1,"x":1}`, "is damaged"},
		{`{"format":1} {}`, "more after the JSON object"},
		{`not json`, `it should read {"format":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.config, func(t *testing.T) {
			dir := t.TempDir()
			d, err := Init(dir)
			if err != nil {
				t.Fatal(err)
			}
			d.Close()
			name := filepath.Join(dir, ConfigFile)
			if err := os.WriteFile(name, []byte(tt.config), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err = Open(dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), name) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Open: %v; want one line naming %s and saying %q", err, name, tt.want)
			}
		})
	}
}

// Holding the scrapbook to write keeps gc out, and gc keeps writers out.
func TestHold(t *testing.T) {
	d, err := Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	defer func(w time.Duration) { LockWait = w }(LockWait)
	LockWait = 0
	release, err := d.HoldToWrite()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.HoldExclusive(); !errors.Is(err, ErrBusy) {
		t.Errorf("gc beside a writer: %v, want ErrBusy", err)
	}
	release()
	gc, err := d.HoldExclusive()
	if err != nil {
		t.Fatal(err)
	}
	defer gc()
	if _, err := d.Hold(); !errors.Is(err, ErrBusy) {
		t.Errorf("a writer beside gc: %v, want ErrBusy", err)
	}
}
