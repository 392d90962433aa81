// Package refs keeps the named pointers of a scrapbook: branches, tags,
// remote-tracking refs, images and the symbolic HEAD. Refs are small files
// below the scrapbook directory, laid out like git's loose refs:
//
//	HEAD                          "ref: refs/heads/main\n" (symbolic) or an ID
//	refs/heads/main               64 lowercase hex digits and "\n"
//	refs/tags/v1                  likewise
//	refs/remotes/origin/main      likewise
//	logs/refs/heads/main          the reflog: one line per update
//
// Every update is a compare-and-swap guarded by a lock file (name+".lock")
// that only one writer can create, so concurrent writers, in one process
// or many, never lose an update; a lock file left by a killed writer is
// removed by the next one (internal/lockfile). docs/refs.md describes the
// on-disk format exactly.
package refs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/util"

	"github.com/sbuml/sbuml/internal/lockfile"
	"github.com/sbuml/sbuml/objects"
)

var (
	// ErrNotFound means a ref (or reflog) does not exist.
	ErrNotFound = errors.New("ref not found")
	// ErrConflict means an update lost a race or met something in its way:
	// the ref does not hold the expected old value, another writer holds
	// its lock file, or another ref's file or directory occupies its path.
	ErrConflict = errors.New("ref conflict")
	// ErrInvalidName means a ref name breaks the rules of ValidateName or
	// ValidateShortName.
	ErrInvalidName = errors.New("invalid ref name")
	// ErrNotSymbolic means Symbolic was asked about a ref that holds an ID.
	ErrNotSymbolic = errors.New("ref is not symbolic")
	// ErrLocked means another live process holds the lock file of a ref
	// that an update needs. It wraps ErrConflict.
	ErrLocked = fmt.Errorf("%w: ref is locked", ErrConflict)
)

// refError is an error with its own one-line message that still matches
// one of the sentinel errors above with errors.Is.
type refError struct {
	kind error
	msg  string
}

func (e *refError) Error() string { return e.msg }
func (e *refError) Unwrap() error { return e.kind }

