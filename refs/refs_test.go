package refs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/memfs"
	"github.com/go-git/go-billy/v5/osfs"

	"github.com/sbuml/sbuml/objects"
	"golang.org/x/sys/unix"
)

// backends are the file systems every Store test runs on.
var backends = []struct {
	name string
	new  func(tb testing.TB) billy.Filesystem
}{
	{"memfs", func(testing.TB) billy.Filesystem { return memfs.New() }},
	{"osfs", func(tb testing.TB) billy.Filesystem { return osfs.New(tb.TempDir()) }},
	{"osfs-bound", func(tb testing.TB) billy.Filesystem { return osfs.New(tb.TempDir(), osfs.WithBoundOS()) }},
}

// forEachBackend runs f on a fresh Store over each backend. The Store's
// clock starts at unix time 1700000001 and ticks one second per update.
func forEachBackend(t *testing.T, f func(t *testing.T, fs billy.Filesystem, s *Store)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			fs := b.new(t)
			s := New(fs)
			tick := int64(1700000000)
			s.now = func() time.Time { tick++; return time.Unix(tick, 0) }
			f(t, fs, s)
		})
	}
}

// id returns a distinct, deterministic object ID for n.
func id(n int) objects.ID { return objects.Sum([]byte(fmt.Sprintf("test object %d", n))) }

func readFile(t *testing.T, fs billy.Filesystem, name string) string {
	t.Helper()
	f, err := fs.Open(name)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return string(b)
}

func writeFile(t *testing.T, fs billy.Filesystem, name, content string) {
	t.Helper()
	f, err := fs.Create(name)
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	if _, err := f.Write([]byte(content)); err != nil {
		t.Fatalf("write %s: %v", name, err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close %s: %v", name, err)
	}
}

func exists(fs billy.Filesystem, name string) bool {
	_, err := fs.Stat(name)
	return err == nil
}

// mustUpdate calls s.Update and fails the test on error.
func mustUpdate(t *testing.T, s *Store, name string, old, new objects.ID, why string) {
	t.Helper()
	if err := s.Update(name, old, new, why); err != nil {
		t.Fatalf("Update(%s): %v", name, err)
	}
}

// checkErr checks that err wraps want and mentions every string in parts
// on one line.
func checkErr(t *testing.T, err, want error, parts ...string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error = %v, want one wrapping %v", err, want)
	}
	msg := err.Error()
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			t.Errorf("error %q does not mention %q", msg, p)
		}
	}
	if strings.ContainsAny(msg, "\n\r") {
		t.Errorf("error is not one line: %q", msg)
	}
}

// noLockFiles fails the test if any *.lock file is left below refs/ or at
// the top.
func noLockFiles(t *testing.T, fs billy.Filesystem) {
	t.Helper()
	var walk func(dir string)
	walk = func(dir string) {
		entries, _ := fs.ReadDir(dir)
		for _, fi := range entries {
			p := path.Join(dir, fi.Name())
			if fi.IsDir() {
				walk(p)
			} else if strings.HasSuffix(p, ".lock") {
				t.Errorf("lock file %s left behind", p)
			}
		}
	}
	walk(".")
}

