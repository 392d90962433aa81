package objects

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/go-git/go-billy/v5"
	"golang.org/x/sys/unix"
)

// Pack file formats. A pack holds many objects in one file, so a commit of
// a machine whose RAM is a hundred thousand 4 KiB pages creates two files,
// not a hundred thousand. See docs/format.md.
var (
	packMagic  = []byte("SBPACK\x00\x01")
	indexMagic = []byte("SBPIDX\x00\x02")
	// Version 3 indexes are version 2 with the top bit of an entry's
	// size marking a delta record (see delta.go). They are written only
	// for packs that hold a delta, so other packs stay readable by
	// versions of sbuml that know no deltas.
	indexMagicDelta = []byte("SBPIDX\x00\x03")
	// Version 1 indexes, which recorded a CRC for uncompressed forms
	// too, are read as well: readers never check those.
	indexMagicV1 = []byte("SBPIDX\x00\x01")
)

const (
	packRecordHeader = IDSize + 4         // id, size uint32
	indexEntrySize   = IDSize + 8 + 4 + 4 // id, offset uint64, size uint32, crc uint32
	// maxPackSize is the size at which a pack being written is published
	// and a new one started.
	maxPackSize = 512 << 20
)

// Packed is the store of a scrapbook: objects in pack files under
// DIR/pack/, plus loose objects (see Loose) in the same directory. New
// objects go into a pack that is written as they arrive and published by
// Sync: its index is renamed into place, so the objects of a pack become
// visible to other processes all at once. In this process they are
// readable as soon as Put returns.
type Packed struct {
	loose *Loose
	fs    billy.Filesystem
	dir   string // the pack directory inside fs
	root  string // the pack directory on the host, for messages

	mu     sync.RWMutex
	loaded bool
	packs  []*packFile
	known  map[string]bool // index files loaded, by name
	index  map[ID]packLoc
	// pending holds the packs being written, one per lane: lane 0 takes
	// objects that may reference others, lanes 1… take leaves (chunks),
	// one writer at a time each, so writers do not contend for one
	// file. Leaf lanes are always published before lane 0.
	pending   []*packWriter
	freeLanes chan int   // leaf lanes not in use
	broken    []error    // unreadable index files
	written   *sync.Cond // on mu: a write into the pending pack ended
	failed    error      // a pack write failed: this store writes no more
	// hasLoose is set once loose objects have been seen (see load).
	hasLoose bool
	// gone lists what an unfinished repack removes (see readJournal):
	// packs by name, loose objects by ID. They are not seen.
	gonePacks map[string]bool
	goneLoose map[ID]bool
	// deltas says the store keeps deltas (NewPacked, a scrapbook's
	// store; see DeltaPutter).
	deltas bool
}

// The abilities a pack store has beyond Store.
var (
	_ Store        = (*Packed)(nil)
	_ LeafPutter   = (*Packed)(nil)
	_ Locator      = (*Packed)(nil)
	_ PrefixFinder = (*Packed)(nil)
	_ Refresher    = (*Packed)(nil)
	_ FileChecker  = (*Packed)(nil)
	_ Repacker     = (*Packed)(nil)
	_ FailStopper  = (*Packed)(nil)
)

type packLoc struct {
	pack  int32
	size  uint32
	off   uint64
	crc   uint32 // see packCRC
	delta bool   // the record is a delta (see IsDelta)
}

type packFile struct {
	name string // pack file name (host path for messages in root)
	f    billy.File
	size int64
}

// packWriter is the pack being written.
type packWriter struct {
	file     *packFile
	at       io.WriterAt // file, written at reserved offsets
	tmpName  string
	off      uint64 // end of the last reserved record
	entries  map[ID]packLoc
	inflight map[ID]struct{} // records being written
}

// closeWriter closes the host file a pack was written through, if any.
func (w *packWriter) closeWriter() {
	if c, ok := w.at.(io.Closer); ok {
		c.Close()
	}
}

// NewPacked returns the store of objects under dir in fs: packs in
// dir/pack, loose objects in dir/ab/…. hostDir, if not empty, is dir on the
// host file system, for syncing and messages.
//
// It keeps chunks as deltas when asked to (see DeltaPutter).
func NewPacked(fsys billy.Filesystem, dir, hostDir string) *Packed {
	hostPacks := ""
	if hostDir != "" {
		hostPacks = path.Join(hostDir, "pack")
	}
	p := NewPackedIn(fsys, path.Join(dir, "pack"), hostPacks, dir, hostDir)
	p.deltas = true
	return p
}