func errorf(kind error, format string, args ...any) error {
	return &refError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

const (
	// symrefPrefix starts the content of a symbolic ref file.
	symrefPrefix = "ref: "
	// maxSymrefDepth bounds how many symbolic refs Get follows in a row.
	maxSymrefDepth = 5
	// maxRefFileSize bounds how much of a ref file is read: a symbolic ref
	// to the longest valid name, plus slack to recognise oversized files.
	maxRefFileSize = len(symrefPrefix) + MaxNameLen + 2
	// logsDir holds the reflogs, mirroring the ref paths.
	logsDir = "logs"
)

// Ref is a ref name and the object ID it points at.
type Ref struct {
	Name string
	ID   objects.ID
}

// Store reads and writes the refs of one scrapbook. It is safe for
// concurrent use by several goroutines and processes if its file system
// is (the os file system is; go-billy's memfs is not).
type Store struct {
	fs  billy.Filesystem
	now func() time.Time
}

// New returns a Store for the refs below fs, which is rooted at the
// scrapbook directory (for example osfs.New(dir, osfs.WithBoundOS())).
func New(fs billy.Filesystem) *Store {
	return &Store{fs: fs, now: time.Now}
}

// value is the content of one ref file: an ID, or the name of the ref a
// symbolic ref points at.
type value struct {
	id     objects.ID
	target string
}

func (v value) symbolic() bool { return v.target != "" }

// display returns the path of the scrapbook file rel for messages: the
// full path when the file system knows its root.
func (s *Store) display(rel string) string {
	if r, ok := s.fs.(interface{ Root() string }); ok && r.Root() != "" {
		return filepath.Join(r.Root(), filepath.FromSlash(rel))
	}
	return rel
}

// read returns the content of the ref file name, and whether it exists.
// A directory, or a path through a file, is a ref that does not exist.
func (s *Store) read(name string) (value, bool, error) {
	fi, err := s.fs.Stat(name)
	if err != nil {
		if isNotExist(err) {
			return value{}, false, nil
		}
		return value{}, false, s.fileError("read ref "+name, "read", name, err)
	}
	if fi.IsDir() {
		return value{}, false, nil
	}
	f, err := s.fs.Open(name)
	if err != nil {
		if isNotExist(err) {
			return value{}, false, nil
		}
		return value{}, false, s.fileError("read ref "+name, "read", name, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, int64(maxRefFileSize)))
	if err != nil {
		return value{}, false, s.fileError("read ref "+name, "read", name, err)
	}
	v, err := parseValue(data)
	if err != nil {
		return value{}, false, fmt.Errorf("ref file %s is corrupt: %v", s.display(name), err)
	}
	return v, true, nil
}

// parseValue parses the content of a ref file.
func parseValue(data []byte) (value, error) {
	body, ok := bytes.CutSuffix(data, []byte("\n"))
	if !ok || bytes.IndexByte(body, '\n') >= 0 {
		return value{}, fmt.Errorf("want one line ending in a newline, got %s", quoteStart(data))
	}
	if target, ok := bytes.CutPrefix(body, []byte(symrefPrefix)); ok {
		if reason := nameProblem(string(target)); reason != "" || !strings.HasPrefix(string(target), "refs/") {
			return value{}, fmt.Errorf("symbolic ref target %q is not a valid name below refs/", target)
		}
		return value{target: string(target)}, nil
	}
	id, err := parseHexID(body)
	if err != nil {
		return value{}, fmt.Errorf("want 64 lowercase hex digits and a newline, got %s", quoteStart(data))
	}
	if id.IsZero() {
		return value{}, errors.New("holds the zero ID")
	}
	return value{id: id}, nil
}

// parseHexID parses exactly 64 lowercase hex digits.
func parseHexID(b []byte) (objects.ID, error) {
	if len(b) != 2*objects.IDSize {
		return objects.ID{}, fmt.Errorf("want %d hex digits, got %d bytes", 2*objects.IDSize, len(b))
	}
	for _, c := range b {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return objects.ID{}, fmt.Errorf("%q is not a lowercase hex digit", c)
		}
	}
	return objects.ParseID(string(b))
}

// quoteStart quotes data for an error message, shortened if long.
func quoteStart(data []byte) string {
	const max = 80
	if len(data) > max {
		return fmt.Sprintf("%q...", data[:max])
	}
	return fmt.Sprintf("%q", data)
}

// resolve follows symbolic refs from name. It returns the chain of names
// visited (name first, the ref that holds or will hold an ID last), the
// value of the last one and whether it exists.
func (s *Store) resolve(name string) (chain []string, v value, exists bool, err error) {
	chain = []string{name}
	for {
		v, exists, err = s.read(name)
		if err != nil || !exists || !v.symbolic() {
			return chain, v, exists, err
		}
		if len(chain) > maxSymrefDepth {
			return chain, value{}, false, fmt.Errorf("ref %s: more than %d levels of symbolic refs (%s)",
				chain[0], maxSymrefDepth, strings.Join(chain, " -> "))
		}
		name = v.target
		chain = append(chain, name)
	}
}

// Get returns the ID that ref name points at, following symbolic refs
// such as HEAD. It returns an error wrapping ErrNotFound if the ref, or
// the ref a symbolic ref points at, does not exist.
func (s *Store) Get(name string) (objects.ID, error) {
	if err := ValidateName(name); err != nil {
		return objects.ID{}, err
	}
	chain, v, exists, err := s.resolve(name)
	if err != nil {
		return objects.ID{}, err
	}
	if !exists {
		if len(chain) > 1 {
			return objects.ID{}, errorf(ErrNotFound, "ref %s not found (%s points at it)", chain[len(chain)-1], name)
		}
		return objects.ID{}, errorf(ErrNotFound, "ref %s not found", name)
	}
	return v.id, nil
}