func TestUpdateCompareAndSwap(t *testing.T) {
	const main = "refs/heads/main"
	steps := []struct {
		desc     string
		old, new objects.ID
		why      string
		err      error    // nil, or the sentinel the error wraps
		msg      []string // what the error must mention
		after    objects.ID
	}{
		{"update a missing ref", id(1), id(2), "", ErrConflict,
			[]string{"ref refs/heads/main does not exist, expected " + id(1).String()}, objects.Zero},
		{"delete a missing ref", id(1), objects.Zero, "", ErrConflict,
			[]string{"does not exist"}, objects.Zero},
		{"create", objects.Zero, id(1), "create", nil, nil, id(1)},
		{"create again", objects.Zero, id(2), "", ErrConflict,
			[]string{"ref refs/heads/main already exists at " + id(1).String()}, id(1)},
		{"wrong old", id(2), id(3), "", ErrConflict,
			[]string{"ref refs/heads/main is at " + id(1).String() + ", expected " + id(2).String()}, id(1)},
		{"advance", id(1), id(2), "advance", nil, nil, id(2)},
		{"advance again with stale old", id(1), id(3), "", ErrConflict,
			[]string{"is at " + id(2).String()}, id(2)},
		{"same value", id(2), id(2), "touch", nil, nil, id(2)},
		{"delete with wrong old", id(1), objects.Zero, "", ErrConflict,
			[]string{"is at " + id(2).String()}, id(2)},
		{"delete", id(2), objects.Zero, "delete", nil, nil, objects.Zero},
		{"create after delete", objects.Zero, id(4), "recreate", nil, nil, id(4)},
	}
	forEachBackend(t, func(t *testing.T, fs billy.Filesystem, s *Store) {
		var wantLog []ReflogEntry
		for _, st := range steps {
			err := s.Update(main, st.old, st.new, st.why)
			if st.err == nil {
				if err != nil {
					t.Fatalf("%s: %v", st.desc, err)
				}
				wantLog = append(wantLog, ReflogEntry{Old: st.old, New: st.new, Why: st.why})
			} else {
				checkErr(t, err, st.err, st.msg...)
			}
			got, err := s.Get(main)
			switch {
			case st.after.IsZero() && !errors.Is(err, ErrNotFound):
				t.Fatalf("%s: Get = %v, %v; want ErrNotFound", st.desc, got, err)
			case !st.after.IsZero() && (err != nil || got != st.after):
				t.Fatalf("%s: Get = %v, %v; want %v", st.desc, got, err, st.after)
			}
		}
		noLockFiles(t, fs)

		log, err := s.Reflog(main)
		if err != nil {
			t.Fatal(err)
		}
		if len(log) != len(wantLog) {
			t.Fatalf("reflog has %d entries, want %d: %v", len(log), len(wantLog), log)
		}
		for i, e := range log {
			w := wantLog[i]
			if e.Old != w.Old || e.New != w.New || e.Why != w.Why {
				t.Errorf("reflog[%d] = %v %v %q, want %v %v %q", i, e.Old.Short(), e.New.Short(), e.Why,
					w.Old.Short(), w.New.Short(), w.Why)
			}
			if i > 0 && !e.Time.After(log[i-1].Time) {
				t.Errorf("reflog[%d] time %v is not after %v", i, e.Time, log[i-1].Time)
			}
		}
	})
}

func TestUpdateRejects(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fs billy.Filesystem, s *Store) {
		err := s.Update("refs/heads/main", objects.Zero, objects.Zero, "")
		if err == nil || !strings.Contains(err.Error(), "both zero") {
			t.Errorf("Update(zero, zero) = %v, want an error saying both are zero", err)
		}
		checkErr(t, s.Update("refs/heads/a..b", objects.Zero, id(1), ""), ErrInvalidName, `"refs/heads/a..b"`)
		checkErr(t, s.Update("main", objects.Zero, id(1), ""), ErrInvalidName, `"main"`)
		if exists(fs, "refs") || exists(fs, "logs") {
			t.Error("rejected updates created files")
		}
	})
}

func TestDeleteRemovesEmptyDirectories(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fs billy.Filesystem, s *Store) {
		for i, name := range []string{"refs/heads/a/b/c", "refs/heads/a/d", "refs/remotes/origin/main"} {
			mustUpdate(t, s, name, objects.Zero, id(i), "create")
		}
		steps := []struct {
			del     string
			gone    []string
			remains []string
		}{
			{"refs/heads/a/b/c", []string{"refs/heads/a/b/c", "refs/heads/a/b"}, []string{"refs/heads/a", "refs/heads/a/d"}},
			{"refs/heads/a/d", []string{"refs/heads/a"}, []string{"refs/heads", "refs/remotes/origin/main"}},
			{"refs/remotes/origin/main", []string{"refs/remotes/origin"}, []string{"refs/remotes", "refs/heads"}},
		}
		for _, st := range steps {
			cur, err := s.Get(st.del)
			if err != nil {
				t.Fatal(err)
			}
			mustUpdate(t, s, st.del, cur, objects.Zero, "delete")
			for _, p := range st.gone {
				if exists(fs, p) {
					t.Errorf("after deleting %s, %s still exists", st.del, p)
				}
			}
			for _, p := range st.remains {
				if !exists(fs, p) {
					t.Errorf("after deleting %s, %s is gone", st.del, p)
				}
			}
			log, err := s.Reflog(st.del)
			if err != nil {
				t.Fatalf("reflog of deleted %s: %v", st.del, err)
			}
			if len(log) != 2 || log[1].Old != cur || !log[1].New.IsZero() || log[1].Why != "delete" {
				t.Errorf("reflog of deleted %s = %+v, want create then delete", st.del, log)
			}
		}
		noLockFiles(t, fs)
	})
}

