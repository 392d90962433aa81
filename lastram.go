package sbuml

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/sbuml/sbuml/internal/atomicfile"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/stream"
	"github.com/sbuml/sbuml/vmm"
)

// A commit leaves the copy of the guest's RAM it made and stored beside
// the machine's RAM file (in the directory vmm.RAMSidecarSuffix names, on
// the same tmpfs), with a table of its pages' chunk IDs. The next commit
// compares RAM with that copy, frozen, and rewrites the pages that differ
// (mirror): so it knows exactly which pages changed since the last
// snapshot, and only those are hashed and stored (stream.SavePages);
// every other page keeps its chunk ID. The table names the RAM stream the
// copy holds, and is used only if that is the RAM of the machine's last
// snapshot (which gc keeps, chunks and all); otherwise, and whenever it is
// missing (a machine just checked out or rewound, a commit that failed
// after the copy began to change), the commit copies and hashes all of
// RAM, as the first commit of a machine does. See docs/design.md.

// Names in the sidecar directory.
const (
	lastRAMCopy  = "ram"   // the copy
	lastRAMTable = "pages" // its pages' chunk IDs (see lastRAM.save)
)

// ramPage is the size of a RAM page and of a RAM chunk (RAMParams).
const ramPage = 4096

// lastRAMMagic starts the table file; the format version follows it.
var lastRAMMagic = [16]byte{'s', 'b', 'u', 'm', 'l', ' ', 'r', 'a', 'm', ' ', 'p', 'a', 'g', 'e', 's', '\n'}

const (
	lastRAMVersion = 1
	lastRAMHeader  = 16 + 4 + 4 + 8 + 32 // magic, version, page size, pages, stream
)

// lastRAM is a machine's copy of the RAM of its last snapshot.
type lastRAM struct {
	dir string
	// ids holds each page's chunk ID in the RAM stream the copy held when
	// the commit began (Zero: a page of zeros).
	ids []objects.ID
	// valid says the copy held that stream, which is the RAM of the
	// machine's last snapshot: pages mirror leaves alone keep their ID.
	valid bool
}

// copyPath is the path of the copy.
func (l *lastRAM) copyPath() string { return filepath.Join(l.dir, lastRAMCopy) }

// openLastRAM returns the copy of the RAM of a machine's last snapshot,
// whose RAM stream is want (Zero: unknown), kept beside its RAM file
// ramFile, making the directory if it is missing. The copy is valid only
// if its table names want and fits the RAM file; else every page must be
// hashed.
func openLastRAM(ramFile string, want objects.ID) (*lastRAM, error) {
	fi, err := os.Stat(ramFile)
	if err != nil {
		return nil, err
	}
	if fi.Size()%ramPage != 0 {
		return nil, fmt.Errorf("ram file %s holds %d bytes, not a whole number of %d-byte pages", ramFile, fi.Size(), ramPage)
	}
	l := &lastRAM{dir: ramFile + vmm.RAMSidecarSuffix}
	if err := os.MkdirAll(l.dir, 0o700); err != nil {
		return nil, err
	}
	pages := int(fi.Size() / ramPage)
	ids, stream, err := readLastRAMTable(filepath.Join(l.dir, lastRAMTable))
	cfi, cerr := os.Stat(l.copyPath())
	if err == nil && cerr == nil && len(ids) == pages && cfi.Size() == fi.Size() && !want.IsZero() && stream == want {
		l.ids, l.valid = ids, true
	} else {
		l.ids = make([]objects.ID, pages)
	}
	return l, nil
}

// invalidate removes the table before the copy changes: until save, the
// copy holds no stream known to the next commit.
func (l *lastRAM) invalidate() error {
	if err := os.Remove(filepath.Join(l.dir, lastRAMTable)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reset the copy of the last snapshot's RAM: %w", err)
	}
	return nil
}

// save records that the copy holds RAM stream id, whose pages' chunk IDs
// are l.ids: the magic, the version (4 bytes), the page size (4), the
// number of pages (8), id, then the pages' IDs, integers little endian.
func (l *lastRAM) save(id objects.ID) error {
	return atomicfile.Write(filepath.Join(l.dir, lastRAMTable), 0o600, func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 1<<20)
		var h [lastRAMHeader]byte
		copy(h[:], lastRAMMagic[:])
		binary.LittleEndian.PutUint32(h[16:], lastRAMVersion)
		binary.LittleEndian.PutUint32(h[20:], ramPage)
		binary.LittleEndian.PutUint64(h[24:], uint64(len(l.ids)))
		copy(h[32:], id[:])
		bw.Write(h[:])
		for _, pid := range l.ids {
			bw.Write(pid[:])
		}
		return bw.Flush()
	})
}

// readLastRAMTable reads a table that save wrote.
func readLastRAMTable(path string) ([]objects.ID, objects.ID, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, objects.Zero, err
	}
	if len(b) < lastRAMHeader || !bytes.Equal(b[:16], lastRAMMagic[:]) ||
		binary.LittleEndian.Uint32(b[16:]) != lastRAMVersion || binary.LittleEndian.Uint32(b[20:]) != ramPage {
		return nil, objects.Zero, fmt.Errorf("%s: not a version %d page table", path, lastRAMVersion)
	}
	pages := binary.LittleEndian.Uint64(b[24:])
	if uint64(len(b)-lastRAMHeader) != pages*objects.IDSize {
		return nil, objects.Zero, fmt.Errorf("%s: %d bytes for %d pages", path, len(b), pages)
	}
	var id objects.ID
	copy(id[:], b[32:lastRAMHeader])
	ids := make([]objects.ID, pages)
	for k := range ids {
		copy(ids[k][:], b[lastRAMHeader+k*objects.IDSize:])
	}
	return ids, id, nil
}

// changedPages turns the byte ranges mirror rewrote into the pages to
// hash: all the copy's data if it was not valid (its holes are pages of
// zeros), else those ranges, sorted and merged.
func (l *lastRAM) changedPages(rewritten []extent) ([]stream.PageRange, error) {
	if !l.valid {
		f, err := os.Open(l.copyPath())
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if rewritten, err = dataExtents(f, int64(len(l.ids))*ramPage); err != nil {
			return nil, err
		}
	}
	return pageRanges(rewritten), nil
}

// hashedPages counts the pages of ramChanged.
func (c *captured) hashedPages() int64 {
	var n int64
	for _, r := range c.ramChanged {
		n += int64(r.End - r.Start)
	}
	return n
}

// ramStreamOf returns the RAM stream of machine snapshot id, Zero if it
// has none or cannot be read (the commit then hashes all pages).
func (s *Scrapbook) ramStreamOf(ctx context.Context, id objects.ID) objects.ID {
	if id.IsZero() {
		return objects.Zero
	}
	sn, err := objects.LoadSnapshot(ctx, s.Objects, id)
	if err != nil {
		return objects.Zero
	}
	t, err := objects.LoadTree(ctx, s.Objects, sn.Tree)
	if err != nil {
		return objects.Zero
	}
	if e := t.Find(snapRAM); e != nil {
		return e.ID
	}
	return objects.Zero
}