// Symbolic returns the name that the symbolic ref name points at. It
// returns an error wrapping ErrNotFound if name does not exist and one
// wrapping ErrNotSymbolic if it holds an ID.
func (s *Store) Symbolic(name string) (string, error) {
	if err := ValidateName(name); err != nil {
		return "", err
	}
	v, exists, err := s.read(name)
	if err != nil {
		return "", err
	}
	if !exists {
		return "", errorf(ErrNotFound, "ref %s not found", name)
	}
	if !v.symbolic() {
		return "", errorf(ErrNotSymbolic, "ref %s is not symbolic: it holds %s", name, v.id)
	}
	return v.target, nil
}

// SetSymbolic makes name a symbolic ref pointing at target, which must be
// a full name below "refs/" and need not exist yet. It replaces whatever
// name held before, an ID or another target, so that HEAD can move from
// a detached ID back to a branch. It writes no reflog entry.
func (s *Store) SetSymbolic(name, target string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if err := ValidateName(target); err != nil {
		return fmt.Errorf("set symbolic ref %s: target: %w", name, err)
	}
	if !strings.HasPrefix(target, "refs/") {
		return fmt.Errorf("set symbolic ref %s: %w %q: a symbolic ref must point below refs/", name, ErrInvalidName, target)
	}
	op := "set symbolic ref " + name
	if err := s.checkCreate(op, name); err != nil {
		return err
	}
	l, err := s.lock(op, name)
	if err != nil {
		return err
	}
	defer l.release()
	if err := l.write([]byte(symrefPrefix + target + "\n")); err != nil {
		return err
	}
	return l.commit()
}

// Update sets ref name to new if it currently holds old, as one atomic
// compare-and-swap. An old of objects.Zero means the ref must not exist
// yet; a new of objects.Zero deletes it. Updating a symbolic ref such as
// HEAD updates the ref it points at, creating it if needed. Every update
// appends a line with why to the reflog of the updated ref, and of each
// symbolic ref it was reached through.
//
// If the ref does not hold old, or another writer holds its lock, or the
// path is taken by other refs, Update changes nothing and returns an
// error wrapping ErrConflict that says which.
func (s *Store) Update(name string, old, new objects.ID, why string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	op := "update " + name
	if old.IsZero() && new.IsZero() {
		return fmt.Errorf("%s: old and new IDs are both zero", op)
	}
	chain, _, exists, err := s.resolve(name)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	target := chain[len(chain)-1]
	described := target
	if target != name {
		described = fmt.Sprintf("%s (via %s)", target, name)
		op = fmt.Sprintf("update %s via %s", target, name)
	}
	if !exists && !new.IsZero() {
		if err := s.checkCreate(op, target); err != nil {
			return err
		}
	}

	l, err := s.lock(op, target)
	if err != nil {
		return err
	}
	defer l.release()
	if err := s.compareLocked(op, target, described, old); err != nil {
		return err
	}
	return s.applyLocked(l, op, chain, ReflogEntry{Old: old, New: new, Time: s.now(), Why: why})
}

// compareLocked reads target again under its lock, where only now is the
// value stable, and refuses unless it holds old (Zero: that it does not
// exist).
func (s *Store) compareLocked(op, target, described string, old objects.ID) error {
	cur, exists, err := s.read(target)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if exists && cur.symbolic() {
		return errorf(ErrConflict, "%s: ref %s became a symbolic ref to %s meanwhile", op, target, cur.target)
	}
	switch {
	case !exists && !old.IsZero():
		return errorf(ErrConflict, "ref %s does not exist, expected %s", described, old)
	case exists && old.IsZero():
		return errorf(ErrConflict, "ref %s already exists at %s, expected it not to exist", described, cur.id)
	case exists && cur.id != old:
		return errorf(ErrConflict, "ref %s is at %s, expected %s", described, cur.id, old)
	}
	return nil
}