// TestSymbolicHEAD makes HEAD a symbolic ref and updates, reads and logs
// through it.
// It is long because it is one scenario: each step starts from what the
// steps before it left.
func TestSymbolicHEAD(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fs billy.Filesystem, s *Store) {
		if _, err := s.Symbolic("HEAD"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Symbolic(HEAD) before it exists = %v, want ErrNotFound", err)
		}
		if err := s.SetSymbolic("HEAD", "refs/heads/main"); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, fs, "HEAD"); got != "ref: refs/heads/main\n" {
			t.Errorf("HEAD file = %q", got)
		}
		if target, err := s.Symbolic("HEAD"); err != nil || target != "refs/heads/main" {
			t.Errorf("Symbolic(HEAD) = %q, %v", target, err)
		}
		// An unborn branch: HEAD points at a ref that does not exist yet.
		_, err := s.Get("HEAD")
		checkErr(t, err, ErrNotFound, "refs/heads/main not found", "HEAD points at it")

		// The first update through HEAD creates the branch.
		mustUpdate(t, s, "HEAD", objects.Zero, id(1), "first")
		for _, name := range []string{"HEAD", "refs/heads/main"} {
			if got, err := s.Get(name); err != nil || got != id(1) {
				t.Errorf("Get(%s) = %v, %v; want %v", name, got, err, id(1))
			}
		}
		if got := readFile(t, fs, "HEAD"); got != "ref: refs/heads/main\n" {
			t.Errorf("HEAD file after update = %q, want it still symbolic", got)
		}
		checkErr(t, s.Update("HEAD", id(2), id(3), ""), ErrConflict, "refs/heads/main (via HEAD) is at "+id(1).String())

		// Updating the branch directly does not log in HEAD's reflog.
		mustUpdate(t, s, "refs/heads/main", id(1), id(2), "direct")
		mustUpdate(t, s, "HEAD", id(2), id(3), "through HEAD")
		wantLogs := map[string][]string{
			"HEAD":            {"first", "through HEAD"},
			"refs/heads/main": {"first", "direct", "through HEAD"},
		}
		for name, want := range wantLogs {
			log, err := s.Reflog(name)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range log {
				got = append(got, e.Why)
			}
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("reflog of %s = %q, want %q", name, got, want)
			}
		}

		if _, err := s.Symbolic("refs/heads/main"); !errors.Is(err, ErrNotSymbolic) {
			t.Errorf("Symbolic(refs/heads/main) = %v, want ErrNotSymbolic", err)
		}

		// Retarget HEAD; the old branch is untouched.
		if err := s.SetSymbolic("HEAD", "refs/heads/dev"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get("HEAD"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(HEAD) on unborn dev = %v, want ErrNotFound", err)
		}
		if got, _ := s.Get("refs/heads/main"); got != id(3) {
			t.Errorf("main moved to %v after retargeting HEAD", got)
		}

		// A detached HEAD holds an ID and is updated itself.
		writeFile(t, fs, "HEAD", id(5).String()+"\n")
		if _, err := s.Symbolic("HEAD"); !errors.Is(err, ErrNotSymbolic) {
			t.Errorf("Symbolic(detached HEAD) = %v, want ErrNotSymbolic", err)
		}
		mustUpdate(t, s, "HEAD", id(5), id(6), "detached")
		if got := readFile(t, fs, "HEAD"); got != id(6).String()+"\n" {
			t.Errorf("detached HEAD file = %q", got)
		}
		if exists(fs, "refs/heads/dev") {
			t.Error("updating a detached HEAD created its old target")
		}
		// SetSymbolic re-attaches it.
		if err := s.SetSymbolic("HEAD", "refs/heads/main"); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Get("HEAD"); got != id(3) {
			t.Errorf("Get(HEAD) after re-attaching = %v, want %v", got, id(3))
		}
		noLockFiles(t, fs)
	})
}

