package scrapbook

import (
	"context"
	"errors"
	"fmt"
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
		{`{"format":4}`, "says scrapbook format 4, this sbuml reads formats 1 to 3"},
		{`{"format":-1}`, "says scrapbook format -1"},
		{`{"format":0}`, "names no format"},
		{`{}`, "names no format"},
		{`{"format":1,"x":1}`, "is damaged"},
		{`{"format":1} {}`, "more after the JSON object"},
		{`not json`, `it should read {"format":3}`},
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

// A scrapbook of an older format (1, 2) opens as it is, is left so by
// readers, and says format 3 from the first write on: its objects may
// then be of version 2, or deltas, which their readers refuse.
func TestOldFormatUpgraded(t *testing.T) {
	for _, old := range []int{1, 2} {
		t.Run(fmt.Sprint("format ", old), func(t *testing.T) {
			dir := t.TempDir()
			d, err := Init(dir)
			if err != nil {
				t.Fatal(err)
			}
			d.Close()
			name := filepath.Join(dir, ConfigFile)
			if b, _ := os.ReadFile(name); string(b) != `{"format":3}`+"\n" {
				t.Fatalf("a new scrapbook's config: %q", b)
			}
			oldConfig := fmt.Sprintf(`{"format":%d}`+"\n", old)
			if err := os.WriteFile(name, []byte(oldConfig), 0o644); err != nil {
				t.Fatal(err)
			}
			d, err = Open(dir)
			if err != nil {
				t.Fatalf("open a scrapbook of format %d: %v", old, err)
			}
			defer d.Close()
			release, err := d.Hold()
			if err != nil {
				t.Fatal(err)
			}
			release()
			if b, _ := os.ReadFile(name); string(b) != oldConfig {
				t.Errorf("a reader changed the config to %q", b)
			}
			release, err = d.HoldToWrite()
			if err != nil {
				t.Fatal(err)
			}
			release()
			if b, _ := os.ReadFile(name); string(b) != `{"format":3}`+"\n" {
				t.Errorf("after a write the config says %q, want format 3", b)
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
