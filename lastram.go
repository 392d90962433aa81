package sbuml

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

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

// Where the machine's QEMU keeps a dirty-page log (vmm.DirtyLog) armed at
// the instant the copy holds, the next commit need not compare all of RAM:
// the pages the log reports are all that can differ from the copy. The
// sidecar then names that log beside the stream (lastRAMLog), and the
// commit uses it only if it is the log that runs now.

// Names in the sidecar directory.
const (
	lastRAMCopy  = "ram"      // the copy
	lastRAMTable = "pages"    // its pages' chunk IDs (see lastRAM.save)
	lastRAMLog   = "dirtylog" // "STREAM LOG": the log armed when the copy was made
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
	// loggedBy names the dirty-page log armed at the instant the valid
	// copy holds ("": none known).
	loggedBy string
	// armed names the log this commit armed at its instant, to record
	// with the new copy ("": none).
	armed string
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
	l.ids = make([]objects.ID, fi.Size()/ramPage)
	stream, err := readLastRAMTable(filepath.Join(l.dir, lastRAMTable), l.ids)
	cfi, cerr := os.Stat(l.copyPath())
	if err == nil && cerr == nil && cfi.Size() == fi.Size() && !want.IsZero() && stream == want {
		l.valid = true
		l.loggedBy = readLastRAMLog(filepath.Join(l.dir, lastRAMLog), want)
	} else {
		clear(l.ids)
	}
	return l, nil
}

// Offsets in the table file (see save).
const (
	lastRAMStreamAt = 32            // the ID of the stream the copy holds
	lastRAMIDsAt    = lastRAMHeader // the pages' IDs
)

// invalidate clears the stream the table names before the copy changes:
// until save, the copy holds no stream known to the next commit. A table
// that cannot be written to is removed.
func (l *lastRAM) invalidate() error {
	if err := os.Remove(filepath.Join(l.dir, lastRAMLog)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reset the copy of the last snapshot's RAM: %w", err)
	}
	path := filepath.Join(l.dir, lastRAMTable)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err == nil {
		_, err = f.WriteAt(objects.Zero[:], lastRAMStreamAt)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("reset the copy of the last snapshot's RAM: %w", err)
		}
	}
	return nil
}

// save records that the copy holds RAM stream id, whose pages' chunk IDs
// are l.ids. The table is the magic, the version (4 bytes), the page size
// (4), the number of pages (8), id, then the pages' IDs, integers little
// endian. If the copy was valid, the table holds the IDs of every page but
// those in changed, so only theirs are written, then id; else all of it.
func (l *lastRAM) save(id objects.ID, changed []stream.PageRange) error {
	if err := l.saveTable(id, changed); err != nil {
		return err
	}
	if l.armed == "" {
		return nil
	}
	return atomicfile.WriteFile(filepath.Join(l.dir, lastRAMLog), []byte(id.String()+" "+l.armed+"\n"), 0o600)
}

// saveTable writes the table for save.
func (l *lastRAM) saveTable(id objects.ID, changed []stream.PageRange) error {
	path := filepath.Join(l.dir, lastRAMTable)
	if !l.valid {
		return l.writeTable(path, id)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	b := idBytes(l.ids)
	for _, r := range changed {
		if _, err := f.WriteAt(b[r.Start*objects.IDSize:r.End*objects.IDSize], lastRAMIDsAt+int64(r.Start)*objects.IDSize); err != nil {
			return err
		}
	}
	if _, err := f.WriteAt(id[:], lastRAMStreamAt); err != nil {
		return err
	}
	return f.Close()
}

// writeTable writes the whole table (see save).
func (l *lastRAM) writeTable(path string, id objects.ID) error {
	return atomicfile.Write(path, 0o600, func(w io.Writer) error {
		var h [lastRAMHeader]byte
		copy(h[:], lastRAMMagic[:])
		binary.LittleEndian.PutUint32(h[16:], lastRAMVersion)
		binary.LittleEndian.PutUint32(h[20:], ramPage)
		binary.LittleEndian.PutUint64(h[24:], uint64(len(l.ids)))
		copy(h[lastRAMStreamAt:], id[:])
		if _, err := w.Write(h[:]); err != nil {
			return err
		}
		_, err := w.Write(idBytes(l.ids))
		return err
	})
}

// readLastRAMTable reads into ids a table that save wrote for len(ids)
// pages, and returns the stream it names.
func readLastRAMTable(path string, ids []objects.ID) (objects.ID, error) {
	f, err := os.Open(path)
	if err != nil {
		return objects.Zero, err
	}
	defer f.Close()
	var h [lastRAMHeader]byte
	if _, err := io.ReadFull(f, h[:]); err != nil {
		return objects.Zero, err
	}
	if !bytes.Equal(h[:16], lastRAMMagic[:]) || binary.LittleEndian.Uint32(h[16:]) != lastRAMVersion || binary.LittleEndian.Uint32(h[20:]) != ramPage {
		return objects.Zero, fmt.Errorf("%s: not a version %d page table", path, lastRAMVersion)
	}
	if n := binary.LittleEndian.Uint64(h[24:]); n != uint64(len(ids)) {
		return objects.Zero, fmt.Errorf("%s: a table of %d pages, not %d", path, n, len(ids))
	}
	if _, err := io.ReadFull(f, idBytes(ids)); err != nil {
		return objects.Zero, fmt.Errorf("%s: %w", path, err)
	}
	var id objects.ID
	copy(id[:], h[lastRAMStreamAt:])
	return id, nil
}

// readLastRAMLog returns the log a lastRAMLog file names for stream
// want, or "".
func readLastRAMLog(path string, want objects.ID) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	stream, log, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
	if !ok || stream != want.String() {
		return ""
	}
	return log
}

// idBytes is the memory of ids as bytes (an ID is an array of bytes), so
// that the table is read and written without copies of its 8 bytes per
// KiB of RAM.
func idBytes(ids []objects.ID) []byte {
	if len(ids) == 0 {
		return nil
	}
	return unsafe.Slice(&ids[0][0], len(ids)*objects.IDSize)
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