// applyLocked moves the locked ref, the last of chain, to entry.New (Zero:
// deletes it). The reflog of every ref of chain gets entry first, while
// the lock is still held, so that log lines are in the same order as the
// updates; they are taken back if the ref cannot be moved.
func (s *Store) applyLocked(l *refLock, op string, chain []string, entry ReflogEntry) error {
	target := chain[len(chain)-1]
	if !entry.New.IsZero() {
		if err := l.write([]byte(entry.New.String() + "\n")); err != nil {
			return err
		}
	}
	var undo []func()
	rollback := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	for _, n := range chain {
		u, err := s.appendReflog(n, entry)
		if err != nil {
			rollback()
			return err
		}
		undo = append(undo, u)
	}
	if !entry.New.IsZero() {
		if err := l.commit(); err != nil {
			rollback()
			return err
		}
		return nil
	}
	if err := s.fs.Remove(target); err != nil {
		rollback()
		return s.fileError(op, "delete", target, err)
	}
	l.release()
	s.removeEmptyParents(target)
	return nil
}

// WaitUnlocked returns once no other writer holds the lock of ref name
// (or of the ref a symbolic name points at), waiting up to LockWait for
// a live one and removing one left by a killed writer. It returns an
// error wrapping ErrLocked if a writer still holds it. A long operation
// that ends in an update of name calls it first, so that it does not do
// its work only to find the ref locked.
func (s *Store) WaitUnlocked(name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	chain, _, _, err := s.resolve(name)
	if err != nil {
		return err
	}
	target := chain[len(chain)-1]
	if !s.isFile(target + ".lock") {
		return nil
	}
	l, err := s.lock("update "+target, target)
	if err != nil {
		return err
	}
	l.release()
	return nil
}

// checkCreate returns an error wrapping ErrConflict if ref name cannot be
// created because another ref, or the reflog of a deleted one, occupies
// its path: a file where name needs a directory, or a directory where it
// needs a file.
func (s *Store) checkCreate(op, name string) error {
	parts := strings.Split(name, "/")
	for i := 1; i < len(parts); i++ {
		prefix := strings.Join(parts[:i], "/")
		if s.isFile(prefix) {
			return errorf(ErrConflict, "%s: ref %s exists, so %s cannot be created", op, prefix, name)
		}
		if p := path.Join(logsDir, prefix); s.isFile(p) {
			return errorf(ErrConflict, "%s: reflog %s of ref %s is in the way; remove it if %s is gone for good",
				op, s.display(p), prefix, prefix)
		}
	}
	if s.isDir(name) {
		return errorf(ErrConflict, "%s: refs exist below %s/, so %s cannot be created", op, name, name)
	}
	if p := path.Join(logsDir, name); s.isDir(p) {
		return errorf(ErrConflict, "%s: reflogs of refs below %s/ are in %s; remove them if those refs are gone for good",
			op, name, s.display(p))
	}
	return nil
}

func (s *Store) isFile(name string) bool {
	fi, err := s.fs.Stat(name)
	return err == nil && !fi.IsDir()
}

func (s *Store) isDir(name string) bool {
	fi, err := s.fs.Stat(name)
	return err == nil && fi.IsDir()
}

// removeEmptyParents removes the directories above the deleted ref name
// that are now empty, keeping the namespace directory (refs/heads) and
// everything above it. It stops at the first directory that is not empty;
// failures are harmless and ignored.
func (s *Store) removeEmptyParents(name string) {
	parts := strings.Split(name, "/")
	for i := len(parts) - 1; i > 2; i-- {
		dir := strings.Join(parts[:i], "/")
		entries, err := s.fs.ReadDir(dir)
		if err != nil || len(entries) > 0 {
			return
		}
		if err := s.fs.Remove(dir); err != nil {
			return
		}
	}
}

// refLock is a held lock file for one ref.
type refLock struct {
	s         *Store
	op        string
	name      string // the ref
	path      string // name + ".lock"
	f         billy.File
	held      *lockfile.Lock // on the host's file system, instead of f
	committed bool
}

