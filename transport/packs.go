package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/sbuml/sbuml/internal/atomicfile"
	"github.com/sbuml/sbuml/internal/lockfile"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
)

// Pack files of a published directory. A published directory holds its
// objects in pack files with their indexes, each object once, so that a
// client downloading a snapshot asks for a few large files, or ranges of
// them, instead of one file per object (see Static). Directories
// published by older sbuml versions also hold loose files, objects/ab/…,
// which are still read.
const (
	// PackListFile is the name of the pack list in a published directory.
	PackListFile = "packs.json"
	// PackDir is the directory of the pack files in a published directory.
	PackDir = "packs"
	// PackListFormat is the version of the packs.json format.
	PackListFormat = 1
)

// PackList is the content of packs.json: the packs of a published
// directory, oldest first.
type PackList struct {
	// Format is PackListFormat.
	Format int        `json:"format"`
	Packs  []PackInfo `json:"packs"`
}

// PackInfo names one pack of a published directory: packs/NAME.pack of
// Size bytes and its index packs/NAME.idx.
type PackInfo struct {
	// Name is "pack-" followed by the hex checksum of the index.
	Name string `json:"name"`
	Size int64  `json:"size"`
}

var packNamePattern = regexp.MustCompile(`^pack-[0-9a-f]{64}$`)

// parsePackList parses packs.json.
func parsePackList(data []byte, where string) (*PackList, error) {
	var l PackList
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, fmt.Errorf("%s: pack list is not valid JSON: %v", where, err)
	}
	if l.Format != PackListFormat {
		return nil, fmt.Errorf("%s: pack list has format %d, this sbuml reads format %d", where, l.Format, PackListFormat)
	}
	for _, p := range l.Packs {
		if !packNamePattern.MatchString(p.Name) {
			return nil, fmt.Errorf("%s: invalid pack name %q", where, p.Name)
		}
		if p.Size < objects.PackHeaderSize || p.Size > objects.MaxPackSize {
			return nil, fmt.Errorf("%s: pack %s: size %d is outside %d..%d", where, p.Name, p.Size, objects.PackHeaderSize, objects.MaxPackSize)
		}
	}
	return &l, nil
}

// listPacks publishes the pack a published directory's store is writing
// (see objects.Packed.Sync: the pack and its index, durable) and makes
// packs.json list it: the packs it listed, in their order, then those
// published since, oldest first. It writes packs.json under the lock
// file packs.json.lock and by rename, so a web server always serves a
// whole list, and only lists packs whose index is in place. A scrapbook
// directory has no pack list: it only syncs.
func (d *Dir) listPacks(ctx context.Context) error {
	if err := d.objects().Sync(ctx); err != nil {
		return err
	}
	if _, ok := d.refs.(*publishedRefs); !ok {
		return nil
	}
	file := filepath.Join(d.path, PackListFile)
	lock, err := lockfile.Create(file+".lock", 0o644, refs.LockWait)
	if err != nil {
		return fmt.Errorf("update %s: %w", file, err)
	}
	defer lock.Release()
	l := &PackList{Format: PackListFormat}
	data, err := os.ReadFile(file)
	switch {
	case err == nil:
		if l, err = parsePackList(data, file); err != nil {
			return err
		}
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("update %s: %w", file, err)
	}
	added, err := newPacks(filepath.Join(d.path, PackDir), l)
	if err != nil || len(added) == 0 {
		return err
	}
	l.Packs = append(l.Packs, added...)
	data, err = json.MarshalIndent(l, "", "  ")
	if err != nil {
		return fmt.Errorf("update %s: %w", file, err)
	}
	if err := atomicfile.WriteFile(file, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("update %s: %w", file, err)
	}
	return nil
}

// newPacks returns the packs in dir with their index in place that l
// does not list, oldest first.
func newPacks(dir string, l *PackList) ([]PackInfo, error) {
	listed := map[string]bool{}
	for _, p := range l.Packs {
		listed[p.Name] = true
	}
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list packs in %s: %w", dir, err)
	}
	type found struct {
		PackInfo
		mod int64
	}
	var packs []found
	for _, de := range des {
		name, ok := strings.CutSuffix(de.Name(), ".pack")
		if !ok || !packNamePattern.MatchString(name) || listed[name] {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, name+".idx")); err != nil {
			continue // not published yet
		}
		fi, err := de.Info()
		if err != nil {
			return nil, fmt.Errorf("list packs in %s: %w", dir, err)
		}
		packs = append(packs, found{PackInfo{Name: name, Size: fi.Size()}, fi.ModTime().UnixNano()})
	}
	sort.Slice(packs, func(i, j int) bool { return packs[i].mod < packs[j].mod })
	out := make([]PackInfo, len(packs))
	for i, p := range packs {
		out[i] = p.PackInfo
	}
	return out, nil
}