// NewPackedIn is NewPacked for another layout: packs in packDir, loose
// objects in looseDir, both inside fsys; hostPacks and hostLoose, if not
// empty, are the same directories on the host. A published directory
// keeps its packs so (see transport.CreatePublished). Static readers take
// its records out of its packs as they are, by range requests, so it
// keeps no deltas: BaseFor finds no base, and PutDelta stores whole
// forms.
func NewPackedIn(fsys billy.Filesystem, packDir, hostPacks, looseDir, hostLoose string) *Packed {
	p := &Packed{
		loose: NewLoose(fsys, looseDir, hostLoose),
		fs:    fsys,
		dir:   packDir,
		root:  hostPacks,
		known: map[string]bool{},
		index: map[ID]packLoc{},
	}
	p.written = sync.NewCond(&p.mu)
	lanes := 1 + max(2, runtime.GOMAXPROCS(0))
	p.pending = make([]*packWriter, lanes)
	p.freeLanes = make(chan int, lanes-1)
	for i := 1; i < lanes; i++ {
		p.freeLanes <- i
	}
	return p
}

// load reads the index files not read yet. Callers hold mu for writing.
func (p *Packed) load() error {
	// The journal first: a repack publishes its new packs before its
	// journal, so a listing made after reading the journal holds them.
	if err := p.readJournal(); err != nil {
		return err
	}
	des, err := p.fs.ReadDir(p.dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("list packs: %w", err)
	}
	// A repack in another process may have removed packs this one
	// loaded: then start over, so that nothing removed is seen. The
	// files of the old view close when no read uses them any more.
	present := map[string]bool{}
	for _, de := range des {
		if name := de.Name(); !p.gonePacks[strings.TrimSuffix(name, ".idx")] {
			present[name] = true
		}
	}
	for name := range p.known {
		if !present[name] {
			p.packs, p.index, p.known, p.broken = nil, map[ID]packLoc{}, map[string]bool{}, nil
			break
		}
	}
	for _, de := range des {
		name := de.Name()
		if !strings.HasPrefix(name, "pack-") || !strings.HasSuffix(name, ".idx") || p.known[name] {
			continue
		}
		if p.gonePacks[strings.TrimSuffix(name, ".idx")] {
			continue
		}
		if err := p.loadIndex(name); errors.Is(err, errVanished) {
			continue // removed by a repack since the listing
		} else if err != nil {
			return err
		}
		p.known[name] = true
	}
	// Loose objects, if any, sit in two-hex-digit fan-out directories.
	// Where there are none, Has need not look for one per object.
	if !p.hasLoose {
		tops, err := p.fs.ReadDir(p.loose.dir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("list objects: %w", err)
		}
		for _, de := range tops {
			if de.IsDir() && len(de.Name()) == 2 {
				p.hasLoose = true
				break
			}
		}
	}
	p.loaded = true
	return nil
}

func (p *Packed) where(name string) string {
	if p.root != "" {
		return path.Join(p.root, name)
	}
	return path.Join(p.dir, name)
}

// errVanished is returned by loadIndex for a pack that a repack removed
// after the directory was listed.
var errVanished = errors.New("pack removed")

func (p *Packed) loadIndex(name string) error {
	b, err := readAll(p.fs, path.Join(p.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return errVanished
	}
	if err != nil {
		return fmt.Errorf("read pack index %s: %w", p.where(name), err)
	}
	entries, err := decodePackIndex(b)
	if err != nil {
		// Keep going: the other packs are fine, and fsck reports this one.
		p.broken = append(p.broken, fmt.Errorf("pack index %s: %w: %v", p.where(name), ErrCorrupt, err))
		return nil
	}
	packName := strings.TrimSuffix(name, ".idx") + ".pack"
	f, err := p.fs.Open(path.Join(p.dir, packName))
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := p.fs.Stat(path.Join(p.dir, name)); errors.Is(serr, fs.ErrNotExist) {
			return errVanished // index and pack removed by a repack meanwhile
		}
	}
	if err != nil {
		p.broken = append(p.broken, fmt.Errorf("pack %s: %w: cannot open it: %v", p.where(packName), ErrCorrupt, err))
		return nil
	}
	var size int64
	if fi, err := p.fs.Stat(path.Join(p.dir, packName)); err == nil {
		size = fi.Size()
	}
	n := int32(len(p.packs))
	p.packs = append(p.packs, &packFile{name: packName, f: f, size: size})
	for _, e := range entries {
		p.index[e.id] = packLoc{pack: n, off: e.off, size: e.size, crc: e.crc, delta: e.delta}
	}
	return nil
}