// LockWait is how long an update waits for another process to finish
// with a ref before it gives up (a variable for tests).
var LockWait = time.Second

// lock creates the lock file for ref name. On the host's file system the
// lock file is flocked from the moment it exists (internal/lockfile), so
// one left by a killed writer is removed at once, and one a live process
// holds is waited for up to LockWait. Elsewhere (memfs, in tests) it is
// created with O_EXCL.
func (s *Store) lock(op, name string) (*refLock, error) {
	p := name + ".lock"
	l := &refLock{s: s, op: op, name: name, path: p}
	if s.onHost() {
		held, err := lockfile.Create(s.display(p), 0o666, LockWait)
		if errors.Is(err, lockfile.ErrHeld) {
			return nil, errorf(ErrLocked, "%s: %v: another sbuml process is updating %s; try again when it is done", op, err, name)
		}
		if err != nil {
			return nil, s.fileError(op, "create lock file", p, err)
		}
		l.held = held
		return l, nil
	}
	var err error
	// A concurrent delete may remove the directory between MkdirAll (inside
	// OpenFile) and the open itself; git retries in that case, and so do we.
	for try := 0; try < 3; try++ {
		l.f, err = s.fs.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
		if err == nil || !isNotExist(err) {
			break
		}
	}
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, errorf(ErrLocked, "%s: lock file %s exists: another writer is updating %s", op, s.display(p), name)
		}
		return nil, s.fileError(op, "create lock file", p, err)
	}
	return l, nil
}

// write writes the new content of the ref to the lock file, flushes it to
// stable storage and closes it.
func (l *refLock) write(data []byte) error {
	if l.held != nil {
		f := l.held.File()
		if _, err := f.Write(data); err != nil {
			return l.s.fileError(l.op, "write", l.path, err)
		}
		if err := f.Sync(); err != nil {
			return l.s.fileError(l.op, "sync", l.path, err)
		}
		return nil
	}
	if _, err := l.f.Write(data); err != nil {
		return l.s.fileError(l.op, "write", l.path, err)
	}
	if _, err := syncFile(l.s.fs, l.f, l.path); err != nil {
		return l.s.fileError(l.op, "sync", l.path, err)
	}
	f := l.f
	l.f = nil
	if err := f.Close(); err != nil {
		return l.s.fileError(l.op, "close", l.path, err)
	}
	return nil
}

// commit renames the written lock file over the ref, which publishes the
// new value atomically and releases the lock.
func (l *refLock) commit() error {
	if l.held != nil {
		if err := l.held.Rename(l.s.display(l.name)); err != nil {
			return l.s.fileError(l.op, "rename", l.path, err)
		}
		l.committed = true
		return nil
	}
	if isMemfs(l.s.fs) {
		return l.commitByCopy()
	}
	if err := l.s.fs.Rename(l.path, l.name); err != nil {
		return l.s.fileError(l.op, "rename", l.path, err)
	}
	l.committed = true
	return nil
}

// commitByCopy copies the lock file over the ref and then releases the
// lock, for memfs, whose Rename is unsafe (see isMemfs). memfs lives in
// one process, where nothing can observe the copy half done.
func (l *refLock) commitByCopy() error {
	data, err := util.ReadFile(l.s.fs, l.path)
	if err == nil {
		var f billy.File
		if f, err = l.s.fs.OpenFile(l.name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o666); err == nil {
			_, err = f.Write(data)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
	}
	if err != nil {
		return l.s.fileError(l.op, "copy", l.path, err)
	}
	l.release()
	return nil
}

// release removes the lock file unless it was committed. It may be called
// more than once.
func (l *refLock) release() {
	if l.committed {
		return
	}
	l.committed = true
	if l.held != nil {
		l.held.Release()
		return
	}
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
	l.s.fs.Remove(l.path)
}

// isNotExist reports whether err means a file is missing, including
// "not a directory" for a path that runs through a file.
func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}
