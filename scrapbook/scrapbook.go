// Package scrapbook owns the scrapbook on disk: its directory layout, its
// config file and format version, opening its object store and refs, the
// gc lock that keeps gc and writers apart, and the merge of small packs
// that writers leave. Everything that opens a scrapbook goes through it:
// the porcelain (package sbuml), transport's Dir remote and so sbuml
// serve. docs/format.md describes the layout.
package scrapbook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/osfs"

	"github.com/sbuml/sbuml/internal/atomicfile"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
)

// FormatVersion is the layout version written to the config file. Format
// 2 scrapbooks may hold version 2 objects (patch nodes, streams that name
// one; see docs/format.md), which a reader of format 1 would refuse one
// object at a time: it refuses the scrapbook instead, in one line. Format
// 3 scrapbooks may hold chunks stored as deltas, in packs whose index is
// version 3 (see objects.DeltaPutter), which a reader of format 2 would
// take for corrupt objects.
const FormatVersion = 3

// oldestFormat is the oldest format this package reads. A scrapbook of
// format 1 or 2 is read as it is and says format 3 once objects are
// written to it (HoldToWrite).
const oldestFormat = 1

// DefaultBranch is the branch HEAD names in a new scrapbook.
const DefaultBranch = "main"

// The names of a scrapbook's directory (see docs/format.md).
const (
	ConfigFile  = "config"   // {"format":3}
	ObjectsDir  = "objects"  // the pack store, and loose objects
	RemotesFile = "remotes"  // the remotes it pushes to and pulls from
	MachinesDir = "machines" // machines booted or checked out by name
	ImagesDir   = "images"   // base images, unpacked once for booting
	SSHDir      = "ssh"      // the scrapbook's ssh key pair
	LockFile    = "gc.lock"  // the gc lock (see LockShared)
)

// ErrNotScrapbook is returned by Open for a directory that holds no
// scrapbook.
var ErrNotScrapbook = errors.New("not a scrapbook")

// A Dir is an open scrapbook directory: its object store and its refs.
type Dir struct {
	// Path is the scrapbook's absolute directory.
	Path string
	// Objects holds every object of every snapshot: a pack store.
	Objects objects.Store
	// Refs names snapshots: branches, tags, remote-tracking refs.
	Refs *refs.Store

	fs billy.Filesystem
	// format is the format the config file says (see Upgrade).
	formatMu sync.Mutex
	format   int
}

// config is the content of the config file.
type config struct {
	Format int `json:"format"`
}

// Init creates a scrapbook in dir (created if missing; it must not
// already hold a scrapbook) and opens it. HEAD names DefaultBranch.
func Init(dir string) (*Dir, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("init %s: %w", dir, err)
	}
	if Is(abs) {
		return nil, fmt.Errorf("init %s: a scrapbook already exists there", abs)
	}
	for _, d := range []string{ObjectsDir, "refs/heads", "refs/tags"} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o755); err != nil {
			return nil, fmt.Errorf("init %s: %w", abs, err)
		}
	}
	d := open(abs)
	d.format = FormatVersion
	if err := d.Refs.SetSymbolic("HEAD", "refs/heads/"+DefaultBranch); err != nil {
		return nil, fmt.Errorf("init %s: %w", abs, err)
	}
	// The config file last: a directory without one is no scrapbook, so
	// an init cut short can be run again.
	if err := atomicfile.WriteFile(filepath.Join(abs, ConfigFile), append(configText(), '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("init %s: %w", abs, err)
	}
	return d, nil
}

// Is reports whether dir holds a scrapbook: a config file, sound or not.
func Is(dir string) bool {
	fi, err := os.Stat(filepath.Join(dir, ConfigFile))
	return err == nil && fi.Mode().IsRegular()
}

// Open opens the scrapbook in dir, after checking its config file: a
// scrapbook of another format is refused, not misread.
func Open(dir string) (*Dir, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	name := filepath.Join(abs, ConfigFile)
	b, err := os.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open %s: %w (run 'sbuml init' to make one)", abs, ErrNotScrapbook)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", abs, err)
	}
	format, err := readConfig(b)
	if err != nil {
		return nil, fmt.Errorf("open %s: config file %s %w", abs, name, err)
	}
	d := open(abs)
	d.format = format
	return d, nil
}

func open(abs string) *Dir {
	fsys := osfs.New(abs)
	d := &Dir{Path: abs, Refs: refs.New(fsys), fs: fsys}
	d.Objects = d.NewObjects()
	return d
}

// NewObjects opens the scrapbook's object store afresh, beside the one in
// Objects: a store whose write failed writes no more (see
// objects.FailStopper), and a long-running server takes a new one for the
// requests that follow.
func (d *Dir) NewObjects() objects.Store {
	return objects.NewPacked(d.fs, ObjectsDir, filepath.Join(d.Path, ObjectsDir))
}