type indexEntry struct {
	id    ID
	off   uint64
	size  uint32
	crc   uint32
	delta bool
}

// deltaFlag marks a delta record in the size of a version 3 index entry.
const deltaFlag = 1 << 31

// encodePackIndex returns the index of a pack:
//
//	magic [8], count uint32, count × (id [32], offset uint64, size uint32, crc uint32), BLAKE3-256 of all before [32]
//
// with entries sorted by id, where crc is packCRC of the object's stored
// form. The index of a pack holding a delta is version 3, whose sizes
// carry deltaFlag for delta records; any other is version 2.
func encodePackIndex(entries []indexEntry) []byte {
	sort.Slice(entries, func(i, j int) bool { return bytes.Compare(entries[i].id[:], entries[j].id[:]) < 0 })
	magic := indexMagic
	if slices.ContainsFunc(entries, func(e indexEntry) bool { return e.delta }) {
		magic = indexMagicDelta
	}
	b := make([]byte, 0, len(magic)+4+len(entries)*indexEntrySize+IDSize)
	b = append(b, magic...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(entries)))
	for _, e := range entries {
		size := e.size
		if e.delta {
			size |= deltaFlag
		}
		b = append(b, e.id[:]...)
		b = binary.LittleEndian.AppendUint64(b, e.off)
		b = binary.LittleEndian.AppendUint32(b, size)
		b = binary.LittleEndian.AppendUint32(b, e.crc)
	}
	sum := Sum(b)
	return append(b, sum[:]...)
}

func decodePackIndex(b []byte) ([]indexEntry, error) {
	if len(b) < len(indexMagic)+4+IDSize {
		return nil, errors.New("not a pack index")
	}
	magic := b[:len(indexMagic)]
	deltas := bytes.Equal(magic, indexMagicDelta)
	if !deltas && !bytes.Equal(magic, indexMagic) && !bytes.Equal(magic, indexMagicV1) {
		return nil, errors.New("not a pack index")
	}
	body, sum := b[:len(b)-IDSize], b[len(b)-IDSize:]
	if Sum(body) != ID(sum) {
		return nil, errors.New("checksum mismatch")
	}
	n := binary.LittleEndian.Uint32(body[len(indexMagic):])
	rest := body[len(indexMagic)+4:]
	if uint64(len(rest)) != uint64(n)*indexEntrySize {
		return nil, fmt.Errorf("%d entries do not fit %d bytes", n, len(rest))
	}
	entries := make([]indexEntry, n)
	for i := range entries {
		e := rest[i*indexEntrySize:]
		copy(entries[i].id[:], e)
		entries[i].off = binary.LittleEndian.Uint64(e[IDSize:])
		entries[i].size = binary.LittleEndian.Uint32(e[IDSize+8:])
		entries[i].crc = binary.LittleEndian.Uint32(e[IDSize+12:])
		if deltas && entries[i].size&deltaFlag != 0 {
			entries[i].size &^= deltaFlag
			entries[i].delta = true
		}
		if entries[i].off < uint64(len(packMagic)+packRecordHeader) {
			return nil, fmt.Errorf("entry %d: offset %d inside the header", i, entries[i].off)
		}
	}
	return entries, nil
}

// lookup finds id among the packs, loading new indexes once if asked.
func (p *Packed) lookup(id ID, rescan bool) (*packFile, packLoc, bool, error) {
	p.mu.RLock()
	if p.loaded {
		for _, w := range p.pending {
			if w == nil {
				continue
			}
			if loc, ok := w.entries[id]; ok {
				p.mu.RUnlock()
				return w.file, loc, true, nil
			}
		}
		if loc, ok := p.index[id]; ok {
			pf := p.packs[loc.pack]
			p.mu.RUnlock()
			return pf, loc, true, nil
		}
		if !rescan {
			p.mu.RUnlock()
			return nil, packLoc{}, false, nil
		}
	}
	p.mu.RUnlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.load(); err != nil {
		return nil, packLoc{}, false, err
	}
	if loc, ok := p.index[id]; ok {
		return p.packs[loc.pack], loc, true, nil
	}
	return nil, packLoc{}, false, nil
}

// Has implements Store.
func (p *Packed) Has(ctx context.Context, id ID) (bool, error) {
	_, _, ok, err := p.lookup(id, false)
	if err != nil || ok {
		return ok, err
	}
	p.mu.RLock()
	loose, gone := p.hasLoose, p.goneLoose[id]
	p.mu.RUnlock()
	if !loose || gone {
		return false, nil
	}
	return p.loose.Has(ctx, id)
}