func TestSetSymbolicRejects(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fs billy.Filesystem, s *Store) {
		checkErr(t, s.SetSymbolic("HEAD", "HEAD"), ErrInvalidName, "below refs/")
		checkErr(t, s.SetSymbolic("HEAD", "ORIG_HEAD"), ErrInvalidName, "below refs/")
		checkErr(t, s.SetSymbolic("HEAD", "refs/heads/a b"), ErrInvalidName, "contains a space")
		checkErr(t, s.SetSymbolic("head", "refs/heads/main"), ErrInvalidName, `"head"`)
		if exists(fs, "HEAD") {
			t.Error("rejected SetSymbolic created HEAD")
		}
	})
}

func TestSymbolicLoop(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fs billy.Filesystem, s *Store) {
		if err := s.SetSymbolic("refs/heads/a", "refs/heads/b"); err != nil {
			t.Fatal(err)
		}
		if err := s.SetSymbolic("refs/heads/b", "refs/heads/a"); err != nil {
			t.Fatal(err)
		}
		_, err := s.Get("refs/heads/a")
		if err == nil || !strings.Contains(err.Error(), "levels of symbolic refs") {
			t.Errorf("Get on a loop = %v, want a too-many-levels error", err)
		}
		err = s.Update("refs/heads/a", objects.Zero, id(1), "")
		if err == nil || !strings.Contains(err.Error(), "levels of symbolic refs") {
			t.Errorf("Update on a loop = %v, want a too-many-levels error", err)
		}
	})
}

// TestOnDiskFormat pins the bytes documented in docs/refs.md.
func TestOnDiskFormat(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fs billy.Filesystem, s *Store) {
		a, b := id(1), id(2)
		zero := strings.Repeat("0", 64)
		mustUpdate(t, s, "refs/tags/v1", objects.Zero, a, "save: first\n\nlong  body\twith tabs ")
		if got, want := readFile(t, fs, "refs/tags/v1"), a.String()+"\n"; got != want {
			t.Errorf("ref file = %q, want %q", got, want)
		}
		mustUpdate(t, s, "refs/tags/v1", a, b, "")
		mustUpdate(t, s, "refs/tags/v1", b, objects.Zero, "bad \xff utf-8")
		want := zero + " " + a.String() + " 1700000001 save: first long body with tabs\n" +
			a.String() + " " + b.String() + " 1700000002 \n" +
			b.String() + " " + zero + " 1700000003 bad \uFFFD utf-8\n"
		if got := readFile(t, fs, "logs/refs/tags/v1"); got != want {
			t.Errorf("reflog file =\n%q\nwant\n%q", got, want)
		}
		log, err := s.Reflog("refs/tags/v1")
		if err != nil {
			t.Fatal(err)
		}
		if len(log) != 3 || log[0].Time.Unix() != 1700000001 || log[1].Why != "" || log[2].Why != "bad \uFFFD utf-8" {
			t.Errorf("parsed reflog = %+v", log)
		}
	})
}

func TestReflogErrors(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fs billy.Filesystem, s *Store) {
		_, err := s.Reflog("refs/heads/nothing")
		checkErr(t, err, ErrNotFound, "refs/heads/nothing")

		// A ref written by hand has no reflog yet: an empty one.
		writeFile(t, fs, "refs/heads/hand", id(1).String()+"\n")
		if log, err := s.Reflog("refs/heads/hand"); err != nil || len(log) != 0 {
			t.Errorf("Reflog of a ref without log = %v, %v; want empty", log, err)
		}

		good := objects.Zero.String() + " " + id(1).String() + " 1700000000 ok\n"
		for _, tc := range []struct{ content, want string }{
			{good + "garbage\n", "line 2: want"},
			{good + good[:40], "line 2: no newline at end"},
			{good + strings.Replace(good, " 1700000000", " soon", 1), `line 2: time "soon"`},
			{strings.ToUpper(id(2).String()) + good[64:], "line 1: old ID"},
			{good + good[:65] + "x" + good[66:], "line 2: new ID"},
		} {
			writeFile(t, fs, "logs/refs/heads/bad", tc.content)
			_, err := s.Reflog("refs/heads/bad")
			if err == nil {
				t.Errorf("Reflog of %q: no error", tc.content)
				continue
			}
			p := s.display("logs/refs/heads/bad")
			for _, part := range []string{"reflog " + p + " is corrupt", tc.want} {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("Reflog of %q = %q, want it to contain %q", tc.content, err, part)
				}
			}
		}
	})
}

