// Package sbuml is the porcelain of sbuml: open a scrapbook, import and
// export directories, commit and check out running machines, walk history,
// verify and measure the store. Programs script sbuml through this package
// the way SBUML's users scripted its shell commands.
//
// The plumbing lives in sub-packages: chunker cuts bytes, objects encodes
// and stores content-addressed objects, stream builds and reads large byte
// streams, fstree stores directory trees, refs names snapshots, vmm drives
// QEMU machines, image builds the default guest.
package sbuml

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/osfs"
	"github.com/sbuml/sbuml/internal/atomicfile"
	"github.com/sbuml/sbuml/internal/gclock"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
)

// FormatVersion is the scrapbook layout version written to the config file.
const FormatVersion = 1

// DefaultBranch is the branch HEAD names in a new scrapbook.
const DefaultBranch = "main"

// A Scrapbook is an opened scrapbook directory: its object store and refs.
//
// Once a write into its object store has failed (a full disk, an I/O
// error), the Scrapbook writes no more: every later write returns that
// first error, since objects it believed stored may not be. What it had
// written and not yet published is removed at once. Close it and Open
// the directory again to go on.
type Scrapbook struct {
	// Dir is the scrapbook's directory.
	Dir string
	// Objects holds every object of every snapshot.
	Objects objects.Store
	// Refs names snapshots: branches, tags, remote-tracking refs.
	Refs *refs.Store

	fs billy.Filesystem
}

// config is the content of the scrapbook's config file.
type config struct {
	Format int `json:"format"`
}

// DefaultDir returns $SBUML_DIR, else ~/.sbuml.
func DefaultDir() string {
	if d := os.Getenv("SBUML_DIR"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ".sbuml"
	}
	return filepath.Join(home, ".sbuml")
}

// ErrNotScrapbook is returned by Open for a directory that holds no scrapbook.
var ErrNotScrapbook = errors.New("not a scrapbook")

// Init creates a scrapbook in dir (created if missing; it must not already
// hold a scrapbook) and opens it.
func Init(dir string) (*Scrapbook, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("init %s: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(abs, "config")); err == nil {
		return nil, fmt.Errorf("init %s: a scrapbook already exists there", abs)
	}
	for _, d := range []string{"objects", "refs/heads", "refs/tags"} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o755); err != nil {
			return nil, fmt.Errorf("init %s: %w", abs, err)
		}
	}
	s := open(abs)
	if err := s.Refs.SetSymbolic("HEAD", "refs/heads/"+DefaultBranch); err != nil {
		return nil, fmt.Errorf("init %s: %w", abs, err)
	}
	if err := atomicfile.WriteFile(filepath.Join(abs, "config"), append(configText(), '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("init %s: %w", abs, err)
	}
	return s, nil
}

// Open opens the scrapbook in dir.
func Open(dir string) (*Scrapbook, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	name := filepath.Join(abs, "config")
	b, err := os.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open %s: %w (run 'sbuml init' to make one)", abs, ErrNotScrapbook)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", abs, err)
	}
	if err := readConfig(b); err != nil {
		return nil, fmt.Errorf("open %s: config file %s %w", abs, name, err)
	}
	return open(abs), nil
}

// readConfig checks the content of a config file. It is strict, since
// the file has no checksum: JSON of exactly the fields this sbuml
// writes, and the format it reads.
func readConfig(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c config
	if err := dec.Decode(&c); err != nil {
		return fmt.Errorf("is damaged (%v); it should read %s", err, configText())
	}
	if len(bytes.TrimSpace(b[dec.InputOffset():])) > 0 {
		return fmt.Errorf("is damaged (more after the JSON object); it should read %s", configText())
	}
	switch {
	case c.Format == 0:
		return fmt.Errorf("is damaged (it names no format); it should read %s", configText())
	case c.Format != FormatVersion:
		return fmt.Errorf("says scrapbook format %d, this sbuml reads format %d: damaged, or written by another sbuml", c.Format, FormatVersion)
	}
	return nil
}

// configText is the content of the config file of a new scrapbook.
func configText() []byte {
	b, _ := json.Marshal(config{Format: FormatVersion})
	return b
}

// OpenOrInit opens the scrapbook in dir, creating it first if dir holds
// none. The sbuml command does not use it: there, as in git, only init
// and clone make a scrapbook, so that a mistyped path is an error rather
// than a new, empty scrapbook.
func OpenOrInit(dir string) (*Scrapbook, error) {
	s, err := Open(dir)
	if errors.Is(err, ErrNotScrapbook) {
		return Init(dir)
	}
	return s, err
}

// Close releases the files the scrapbook holds open (its pack files).
// Every operation has finished writing by the time it returns, so Close
// loses nothing; the Scrapbook must not be used afterwards.
func (s *Scrapbook) Close() error {
	if c, ok := s.Objects.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

func open(abs string) *Scrapbook {
	fsys := osfs.New(abs)
	return &Scrapbook{
		Dir:     abs,
		Objects: objects.NewPacked(fsys, "objects", filepath.Join(abs, "objects")),
		Refs:    refs.New(fsys),
		fs:      fsys,
	}
}

// lockObjects holds the scrapbook's gc lock shared for an operation that
// writes objects or refs, or reads a snapshot no ref may name: gc cannot
// remove objects under it, and it cannot start while gc runs (see
// internal/gclock). Call the returned function when done.
//
// Releasing it also merges the small packs, if writes have left many (see
// compact).
func (s *Scrapbook) lockObjects() (release func(), err error) {
	unlock, err := s.holdObjects()
	if err != nil {
		return nil, err
	}
	return func() {
		unlock()
		s.compact()
	}, nil
}

// holdObjects is lockObjects without the merge of packs at the end, for
// operations that only read.
func (s *Scrapbook) holdObjects() (release func(), err error) {
	unlock, err := gclock.Shared(s.Dir, gclock.Wait)
	if err != nil {
		return nil, err
	}
	// Another process may have repacked since this one last looked.
	if err := s.refresh(); err != nil {
		unlock()
		return nil, err
	}
	return unlock, nil
}

// refresh makes the object store see what other processes have
// published or removed since it last looked.
func (s *Scrapbook) refresh() error {
	if r, ok := s.Objects.(objects.Refresher); ok {
		return r.Refresh()
	}
	return nil
}

// compactAfter is how many small packs (under 128 MiB) a scrapbook may
// hold before a writer, done, merges them. Every process that opens the scrapbook
// reads every pack index: with thousands of packs (two or three per
// commit) each command took 0.2 s longer.
const compactAfter = 32

// compact merges the packs under 128 MiB into one once there are more
// than compactAfter packs: gc's repack, removing nothing, so it needs no
// walk of the snapshots. It is best effort and skipped while another
// process uses the scrapbook.
func (s *Scrapbook) compact() {
	r, ok := s.Objects.(objects.Repacker)
	if !ok || r.SmallPacks() <= compactAfter {
		return
	}
	release, err := gclock.Exclusive(s.Dir)
	if err != nil {
		return
	}
	defer release()
	ctx := context.Background()
	if plan, err := r.PlanRepack(ctx, func(objects.ID) bool { return true }); err == nil {
		r.Repack(ctx, plan, nil)
	}
}