// getRecord returns the bytes stored for id as they are, a delta
// included.
func (p *Packed) getRecord(ctx context.Context, id ID) ([]byte, error) {
	pf, loc, ok, err := p.lookup(id, false)
	if err != nil {
		return nil, err
	}
	if !ok {
		p.mu.RLock()
		gone := p.goneLoose[id]
		p.mu.RUnlock()
		b, err := p.loose.Get(ctx, id)
		if gone {
			b, err = nil, fmt.Errorf("object %s: %w", id, ErrNotFound)
		}
		if !errors.Is(err, ErrNotFound) {
			return b, err
		}
		// Another process may have published a pack since we looked.
		if pf, loc, ok, err = p.lookup(id, true); err != nil || !ok {
			if err == nil {
				err = fmt.Errorf("object %s: %w", id, ErrNotFound)
			}
			return nil, err
		}
	}
	b := make([]byte, loc.size)
	if _, err := pf.f.ReadAt(b, int64(loc.off)); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("object %s: %w: %s is truncated (object at %d, %d bytes)", id, ErrCorrupt, p.where(pf.name), loc.off, loc.size)
		}
		return nil, fmt.Errorf("read object %s from %s at %d: %w", id, p.where(pf.name), loc.off, err)
	}
	if !crcMatches(b, loc.crc) {
		return nil, fmt.Errorf("object %s: %w: checksum mismatch in %s at offset %d", id, ErrCorrupt, p.where(pf.name), loc.off)
	}
	return b, nil
}

// Put implements Store: the object is appended to the pack being written.
func (p *Packed) Put(ctx context.Context, id ID, stored []byte) error {
	if IsDelta(stored) {
		return errNotSelfContained(id)
	}
	return p.putInto(ctx, 0, id, stored)
}

// errNotSelfContained is the error of a Put of a delta.
func errNotSelfContained(id ID) error {
	return fmt.Errorf("write object %s: a delta is not a self-contained stored form; store it with PutDelta", id)
}

// PutLeaf implements LeafPutter: like Put, for an object that references
// no other (a chunk). Leaves are written on lanes of their own, several
// at once, and published before the objects that name them.
func (p *Packed) PutLeaf(ctx context.Context, id ID, stored []byte) error {
	if IsDelta(stored) {
		return errNotSelfContained(id)
	}
	lane := <-p.freeLanes
	defer func() { p.freeLanes <- lane }()
	return p.putInto(ctx, lane, id, stored)
}

func (p *Packed) putInto(ctx context.Context, lane int, id ID, stored []byte) error {
	if ok, err := p.Has(ctx, id); err != nil || ok {
		return err
	}
	size := len(stored)
	crc := packCRC(stored)
	if size > MaxObjectSize+1024 {
		return fmt.Errorf("write object %s: %d bytes exceeds the object size limit", id, size)
	}
	p.mu.Lock()
	if p.failed != nil {
		p.mu.Unlock()
		return p.failed // it names the object whose write failed
	}
	w := p.pending[lane]
	if w == nil {
		var err error
		if w, err = p.startPack(lane); err != nil {
			p.mu.Unlock()
			return fmt.Errorf("write object %s: %w", id, err)
		}
	}
	for _, other := range p.pending {
		if other == nil {
			continue
		}
		_, done := other.entries[id]
		_, writing := other.inflight[id]
		if done || writing {
			// Stored, or being written by another goroutine into a pack
			// that is published only once that write is done.
			p.mu.Unlock()
			return nil
		}
	}
	// Reserve the record's place, then write it without the lock, so
	// several objects are written at once.
	off := w.off
	w.off += packRecordHeader + uint64(size)
	w.inflight[id] = struct{}{}
	p.mu.Unlock()

	var hdr [packRecordHeader]byte
	copy(hdr[:], id[:])
	binary.LittleEndian.PutUint32(hdr[IDSize:], uint32(size))
	err := writeVectorAt(w.at, int64(off), [][]byte{hdr[:], stored})

	p.mu.Lock()
	defer p.mu.Unlock()
	delete(w.inflight, id)
	p.written.Broadcast()
	if err != nil {
		// A hole in the pack: none of it may be published.
		var pathErr *os.PathError
		if !errors.As(err, &pathErr) {
			err = fmt.Errorf("%s: %w", p.where(w.tmpName), err)
		}
		return p.fail(fmt.Errorf("write object %s: %w", id, err))
	}
	w.entries[id] = packLoc{off: off + packRecordHeader, size: uint32(size), crc: crc, delta: IsDelta(stored)}
	if w.off >= maxPackSize && p.pending[lane] == w {
		if lane == 0 {
			return p.publishAll() // its objects may name leaves still pending
		}
		return p.publish(lane)
	}
	return nil
}