func TestList(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fs billy.Filesystem, s *Store) {
		if refs, err := s.List(""); err != nil || len(refs) != 0 {
			t.Fatalf("List on an empty store = %v, %v", refs, err)
		}
		names := []string{
			"refs/heads/main", "refs/heads/a-c", "refs/heads/a/b", "refs/heads/feature/x",
			"refs/heads/fe", "refs/tags/v1", "refs/remotes/origin/main", "refs/images/debian",
		}
		ids := map[string]objects.ID{}
		for i, name := range names {
			ids[name] = id(i)
			mustUpdate(t, s, name, objects.Zero, id(i), "")
		}
		ids["HEAD"] = ids["refs/heads/main"]
		if err := s.SetSymbolic("HEAD", "refs/heads/main"); err != nil {
			t.Fatal(err)
		}
		// A dangling symbolic ref and a lock file are not listed.
		if err := s.SetSymbolic("refs/remotes/origin/HEAD", "refs/remotes/origin/gone"); err != nil {
			t.Fatal(err)
		}
		writeFile(t, fs, "refs/heads/wip.lock", "")

		tests := []struct {
			prefix string
			want   []string
		}{
			{"", []string{"HEAD", "refs/heads/a-c", "refs/heads/a/b", "refs/heads/fe", "refs/heads/feature/x",
				"refs/heads/main", "refs/images/debian", "refs/remotes/origin/main", "refs/tags/v1"}},
			{"refs/", []string{"refs/heads/a-c", "refs/heads/a/b", "refs/heads/fe", "refs/heads/feature/x",
				"refs/heads/main", "refs/images/debian", "refs/remotes/origin/main", "refs/tags/v1"}},
			{"re", []string{"refs/heads/a-c", "refs/heads/a/b", "refs/heads/fe", "refs/heads/feature/x",
				"refs/heads/main", "refs/images/debian", "refs/remotes/origin/main", "refs/tags/v1"}},
			{"refs/heads/", []string{"refs/heads/a-c", "refs/heads/a/b", "refs/heads/fe", "refs/heads/feature/x", "refs/heads/main"}},
			{"refs/heads/a", []string{"refs/heads/a-c", "refs/heads/a/b"}},
			{"refs/heads/a/", []string{"refs/heads/a/b"}},
			{"refs/heads/fe", []string{"refs/heads/fe", "refs/heads/feature/x"}},
			{"refs/heads/feature/", []string{"refs/heads/feature/x"}},
			{"refs/heads/main", []string{"refs/heads/main"}},
			{"refs/tags/", []string{"refs/tags/v1"}},
			{"refs/remotes/", []string{"refs/remotes/origin/main"}},
			{"refs/nothing/", nil},
			{"refs/heads/zzz", nil},
			{"HE", []string{"HEAD"}},
			{"HEAD", []string{"HEAD"}},
			{"logs/", nil},
		}
		for _, tc := range tests {
			refs, err := s.List(tc.prefix)
			if err != nil {
				t.Errorf("List(%q): %v", tc.prefix, err)
				continue
			}
			var got []string
			for _, r := range refs {
				got = append(got, r.Name)
				if r.ID != ids[r.Name] {
					t.Errorf("List(%q): %s = %v, want %v", tc.prefix, r.Name, r.ID, ids[r.Name])
				}
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("List(%q) = %q, want %q", tc.prefix, got, tc.want)
			}
		}

		for _, prefix := range []string{"/refs", "refs/../x"} {
			if _, err := s.List(prefix); !errors.Is(err, ErrInvalidName) {
				t.Errorf("List(%q) = %v, want ErrInvalidName", prefix, err)
			}
		}

		// A stray file that is not a ref is reported by name.
		writeFile(t, fs, "refs/heads/notes.txt~", "")
		_, err := s.List("refs/heads/")
		if err == nil || !strings.Contains(err.Error(), s.display("refs/heads/notes.txt~")+" is not a ref") {
			t.Errorf("List with a stray file = %v", err)
		}
	})
}

