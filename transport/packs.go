package transport

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"

	"github.com/sbuml/sbuml/internal/atomicfile"
	"github.com/sbuml/sbuml/internal/lockfile"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
)

// Pack files of a published directory. Besides one loose file per object,
// a published directory holds the objects each publish added in pack
// files, so that a client downloading a snapshot asks for a few large
// files instead of one file per object (see Static).
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

// noteAdded remembers an object a Put added to a published directory,
// for the next pack.
func (d *Dir) noteAdded(id objects.ID) {
	d.addedMu.Lock()
	d.added = append(d.added, id)
	d.addedMu.Unlock()
}

// writePacks writes the objects added since the last call into new packs
// of a published directory (one pack unless they exceed
// objects.MaxPackSize) and lists them in packs.json. Each pack and its
// index are complete and durable before packs.json names them, so a
// reader never sees a listed pack that is not all there.
func (d *Dir) writePacks(ctx context.Context) error {
	d.addedMu.Lock()
	added := d.added
	d.added = nil
	d.addedMu.Unlock()
	if len(added) == 0 {
		return nil
	}
	dir := filepath.Join(d.path, PackDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write packs in %s: %w", d.path, err)
	}
	var made []PackInfo
	for len(added) > 0 {
		info, rest, err := d.writePack(ctx, dir, added)
		if err != nil {
			return err
		}
		made = append(made, info)
		added = rest
	}
	return d.listPacks(made)
}

// writePack writes the first of ids into one pack of at most
// objects.MaxPackSize bytes and returns it and the IDs left over.
func (d *Dir) writePack(ctx context.Context, dir string, ids []objects.ID) (PackInfo, []objects.ID, error) {
	f, err := os.CreateTemp(dir, ".tmp-*.pack")
	if err != nil {
		return PackInfo{}, nil, fmt.Errorf("write pack in %s: %w", dir, err)
	}
	tmp := f.Name()
	fail := func(err error) (PackInfo, []objects.ID, error) {
		f.Close()
		os.Remove(tmp)
		return PackInfo{}, nil, fmt.Errorf("write pack %s: %w", tmp, err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	enc, err := objects.NewPackEncoder(w)
	if err != nil {
		return fail(err)
	}
	store := d.objects()
	n := 0
	for ; n < len(ids); n++ {
		stored, err := store.Get(ctx, ids[n])
		if err != nil {
			return fail(err)
		}
		if enc.Len() > 0 && enc.Size()+uint64(objects.IDSize+4+len(stored)) > objects.MaxPackSize {
			break
		}
		if err := enc.Add(ids[n], stored); err != nil {
			return fail(err)
		}
	}
	if err := w.Flush(); err != nil {
		return fail(err)
	}
	if err := f.Chmod(0o644); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	idx, name := enc.Index()
	if err := os.Rename(tmp, filepath.Join(dir, name+".pack")); err != nil {
		return fail(err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, name+".idx"), idx, 0o644); err != nil {
		return PackInfo{}, nil, fmt.Errorf("write pack index %s: %w", filepath.Join(dir, name+".idx"), err)
	}
	return PackInfo{Name: name, Size: int64(enc.Size())}, ids[n:], nil
}

// listPacks adds packs to packs.json, under the lock file packs.json.lock
// and by rename, so a web server always serves a whole list.
func (d *Dir) listPacks(packs []PackInfo) error {
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
	l.Packs = append(l.Packs, packs...)
	data, err = json.MarshalIndent(l, "", "  ")
	if err != nil {
		return fmt.Errorf("update %s: %w", file, err)
	}
	if err := atomicfile.WriteFile(file, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("update %s: %w", file, err)
	}
	return nil
}