// startPack opens a new pack file for a lane. Callers hold mu.
func (p *Packed) startPack(lane int) (*packWriter, error) {
	if !p.loaded {
		if err := p.load(); err != nil {
			return nil, err
		}
	}
	if err := p.fs.MkdirAll(p.dir, 0o755); err != nil {
		return nil, err
	}
	tmp := ".tmp-" + randomSuffix() + ".pack"
	f, err := p.fs.OpenFile(path.Join(p.dir, tmp), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return nil, err
	}
	// Records are written at reserved offsets by several goroutines: with
	// pwrite on a host file, else one at a time through the billy file.
	w := &packWriter{file: &packFile{name: tmp, f: f}, at: &seekWriter{f: f}, tmpName: tmp, off: uint64(len(packMagic)),
		entries: map[ID]packLoc{}, inflight: map[ID]struct{}{}}
	if p.root != "" {
		hf, err := os.OpenFile(path.Join(p.root, tmp), os.O_WRONLY, 0)
		if err != nil {
			p.discard(w)
			return nil, err
		}
		w.at = hf
	}
	if _, err := w.at.WriteAt(packMagic, 0); err != nil {
		p.discard(w)
		return nil, err
	}
	p.pending[lane] = w
	return w, nil
}

// fail records err as the end of this store's writing and returns it.
// Objects this process believes stored may not be, so it writes no more
// (Open the scrapbook again to write): Put and Sync return the first such
// error. The packs being written are discarded once the writes into them
// have ended, so that they stop taking up space, which after a full disk
// is what the user needs back. Callers hold mu.
func (p *Packed) fail(err error) error {
	if p.failed == nil {
		p.failed = err
	}
	for lane, w := range p.pending {
		if w == nil {
			continue
		}
		for len(w.inflight) > 0 {
			p.written.Wait()
		}
		if p.pending[lane] == w {
			p.discard(w)
			p.pending[lane] = nil
		}
	}
	return err
}

// Err implements FailStopper: the error that ended this store's writing
// (see fail), or nil while it writes.
func (p *Packed) Err() error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.failed
}

// discard closes and removes a pack that was being written.
func (p *Packed) discard(w *packWriter) {
	w.closeWriter()
	w.file.f.Close()
	p.fs.Remove(path.Join(p.dir, w.tmpName))
}

// publishAll publishes every pending pack, leaf lanes first, so that no
// published object names one that is not. Callers hold mu.
func (p *Packed) publishAll() error {
	if p.failed != nil {
		return p.failed
	}
	for lane := len(p.pending) - 1; lane >= 0; lane-- {
		if err := p.publish(lane); err != nil {
			return err
		}
	}
	return nil
}

// publish makes a lane's pending pack visible: its index is written, the
// pack and index are made durable, then both are renamed into place,
// index last. Everything that takes space comes before the renames, so a
// full disk leaves nothing published. Callers hold mu.
func (p *Packed) publish(lane int) error {
	w := p.pending[lane]
	if w == nil {
		return nil
	}
	for len(w.inflight) > 0 { // let the writes into it end
		p.written.Wait()
	}
	if p.failed != nil {
		return p.failed
	}
	if p.pending[lane] != w {
		return nil // published by a writer while we waited
	}
	w.closeWriter()
	entries := make([]indexEntry, 0, len(w.entries))
	for id, loc := range w.entries {
		entries = append(entries, indexEntry{id: id, off: loc.off, size: loc.size, crc: loc.crc, delta: loc.delta})
	}
	idx := encodePackIndex(entries)
	name, err := p.packName(idx)
	if err != nil {
		return p.fail(err)
	}
	tmpIdx := path.Join(p.dir, ".tmp-"+randomSuffix()+".idx")
	if err := writeWhole(p.fs, tmpIdx, idx); err != nil {
		return p.fail(fmt.Errorf("write pack index %s: %w", p.where(name+".idx"), err))
	}
	// The pack's bytes must be durable before an index names them.
	if err := p.syncfs(); err != nil {
		p.fs.Remove(tmpIdx)
		return p.fail(err)
	}
	if err := p.fs.Rename(path.Join(p.dir, w.tmpName), path.Join(p.dir, name+".pack")); err != nil {
		p.fs.Remove(tmpIdx)
		return p.fail(fmt.Errorf("publish pack %s: %w", p.where(name+".pack"), err))
	}
	if err := p.fs.Rename(tmpIdx, path.Join(p.dir, name+".idx")); err != nil {
		p.fs.Remove(tmpIdx)
		return p.fail(fmt.Errorf("publish pack index %s: %w", p.where(name+".idx"), err))
	}
	// The pending entries become a published pack in this process too.
	n := int32(len(p.packs))
	w.file.name = name + ".pack"
	w.file.size = int64(w.off)
	p.packs = append(p.packs, w.file)
	for id, loc := range w.entries {
		loc.pack = n
		p.index[id] = loc
	}
	p.known[name+".idx"] = true
	p.pending[lane] = nil
	return nil
}