func TestCorruptRefFile(t *testing.T) {
	a := id(1).String()
	tests := []struct{ content, want string }{
		{"", `want one line ending in a newline, got ""`},
		{a, "want one line ending in a newline"},
		{a + "\n\n", "want one line ending in a newline"},
		{"abc\n", `want 64 lowercase hex digits and a newline, got "abc\n"`},
		{strings.ToUpper(a) + "\n", "want 64 lowercase hex digits"},
		{a + " \n", "want 64 lowercase hex digits"},
		{strings.Repeat("0", 64) + "\n", "holds the zero ID"},
		{"ref: main\n", `symbolic ref target "main" is not a valid name below refs/`},
		{"ref: HEAD\n", `symbolic ref target "HEAD" is not a valid name below refs/`},
		{strings.Repeat("x", 5000), "..."},
	}
	forEachBackend(t, func(t *testing.T, fs billy.Filesystem, s *Store) {
		for _, tc := range tests {
			writeFile(t, fs, "refs/heads/bad", tc.content)
			p := s.display("refs/heads/bad")
			_, err := s.Get("refs/heads/bad")
			if err == nil || errors.Is(err, ErrNotFound) {
				t.Errorf("Get with content %q = %v, want a corruption error", tc.content, err)
				continue
			}
			for _, part := range []string{"ref file " + p + " is corrupt", tc.want} {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("Get with content %q = %q, want it to contain %q", tc.content, err, part)
				}
			}
			if len(err.Error()) > 300 {
				t.Errorf("error for content %q is %d bytes long", tc.content, len(err.Error()))
			}
			// Neither Update nor List may silently replace or skip it.
			if err := s.Update("refs/heads/bad", id(1), id(2), ""); err == nil || !strings.Contains(err.Error(), "is corrupt") {
				t.Errorf("Update of a corrupt ref = %v", err)
			}
			if _, err := s.List("refs/heads/"); err == nil || !strings.Contains(err.Error(), "is corrupt") {
				t.Errorf("List with a corrupt ref = %v", err)
			}
			if got := readFile(t, fs, "refs/heads/bad"); got != tc.content {
				t.Errorf("corrupt ref file was changed to %q", got)
			}
		}
		noLockFiles(t, fs)
	})
}

// A lock file that another writer holds blocks updates and is left
// alone. On the host's file system only a lock file a live process
// flocks is held (see TestStaleLockIsBroken); in memfs, which lives in one
// process, any lock file is.
func TestHeldLock(t *testing.T) {
	defer func(w time.Duration) { LockWait = w }(LockWait)
	LockWait = 50 * time.Millisecond
	forEachBackend(t, func(t *testing.T, fs billy.Filesystem, s *Store) {
		const main = "refs/heads/main"
		mustUpdate(t, s, main, objects.Zero, id(1), "")
		writeFile(t, fs, main+".lock", "")
		lock := s.display(main + ".lock")
		if s.onHost() {
			f, err := os.Open(lock)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
				t.Fatal(err)
			}
		}

		checkErr(t, s.Update(main, id(1), id(2), ""), ErrLocked, lock, "another")
		checkErr(t, s.SetSymbolic(main, "refs/heads/other"), ErrConflict, lock)
		if got, _ := s.Get(main); got != id(1) {
			t.Errorf("ref changed to %v despite the lock", got)
		}
		if !exists(fs, main+".lock") {
			t.Fatal("the other writer's lock file was removed")
		}
		if log, _ := s.Reflog(main); len(log) != 1 {
			t.Errorf("reflog has %d entries, want 1: a failed update was logged", len(log))
		}

		if err := fs.Remove(main + ".lock"); err != nil {
			t.Fatal(err)
		}
		mustUpdate(t, s, main, id(1), id(2), "")
	})
}

