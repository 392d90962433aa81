// Package sbuml is the porcelain of sbuml: open a scrapbook, import and
// export directories, commit and check out running machines, walk history,
// verify and measure the store. Programs script sbuml through this package
// the way SBUML's users scripted its shell commands.
//
// The plumbing lives in sub-packages: chunker cuts bytes, objects encodes
// and stores content-addressed objects, stream builds and reads large byte
// streams, fstree stores directory trees, refs names snapshots, scrapbook
// owns the scrapbook directory on disk, vmm drives QEMU machines, image
// builds the default guest, transport moves snapshots between scrapbooks.
package sbuml

import (
	"errors"
	"os"
	"path/filepath"

	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
	"github.com/sbuml/sbuml/scrapbook"
)

// FormatVersion is the scrapbook layout version written to the config file.
const FormatVersion = scrapbook.FormatVersion

// DefaultBranch is the branch HEAD names in a new scrapbook.
const DefaultBranch = scrapbook.DefaultBranch

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

	// book is the scrapbook on disk, which opened Objects and Refs.
	book *scrapbook.Dir
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
var ErrNotScrapbook = scrapbook.ErrNotScrapbook

// Init creates a scrapbook in dir (created if missing; it must not already
// hold a scrapbook) and opens it.
func Init(dir string) (*Scrapbook, error) {
	b, err := scrapbook.Init(dir)
	if err != nil {
		return nil, err
	}
	return wrap(b), nil
}

// Open opens the scrapbook in dir.
func Open(dir string) (*Scrapbook, error) {
	b, err := scrapbook.Open(dir)
	if err != nil {
		return nil, err
	}
	return wrap(b), nil
}

func wrap(b *scrapbook.Dir) *Scrapbook {
	return &Scrapbook{Dir: b.Path, Objects: b.Objects, Refs: b.Refs, book: b}
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
func (s *Scrapbook) Close() error { return s.book.Close() }

// lockObjects holds the scrapbook's gc lock shared for an operation that
// writes objects or refs (see scrapbook.Dir.HoldToWrite); releasing it
// merges the small packs, if writes have left many.
func (s *Scrapbook) lockObjects() (release func(), err error) { return s.book.HoldToWrite() }

// holdObjects is lockObjects without the merge of packs at the end, for
// operations that only read.
func (s *Scrapbook) holdObjects() (release func(), err error) { return s.book.Hold() }