// syncfs makes every write to the file system of the store durable: one
// syncfs(2), through the pack directory, or whichever of the directories
// above it exists yet.
func (p *Packed) syncfs() error {
	if p.root == "" {
		return nil
	}
	dir := p.root
	f, err := os.Open(dir)
	for errors.Is(err, fs.ErrNotExist) && path.Dir(dir) != dir {
		dir = path.Dir(dir)
		f, err = os.Open(dir)
	}
	if err != nil {
		return fmt.Errorf("sync objects: %w", err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("sync objects %s: %w", dir, err)
	}
	return nil
}

// Sync implements Store: it publishes the packs being written and makes
// every completed Put durable.
func (p *Packed) Sync(ctx context.Context) error {
	p.mu.Lock()
	err := p.publishAll()
	p.mu.Unlock()
	if err != nil {
		return err
	}
	return p.syncfs()
}

// List implements Store: packed objects (published and pending), then loose ones.
func (p *Packed) List(ctx context.Context, fn func(ID, int64) error) error {
	p.mu.Lock()
	if err := p.load(); err != nil {
		p.mu.Unlock()
		return err
	}
	seen := make(map[ID]struct{}, len(p.index))
	type item struct {
		id   ID
		size int64
	}
	items := make([]item, 0, len(p.index))
	for id, loc := range p.index {
		items = append(items, item{id, int64(loc.size)})
		seen[id] = struct{}{}
	}
	for _, w := range p.pending {
		if w == nil {
			continue
		}
		for id, loc := range w.entries {
			items = append(items, item{id, int64(loc.size)})
			seen[id] = struct{}{}
		}
	}
	p.mu.Unlock()
	for i, it := range items {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := fn(it.id, it.size); err != nil {
			return err
		}
	}
	p.mu.Lock()
	gone := p.goneLoose
	p.mu.Unlock()
	return p.loose.List(ctx, func(id ID, size int64) error {
		if _, ok := seen[id]; ok || gone[id] {
			return nil
		}
		return fn(id, size)
	})
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Damaged implements FileChecker: every pack index that could not be
// read.
func (p *Packed) Damaged() []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.load()
	return append([]error(nil), p.broken...)
}

// CheckFiles implements FileChecker: every pack index that could not be
// read (its objects are unreachable until it is repaired), then, read
// from start to end, every published pack whose records disagree with
// its own index: a bad magic number, record headers that do not match,
// gaps or trailing bytes.
func (p *Packed) CheckFiles(ctx context.Context) []error {
	p.mu.Lock()
	if err := p.load(); err != nil {
		p.mu.Unlock()
		return []error{err}
	}
	packs := append([]*packFile(nil), p.packs...)
	errs := append([]error(nil), p.broken...)
	p.mu.Unlock()
	for _, pf := range packs {
		if ctx.Err() != nil {
			return append(errs, ctx.Err())
		}
		// Each pack against its own index: an object stored in two packs
		// is listed by both.
		idxName := strings.TrimSuffix(pf.name, ".pack") + ".idx"
		b, err := readAll(p.fs, path.Join(p.dir, idxName))
		var entries []indexEntry
		if err == nil {
			entries, err = decodePackIndex(b)
		}
		if err == nil {
			err = checkPack(pf.f, entries)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("pack %s: %w: %v", p.where(pf.name), ErrCorrupt, err))
		}
	}
	return errs
}