// readConfig checks the content of a config file and returns its
// format. It is strict, since the file has no checksum: JSON of exactly
// the fields this sbuml writes, and a format it reads.
func readConfig(b []byte) (int, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c config
	if err := dec.Decode(&c); err != nil {
		return 0, fmt.Errorf("is damaged (%v); it should read %s", err, configText())
	}
	if len(bytes.TrimSpace(b[dec.InputOffset():])) > 0 {
		return 0, fmt.Errorf("is damaged (more after the JSON object); it should read %s", configText())
	}
	switch {
	case c.Format == 0:
		return 0, fmt.Errorf("is damaged (it names no format); it should read %s", configText())
	case c.Format < oldestFormat || c.Format > FormatVersion:
		return 0, fmt.Errorf("says scrapbook format %d, this sbuml reads formats %d to %d: damaged, or written by a newer sbuml", c.Format, oldestFormat, FormatVersion)
	}
	return c.Format, nil
}

// configText is the content of the config file of a new scrapbook.
func configText() []byte {
	b, _ := json.Marshal(config{Format: FormatVersion})
	return b
}

// Close releases the files the scrapbook holds open (its pack files).
// Objects put and not synced are lost, as after a crash.
func (d *Dir) Close() error { return d.Objects.Close() }

// Hold takes the gc lock shared for an operation that writes objects or
// refs, or reads a snapshot no ref may name: gc cannot remove objects
// under it, and it cannot start while gc runs. The store then sees what
// other processes published or removed meanwhile. Call release when done.
func (d *Dir) Hold() (release func(), err error) {
	return d.refreshed(LockShared(d.Path, LockWait))
}

// HoldToWrite is Hold for an operation that writes objects: releasing it
// also merges the small packs, if writes have left many (see Compact).
//
// A scrapbook of an older format says the current one from then on: the
// objects written may be of a version its readers refuse.
func (d *Dir) HoldToWrite() (release func(), err error) {
	unlock, err := d.Hold()
	if err != nil {
		return nil, err
	}
	if err := d.Upgrade(); err != nil {
		unlock()
		return nil, err
	}
	return func() {
		unlock()
		d.Compact()
	}, nil
}

// Upgrade makes the config file of a scrapbook of an older format say
// FormatVersion, before objects of the current versions are written to
// it. It does nothing to a current scrapbook.
func (d *Dir) Upgrade() error {
	d.formatMu.Lock()
	defer d.formatMu.Unlock()
	if d.format == 0 || d.format >= FormatVersion {
		return nil
	}
	if err := atomicfile.WriteFile(filepath.Join(d.Path, ConfigFile), append(configText(), '\n'), 0o644); err != nil {
		return fmt.Errorf("upgrade %s to scrapbook format %d: %w", d.Path, FormatVersion, err)
	}
	d.format = FormatVersion
	return nil
}

// HoldExclusive takes the gc lock exclusively, for gc: it does not wait,
// and fails with ErrBusy while anyone else holds it.
func (d *Dir) HoldExclusive() (release func(), err error) {
	return d.refreshed(LockExclusive(d.Path))
}

// refreshed refreshes the store once the gc lock is taken, and releases
// the lock if that fails.
func (d *Dir) refreshed(unlock func(), err error) (func(), error) {
	if err != nil {
		return nil, err
	}
	if err := d.Refresh(); err != nil {
		unlock()
		return nil, err
	}
	return unlock, nil
}

// Refresh makes the object store see what other processes have published
// or removed since it last looked.
func (d *Dir) Refresh() error {
	if r, ok := d.Objects.(objects.Refresher); ok {
		return r.Refresh()
	}
	return nil
}

// CompactAfter is how many small packs (under 128 MiB) a scrapbook may
// hold before a writer, done, merges them. Every process that opens the
// scrapbook reads every pack index: with thousands of packs (two or three
// per commit) each command took 0.2 s longer.
const CompactAfter = 32

// Compact merges the packs under 128 MiB into one once there are more
// than CompactAfter of them: gc's repack, removing nothing, so it needs
// no walk of the snapshots. It is best effort, and skipped while another
// process uses the scrapbook.
func (d *Dir) Compact() {
	r, ok := d.Objects.(objects.Repacker)
	if !ok || r.SmallPacks() <= CompactAfter {
		return
	}
	release, err := LockExclusive(d.Path)
	if err != nil {
		return
	}
	defer release()
	ctx := context.Background()
	if plan, err := r.PlanRepack(ctx, func(objects.ID) bool { return true }); err == nil {
		r.Repack(ctx, plan, nil)
	}
}