func TestPathConflicts(t *testing.T) {
	tests := []struct {
		desc   string
		setup  func(t *testing.T, s *Store)
		create string
		want   string
	}{
		{"ref where a directory is needed", func(t *testing.T, s *Store) {
			mustUpdate(t, s, "refs/heads/a", objects.Zero, id(1), "")
		}, "refs/heads/a/b", "ref refs/heads/a exists, so refs/heads/a/b cannot"},
		{"refs where a file is needed", func(t *testing.T, s *Store) {
			mustUpdate(t, s, "refs/heads/a/b", objects.Zero, id(1), "")
		}, "refs/heads/a", "refs exist below refs/heads/a/, so refs/heads/a cannot"},
		{"reflog of a deleted ref where a directory is needed", func(t *testing.T, s *Store) {
			mustUpdate(t, s, "refs/heads/a", objects.Zero, id(1), "")
			mustUpdate(t, s, "refs/heads/a", id(1), objects.Zero, "")
		}, "refs/heads/a/b", "reflog logs/refs/heads/a of ref refs/heads/a is in the way"},
		{"reflogs of deleted refs where a file is needed", func(t *testing.T, s *Store) {
			mustUpdate(t, s, "refs/heads/a/b", objects.Zero, id(1), "")
			mustUpdate(t, s, "refs/heads/a/b", id(1), objects.Zero, "")
		}, "refs/heads/a", "reflogs of refs below refs/heads/a/ are in logs/refs/heads/a"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, fs billy.Filesystem, s *Store) {
				tc.setup(t, s)
				want := strings.ReplaceAll(tc.want, "logs/", strings.TrimSuffix(s.display("logs/x"), "x"))
				checkErr(t, s.Update(tc.create, objects.Zero, id(2), ""), ErrConflict, want)
				checkErr(t, s.SetSymbolic(tc.create, "refs/heads/main"), ErrConflict, want)
				if _, err := s.Get(tc.create); !errors.Is(err, ErrNotFound) {
					t.Errorf("Get(%s) = %v, want ErrNotFound", tc.create, err)
				}
				noLockFiles(t, fs)
			})
		})
	}
}

func TestSyncFile(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			fs := b.new(t)
			f, err := fs.Create("f")
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			synced, err := syncFile(fs, f, "f")
			if err != nil {
				t.Fatal(err)
			}
			if want := b.name != "memfs"; synced != want {
				t.Errorf("syncFile reports synced=%v, want %v", synced, want)
			}
		})
	}
}

func TestDisplayPath(t *testing.T) {
	dir := t.TempDir()
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := New(osfs.New(dir))
	if got, want := s.display("refs/heads/main.lock"), filepath.Join(real, "refs", "heads", "main.lock"); got != want {
		t.Errorf("display = %q, want %q", got, want)
	}
}

// TestUpdateLeavesNeighbours guards against file systems whose rename of
// "main.lock" also touches files that merely start with that name (memfs
// does; see isMemfs).
func TestUpdateLeavesNeighbours(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fs billy.Filesystem, s *Store) {
		neighbours := []string{"refs/heads/main.locked", "refs/heads/main.lock-x/y", "refs/heads/mainline"}
		for i, name := range neighbours {
			mustUpdate(t, s, name, objects.Zero, id(i), "")
		}
		mustUpdate(t, s, "refs/heads/main", objects.Zero, id(10), "")
		mustUpdate(t, s, "refs/heads/main", id(10), id(11), "")
		if err := s.SetSymbolic("refs/heads/main", "refs/heads/mainline"); err != nil {
			t.Fatal(err)
		}
		for i, name := range neighbours {
			if got, err := s.Get(name); err != nil || got != id(i) {
				t.Errorf("Get(%s) = %v, %v; want %v", name, got, err, id(i))
			}
		}
		if got, err := s.Get("refs/heads/main"); err != nil || got != id(2) {
			t.Errorf("Get(refs/heads/main) = %v, %v; want %v through the symbolic ref", got, err, id(2))
		}
		noLockFiles(t, fs)
	})
}