func checkPack(f billy.File, entries []indexEntry) error {
	sort.Slice(entries, func(i, j int) bool { return entries[i].off < entries[j].off })
	magic := make([]byte, len(packMagic))
	if _, err := f.ReadAt(magic, 0); err != nil || !bytes.Equal(magic, packMagic) {
		return errors.New("bad magic number")
	}
	next := uint64(len(packMagic))
	var hdr [packRecordHeader]byte
	for _, e := range entries {
		if e.off != next+packRecordHeader {
			return fmt.Errorf("object %s at %d: records do not follow each other (expected %d)", e.id, e.off, next+packRecordHeader)
		}
		if _, err := f.ReadAt(hdr[:], int64(next)); err != nil {
			return fmt.Errorf("record header at %d: %v", next, err)
		}
		if ID(hdr[:IDSize]) != e.id || binary.LittleEndian.Uint32(hdr[IDSize:]) != e.size {
			return fmt.Errorf("record header at %d does not match the index entry for %s", next, e.id)
		}
		next = e.off + uint64(e.size)
	}
	var one [1]byte
	if n, _ := f.ReadAt(one[:], int64(next)); n != 0 {
		return fmt.Errorf("bytes after the last record at %d", next)
	}
	return nil
}

// Checksummed implements FileChecker: true for packed objects, whose
// compressed forms carry a CRC (an uncompressed form is the encoding
// that Unseal hashes); loose objects have no checksum of their own.
func (p *Packed) Checksummed(id ID) bool {
	_, _, ok, _ := p.lookup(id, false)
	return ok
}

// Refresh implements Refresher: it reads the indexes of packs that other
// processes have published since this store last looked.
func (p *Packed) Refresh() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.load()
}

// Locate names the file (and offset) where an object is kept.
func (p *Packed) Locate(id ID) string {
	if pf, loc, ok, _ := p.lookup(id, false); ok {
		return fmt.Sprintf("%s at offset %d", p.where(pf.name), loc.off)
	}
	return p.loose.Locate(id)
}

// FindPrefix implements PrefixFinder over packs and loose objects.
func (p *Packed) FindPrefix(ctx context.Context, prefix string) ([]ID, error) {
	ids, err := p.loose.FindPrefix(ctx, prefix)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.load(); err != nil {
		return nil, err
	}
	ids = slices.DeleteFunc(ids, func(id ID) bool { return p.goneLoose[id] })
	have := map[ID]bool{}
	for _, id := range ids {
		have[id] = true
	}
	add := func(id ID) {
		if !have[id] && strings.HasPrefix(id.String(), prefix) {
			have[id] = true
			ids = append(ids, id)
		}
	}
	for id := range p.index {
		add(id)
	}
	for _, w := range p.pending {
		if w == nil {
			continue
		}
		for id := range w.entries {
			add(id)
		}
	}
	return ids, nil
}

// Close implements Store: it closes the pack files. A pending pack is
// left unpublished (its objects are lost, as after a crash); call Sync
// first to keep them.
func (p *Packed) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pf := range p.packs {
		pf.f.Close()
	}
	for lane, w := range p.pending {
		if w != nil {
			p.discard(w)
			p.pending[lane] = nil
		}
	}
	p.packs, p.index, p.known, p.loaded = nil, map[ID]packLoc{}, map[string]bool{}, false
	return nil
}

// writeVectorAt writes bufs one after another at off: with one pwritev on
// a host file.
func writeVectorAt(w io.WriterAt, off int64, bufs [][]byte) error {
	if f, ok := w.(*os.File); ok {
		var total int
		for _, b := range bufs {
			total += len(b)
		}
		for total > 0 {
			n, err := unix.Pwritev(int(f.Fd()), bufs, off)
			if err != nil {
				return &os.PathError{Op: "pwritev", Path: f.Name(), Err: err}
			}
			total -= n
			off += int64(n)
			for n > 0 { // a short write: skip what was written
				if n >= len(bufs[0]) {
					n -= len(bufs[0])
					bufs = bufs[1:]
				} else {
					bufs[0] = bufs[0][n:]
					n = 0
				}
			}
		}
		return nil
	}
	for _, b := range bufs {
		if _, err := w.WriteAt(b, off); err != nil {
			return err
		}
		off += int64(len(b))
	}
	return nil
}

// seekWriter writes at offsets through a billy.File, one write at a time.
type seekWriter struct {
	mu sync.Mutex
	f  billy.File
}

func (w *seekWriter) WriteAt(b []byte, off int64) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := w.f.Seek(off, io.SeekStart); err != nil {
		return 0, err
	}
	return w.f.Write(b)
}

func readAll(fsys billy.Filesystem, name string) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(f)
	return buf.Bytes(), err
}

func writeWhole(fsys billy.Filesystem, name string, data []byte) error {
	f, err := fsys.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fsys.Remove(name)
	}
	return err
}

// MaxPackSize is the largest pack sbuml writes: a pack being written is
// published and a new one started when it reaches this size.
const MaxPackSize = maxPackSize

// PackEntry is one object listed in a pack index: its stored form is
// Size bytes at Offset in the pack, checked with CRC (see Check). Delta
// says it is a delta (see IsDelta), which only a scrapbook's own packs
// hold.
type PackEntry struct {
	ID     ID
	Offset uint64
	Size   uint32
	CRC    uint32
	Delta  bool
}

// DecodePackIndex parses a pack index (see docs/format.md, "Pack files")
// and verifies its checksum. The entries are sorted by ID.
func DecodePackIndex(b []byte) ([]PackEntry, error) {
	entries, err := decodePackIndex(b)
	if err != nil {
		return nil, err
	}
	out := make([]PackEntry, len(entries))
	for i, e := range entries {
		out[i] = PackEntry{ID: e.id, Offset: e.off, Size: e.size, CRC: e.crc, Delta: e.delta}
	}
	return out, nil
}

// Check reports whether stored, read from the pack at e, passes the
// index's checksum. Only compressed forms are checksummed: the rest of a
// stored form's bytes are checked by Unseal, against e.ID.
func (e PackEntry) Check(stored []byte) bool { return crcMatches(stored, e.CRC) }

// packCRC returns the checksum a pack index records for a stored form:
// the CRC-32C (Castagnoli) of a zstd frame or a delta, which covers the
// bytes of its header that decoding ignores and the object's ID therefore
// cannot see; 0 for an uncompressed form, the canonical encoding itself,
// every byte of which its ID covers. Checksumming those cost a twentieth
// of the CPU time of importing new incompressible data.
func packCRC(stored []byte) uint32 {
	if !checksummedForm(stored) {
		return 0
	}
	return crc32.Checksum(stored, castagnoli)
}

// checksummedForm reports whether a pack index checksums a stored form.
func checksummedForm(stored []byte) bool { return IsCompressed(stored) || IsDelta(stored) }

// crcMatches reports whether stored passes the index checksum crc.
func crcMatches(stored []byte, crc uint32) bool {
	return !checksummedForm(stored) || crc32.Checksum(stored, castagnoli) == crc
}

// CheckPackHeader reports whether header, the first bytes of a pack,
// starts with the pack magic. PackHeaderSize bytes are needed.
func CheckPackHeader(header []byte) error {
	if len(header) < len(packMagic) || !bytes.Equal(header[:len(packMagic)], packMagic) {
		return errors.New("not a pack file")
	}
	return nil
}

// PackHeaderSize is the size of the magic that starts every pack.
const PackHeaderSize = 8

// PackEncoder writes a pack to a stream, one object after another, and
// makes its index. Its output is the same as a scrapbook's pack, so
// the pair can be read by anything that reads packs.
type PackEncoder struct {
	w       io.Writer
	off     uint64
	entries []indexEntry
	seen    map[ID]bool
}

// NewPackEncoder writes the pack magic to w and returns an encoder that
// appends objects after it.
func NewPackEncoder(w io.Writer) (*PackEncoder, error) {
	if _, err := w.Write(packMagic); err != nil {
		return nil, err
	}
	return &PackEncoder{w: w, off: uint64(len(packMagic)), seen: map[ID]bool{}}, nil
}

// Add appends the record of one object in its stored form. An ID added
// before is skipped.
func (e *PackEncoder) Add(id ID, stored []byte) error {
	if e.seen[id] {
		return nil
	}
	if uint64(len(stored)) > math.MaxUint32 {
		return fmt.Errorf("pack object %s: %d bytes is too large for a pack record", id, len(stored))
	}
	hdr := make([]byte, 0, packRecordHeader)
	hdr = append(hdr, id[:]...)
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(len(stored)))
	if _, err := e.w.Write(hdr); err != nil {
		return err
	}
	if _, err := e.w.Write(stored); err != nil {
		return err
	}
	off := e.off + packRecordHeader
	e.entries = append(e.entries, indexEntry{id: id, off: off, size: uint32(len(stored)), crc: packCRC(stored), delta: IsDelta(stored)})
	e.seen[id] = true
	e.off = off + uint64(len(stored))
	return nil
}

// Size returns the number of bytes written so far.
func (e *PackEncoder) Size() uint64 { return e.off }

// Len returns the number of objects added.
func (e *PackEncoder) Len() int { return len(e.entries) }

// Index returns the pack's index and its name, "pack-" followed by the
// hex checksum of the index, which names both files (NAME.pack and
// NAME.idx).
func (e *PackEncoder) Index() (index []byte, name string) {
	idx := encodePackIndex(append([]indexEntry(nil), e.entries...))
	return idx, "pack-" + Sum(idx).String()
}
