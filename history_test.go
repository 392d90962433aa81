package sbuml_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/chunker"
	"github.com/sbuml/sbuml/objects"
)

// historyFixture is a scrapbook with three snapshots on main (m1, m2, m3,
// each changing the directory a little) and one on branch b2, made from
// another directory after them.
type historyFixture struct {
	s          *sbuml.Scrapbook
	m1, m2, m3 *sbuml.Result
	b2         *sbuml.Result
}

func newHistoryFixture(t *testing.T) *historyFixture {
	t.Helper()
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "base.bin"), randomBytes(10, 300*kib), 0o644)
	writeFile(t, filepath.Join(src, "notes.txt"), []byte("first\n"), 0o644)
	f := &historyFixture{s: newScrapbook(t)}
	f.m1 = mustImport(t, f.s, src, sbuml.SnapshotOptions{Message: "m1"})
	writeFile(t, filepath.Join(src, "more.bin"), randomBytes(11, 200*kib), 0o644)
	f.m2 = mustImport(t, f.s, src, sbuml.SnapshotOptions{Message: "m2\nwith a second line"})
	writeFile(t, filepath.Join(src, "notes.txt"), []byte("third\n"), 0o644)
	f.m3 = mustImport(t, f.s, src, sbuml.SnapshotOptions{Message: "m3", Labels: map[string]string{"machine": "m"}})

	other := t.TempDir()
	writeFile(t, filepath.Join(other, "base.bin"), randomBytes(10, 300*kib), 0o644)
	writeFile(t, filepath.Join(other, "own.bin"), randomBytes(12, 100*kib), 0o644)
	f.b2 = mustImport(t, f.s, other, sbuml.SnapshotOptions{Branch: "b2", Message: "b2"})
	return f
}

// TestResolve checks every form of revision Resolve takes, and its
// refusals.
// It is long because of its table, one case a line.
func TestResolve(t *testing.T) {
	ctx := context.Background()
	f := newHistoryFixture(t)
	s := f.s
	m1, m2, m3, b2 := f.m1.ID, f.m2.ID, f.m3.ID, f.b2.ID
	if err := s.Refs.Update("refs/tags/v1", objects.Zero, m1, "tag"); err != nil {
		t.Fatal(err)
	}
	// A branch whose name is also a prefix of a snapshot ID: refs win.
	hexName := m2.String()[:8]
	if err := s.Refs.Update("refs/heads/"+hexName, objects.Zero, m3, "hex-named branch"); err != nil {
		t.Fatal(err)
	}
	if err := s.Refs.Update("refs/tags/main", objects.Zero, m1, "tag named like a branch"); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		rev  string
		want objects.ID
	}{
		{m2.String(), m2},
		{strings.ToUpper(m2.String()), m2},
		{m1.Short(), m1},
		{m1.String()[:6], m1},
		{"main", m3},
		{"refs/heads/main", m3},
		{"HEAD", m3},
		{"b2", b2},
		{"refs/heads/b2", b2},
		{"v1", m1},
		{"refs/tags/v1", m1},
		{"refs/tags/main", m1},
		{hexName, m3},
		{"main~0", m3},
		{"main~1", m2},
		{"main~", m2},
		{"main~2", m1},
		{"main^", m2},
		{"main^^", m1},
		{"main~1^", m1},
		{"main^~1", m1},
		{"main~1~1", m1},
		{"HEAD~1", m2},
		{"HEAD^^", m1},
		{m3.Short() + "~2", m1},
		{m2.String() + "^", m1},
		{"b2~0", b2},
	}
	for _, tt := range tests {
		got, err := s.Resolve(ctx, tt.rev)
		if err != nil || got != tt.want {
			t.Errorf("Resolve(%q) = %s, %v; want %s", tt.rev, got.Short(), err, tt.want.Short())
		}
	}

	sn, err := objects.LoadSnapshot(ctx, s.Objects, m1)
	if err != nil {
		t.Fatal(err)
	}
	tree := sn.Tree // an object that is not a snapshot
	errTests := []struct {
		rev   string
		parts []string
	}{
		{"main~3", []string{"main~3", "no parent", "only 2 snapshots before it"}},
		{"main^^^", []string{"main^^^", "no parent", "only 2 snapshots before it"}},
		{"main~1000", []string{"main~1000", "no parent", "only 2 snapshots before it"}},
		{"b2^", []string{"b2^", "b2 has no parent"}},
		{"main~x", []string{`"main~x"`, "'~' must be followed by a number"}},
		{"main~-1", []string{`"main~-1"`, "'~' must be followed by a number"}},
		{"", []string{"empty revision"}},
		{"~2", []string{"empty revision"}},
		{"^", []string{"empty revision"}},
		{"nosuch", []string{`unknown revision "nosuch"`}},
		{"no/such/branch", []string{`unknown revision "no/such/branch"`}},
		{"refs/heads/nosuch", []string{`unknown revision "refs/heads/nosuch"`}},
		{"abc", []string{`unknown revision "abc"`}},
		{"a..b", []string{`bad revision "a..b"`, `".."`}},
		{"main..b2", []string{`bad revision "main..b2"`, `".."`}},
		{"../main", []string{`bad revision "../main"`, `".."`}},
		{"refs/heads/a..b", []string{`bad revision "refs/heads/a..b"`, `".."`}},
		{"has space", []string{`bad revision "has space"`, "space"}},
		{"star*", []string{`bad revision "star*"`}},
		{tree.Short(), []string{"unknown revision", tree.Short(), "no snapshot has that ID prefix"}},
		{unusedPrefix(t, s), []string{"unknown revision", "no snapshot has that ID prefix"}},
	}
	for _, tt := range errTests {
		got, err := s.Resolve(ctx, tt.rev)
		if err == nil {
			t.Errorf("Resolve(%q) = %s, want an error", tt.rev, got.Short())
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("Resolve(%q): error %q is more than one line", tt.rev, err)
		}
		for _, p := range tt.parts {
			if !strings.Contains(err.Error(), p) {
				t.Errorf("Resolve(%q): error %q does not say %q", tt.rev, err, p)
			}
		}
	}
}

// unusedPrefix returns a 6-digit hex prefix no object in s starts with.
func unusedPrefix(t *testing.T, s *sbuml.Scrapbook) string {
	t.Helper()
	used := map[string]bool{}
	s.Objects.List(context.Background(), func(id objects.ID, _ int64) error {
		used[id.String()[:6]] = true
		return nil
	})
	for i := 0; ; i++ {
		p := fmt.Sprintf("%06x", 0xabcdef-i)
		if !used[p] {
			return p
		}
	}
}

// TestResolveAmbiguous stores two snapshots whose IDs share their first
// four hex digits: that prefix is ambiguous and the error lists both,
// while a longer prefix picks one.
func TestResolveAmbiguous(t *testing.T) {
	ctx := context.Background()
	f := newHistoryFixture(t)
	s := f.s
	base, err := objects.LoadSnapshot(ctx, s.Objects, f.m1.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Search snapshot encodings for two IDs with the same 4-digit prefix
	// (about 300 tries, by the birthday bound).
	type candidate struct {
		id  objects.ID
		enc []byte
	}
	byPrefix := map[string]candidate{}
	var a, b candidate
	for i := 0; a.enc == nil; i++ {
		sn := *base
		sn.Message = fmt.Sprintf("candidate %d", i)
		enc := sn.Encode()
		c := candidate{objects.Sum(enc), enc}
		p := c.id.String()[:4]
		if other, ok := byPrefix[p]; ok {
			a, b = other, c
		}
		byPrefix[p] = c
	}
	for _, c := range []candidate{a, b} {
		if _, _, err := objects.Save(ctx, s.Objects, c.enc); err != nil {
			t.Fatal(err)
		}
	}
	prefix := a.id.String()[:4]
	_, err = s.Resolve(ctx, prefix)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("ambiguous revision %q", prefix)) ||
		!strings.Contains(err.Error(), a.id.Short()) || !strings.Contains(err.Error(), b.id.Short()) {
		t.Errorf("Resolve(%q): got %v, want it ambiguous between %s and %s", prefix, err, a.id.Short(), b.id.Short())
	}
	// The shortest prefixes that tell them apart pick one each.
	n := 4
	for a.id.String()[:n] == b.id.String()[:n] {
		n++
	}
	for _, c := range []candidate{a, b} {
		if got, err := s.Resolve(ctx, c.id.String()[:n]); err != nil || got != c.id {
			t.Errorf("Resolve(%q) = %s, %v; want %s", c.id.String()[:n], got.Short(), err, c.id.Short())
		}
	}
}

// TestLog checks the order, parents, refs and sizes Log reports, for one
// branch, for a starting point, and for every ref.
//
// It is long because one history, built once, is checked from every
// starting point.
func TestLog(t *testing.T) {
	ctx := context.Background()
	f := newHistoryFixture(t)
	s := f.s
	if err := s.Refs.Update("refs/tags/v1", objects.Zero, f.m1.ID, "tag"); err != nil {
		t.Fatal(err)
	}

	ids := func(entries []sbuml.LogEntry) []objects.ID {
		var out []objects.ID
		for _, e := range entries {
			out = append(out, e.ID)
		}
		return out
	}
	head, err := s.Log(ctx, sbuml.LogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(head), []objects.ID{f.m3.ID, f.m2.ID, f.m1.ID}; !slices.Equal(got, want) {
		t.Fatalf("log = %v, want m3, m2, m1 = %v", got, want)
	}
	results := []*sbuml.Result{f.m3, f.m2, f.m1}
	for i, e := range head {
		res := results[i]
		var wantParents []objects.ID
		if i+1 < len(head) {
			wantParents = []objects.ID{head[i+1].ID}
		}
		if !slices.Equal(e.Parents, wantParents) {
			t.Errorf("%s: parents %v, want %v", e.Message, e.Parents, wantParents)
		}
		if i+1 < len(head) && e.Time.Before(head[i+1].Time) {
			t.Errorf("%s is older than the entry after it", e.Message)
		}
		if e.LogicalBytes != res.LogicalBytes {
			t.Errorf("%s: %d logical bytes, import said %d", e.Message, e.LogicalBytes, res.LogicalBytes)
		}
		// The store held exactly the older snapshots' objects when each
		// was imported, so what it added is what the import stored.
		if e.AddedBytes != res.Stats.NewBytes {
			t.Errorf("%s: added %d bytes, import stored %d", e.Message, e.AddedBytes, res.Stats.NewBytes)
		}
		if e.Author == "" || e.Host == "" || e.Time.IsZero() {
			t.Errorf("%s: author %q, host %q, time %v: want them recorded", e.Message, e.Author, e.Host, e.Time)
		}
	}
	if head[1].Message != "m2\nwith a second line" {
		t.Errorf("message %q, want both lines", head[1].Message)
	}
	if head[0].Labels["machine"] != "m" {
		t.Errorf("labels %v, want machine=m", head[0].Labels)
	}
	if !slices.Equal(head[0].Refs, []string{"refs/heads/main"}) || !slices.Equal(head[2].Refs, []string{"refs/tags/v1"}) || head[1].Refs != nil {
		t.Errorf("refs: m3 %v, m2 %v, m1 %v; want [refs/heads/main], none, [refs/tags/v1]", head[0].Refs, head[1].Refs, head[2].Refs)
	}

	limited, err := s.Log(ctx, sbuml.LogOptions{Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(limited), []objects.ID{f.m3.ID, f.m2.ID}; !slices.Equal(got, want) {
		t.Errorf("log -n 2 = %v, want %v", got, want)
	}
	from, err := s.Log(ctx, sbuml.LogOptions{Revs: []string{"main~1"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(from), []objects.ID{f.m2.ID, f.m1.ID}; !slices.Equal(got, want) {
		t.Errorf("log main~1 = %v, want %v", got, want)
	}
	other, err := s.Log(ctx, sbuml.LogOptions{Revs: []string{"b2"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(other) != 1 || other[0].ID != f.b2.ID || len(other[0].Parents) != 0 || !slices.Equal(other[0].Refs, []string{"refs/heads/b2"}) {
		t.Errorf("log b2 = %+v, want the one parentless snapshot of b2", other)
	}
	// Listed alone, b2 still added only what no older snapshot of the
	// scrapbook holds (as a machine's first snapshot does not add its
	// base image), not all it reaches.
	if len(other) == 1 && other[0].AddedBytes != f.b2.Stats.NewBytes {
		t.Errorf("log b2: added %d bytes, import stored %d", other[0].AddedBytes, f.b2.Stats.NewBytes)
	}

	all, err := s.Log(ctx, sbuml.LogOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(all), []objects.ID{f.b2.ID, f.m3.ID, f.m2.ID, f.m1.ID}; !slices.Equal(got, want) {
		t.Errorf("log --all = %v, want b2, m3, m2, m1 = %v", got, want)
	}
	// b2 shares base.bin with main: it added only what is its own.
	if b := all[0].AddedBytes; b != f.b2.Stats.NewBytes || b >= 200*kib {
		t.Errorf("b2 added %d bytes (import stored %d), want about 100 KiB", b, f.b2.Stats.NewBytes)
	}

	du, err := s.Du(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for i, d := range du.Snapshots {
		e := all[len(all)-1-i]
		if d.ID != e.ID || d.AddedBytes != e.AddedBytes || d.LogicalBytes != e.LogicalBytes || d.Message != e.Message {
			t.Errorf("du line %d: %s +%d, %d logical; log --all: %s +%d, %d logical",
				i, d.ID.Short(), d.AddedBytes, d.LogicalBytes, e.ID.Short(), e.AddedBytes, e.LogicalBytes)
		}
		sum += d.AddedBytes
	}
	if sum != du.StoredBytes {
		t.Errorf("snapshots added %d bytes, the store holds %d", sum, du.StoredBytes)
	}

	if _, err := s.Log(ctx, sbuml.LogOptions{Revs: []string{"nosuch"}}); err == nil || !strings.Contains(err.Error(), "nosuch") {
		t.Errorf("log nosuch: got %v, want an error naming it", err)
	}
}

// TestLogEmpty lists the history of a new scrapbook: nothing, no error.
func TestLogEmpty(t *testing.T) {
	s := newScrapbook(t)
	for _, opts := range []sbuml.LogOptions{{}, {All: true}} {
		entries, err := s.Log(context.Background(), opts)
		if err != nil || len(entries) != 0 {
			t.Errorf("log %+v of a new scrapbook = %v, %v; want nothing", opts, entries, err)
		}
	}
	du, err := s.Du(context.Background())
	if err != nil || len(du.Snapshots) != 0 || du.Objects != 0 || du.DedupRatio != 0 {
		t.Errorf("du of a new scrapbook = %+v, %v", du, err)
	}
}

// TestDu checks the totals and ratios Du reports: the same random data on
// two branches dedupes 2:1 and does not compress; text compresses.
func TestDu(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "random.bin"), randomBytes(20, 2*mib), 0o644)
	s := newScrapbook(t)
	first := mustImport(t, s, src, sbuml.SnapshotOptions{})
	second := mustImport(t, s, src, sbuml.SnapshotOptions{Branch: "copy"})
	du, err := s.Du(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(du.Snapshots) != 2 || du.Snapshots[0].ID != first.ID || du.Snapshots[1].ID != second.ID {
		t.Fatalf("du lists %+v, want the two snapshots oldest first", du.Snapshots)
	}
	if du.LogicalBytes != 4*mib || du.UniqueChunkBytes != 2*mib || du.DedupRatio != 2 {
		t.Errorf("du: %d logical, %d unique, dedup %.3f; want 4 MiB, 2 MiB, 2",
			du.LogicalBytes, du.UniqueChunkBytes, du.DedupRatio)
	}
	if du.CompressionRatio > 1 || du.CompressionRatio < 0.99 {
		t.Errorf("du: random data compresses %.3fx, want about 1", du.CompressionRatio)
	}
	if du.Snapshots[1].AddedObjects != 1 {
		t.Errorf("the copy added %d objects, want 1 (its snapshot)", du.Snapshots[1].AddedObjects)
	}
	var objs, stored int64
	s.Objects.List(ctx, func(_ objects.ID, size int64) error {
		objs++
		stored += size
		return nil
	})
	if du.Objects != objs || du.StoredBytes != stored {
		t.Errorf("du: %d objects, %d bytes; the store lists %d, %d", du.Objects, du.StoredBytes, objs, stored)
	}

	text := t.TempDir()
	var b strings.Builder
	for i := 0; b.Len() < 2*mib; i++ {
		fmt.Fprintf(&b, "line %d: the quick brown fox jumps over the lazy dog\n", i)
	}
	writeFile(t, filepath.Join(text, "log.txt"), []byte(b.String()), 0o644)
	s2 := newScrapbook(t)
	mustImport(t, s2, text, sbuml.SnapshotOptions{})
	du2, err := s2.Du(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if du2.CompressionRatio < 3 || math.Abs(du2.DedupRatio-float64(du2.LogicalBytes)/float64(du2.UniqueChunkBytes)) > 1e-9 {
		t.Errorf("du of text: compression %.2fx, dedup %.2fx", du2.CompressionRatio, du2.DedupRatio)
	}
}

// TestShow lists the files of a snapshot with their chunk counts and holes.
//
// It is long because it is one scenario: each step starts from what the
// steps before it left.
func TestShow(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "hello.txt"), []byte("hello\n"), 0o640)
	writeFile(t, filepath.Join(src, "empty"), nil, 0o600)
	writeFile(t, filepath.Join(src, "dir", "random.bin"), randomBytes(30, mib), 0o755)
	if err := os.Symlink("dir/random.bin", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	// sparse.img: 1 MiB of data, then a 9 MiB hole.
	sparse := filepath.Join(src, "dir", "sparse.img")
	writeFile(t, sparse, randomBytes(31, mib), 0o644)
	if err := os.Truncate(sparse, 10*mib); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(src, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	zeros := filepath.Join(src, "zeros.img")
	writeFile(t, zeros, nil, 0o644)
	if err := os.Truncate(zeros, 4*mib); err != nil {
		t.Fatal(err)
	}

	s := newScrapbook(t)
	mustImport(t, s, src, sbuml.SnapshotOptions{Message: "show me"})
	res := mustImport(t, s, src, sbuml.SnapshotOptions{Message: "again"})
	r, err := s.Show(ctx, "main")
	if err != nil {
		t.Fatal(err)
	}
	log, err := s.Log(ctx, sbuml.LogOptions{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != res.ID || r.Message != "again" || len(r.Parents) != 1 || r.AddedBytes != log[0].AddedBytes || r.LogicalBytes != res.LogicalBytes {
		t.Errorf("show: %s %q, parents %v, +%d, %d logical; want %s %q, 1 parent, +%d, %d logical",
			r.ID.Short(), r.Message, r.Parents, r.AddedBytes, r.LogicalBytes, res.ID.Short(), "again", log[0].AddedBytes, res.LogicalBytes)
	}
	sn, err := objects.LoadSnapshot(ctx, s.Objects, res.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r.Tree != sn.Tree {
		t.Errorf("show: tree %s, snapshot says %s", r.Tree.Short(), sn.Tree.Short())
	}

	var paths []string
	byPath := map[string]sbuml.ShowEntry{}
	for _, e := range r.Files {
		paths = append(paths, e.Path)
		byPath[e.Path] = e
	}
	want := []string{"dir", "dir/random.bin", "dir/sparse.img", "empty", "hello.txt", "link", "zeros.img"}
	if !slices.Equal(paths, want) {
		t.Fatalf("show lists %v, want %v", paths, want)
	}
	chunking := chunker.Default.String()
	minChunk, maxChunk := uint64(chunker.Default.Min), uint64(chunker.Default.Max)
	checks := []struct {
		path       string
		kind       string
		mode       uint32
		size       uint64
		chunks     [2]int    // at least, at most
		holes      [2]uint64 // at least, at most
		isStreamed bool
	}{
		{"dir", "dir", 0o755, 11 * mib, [2]int{}, [2]uint64{}, false},
		{"dir/random.bin", "file", 0o755, mib, [2]int{int(mib / maxChunk), int(mib/minChunk) + 1}, [2]uint64{}, true},
		{"dir/sparse.img", "file", 0o644, 10 * mib, [2]int{int(mib / maxChunk), int(mib/minChunk) + 2}, [2]uint64{9*mib - maxChunk, 9 * mib}, true},
		{"empty", "file", 0o600, 0, [2]int{}, [2]uint64{}, true},
		{"hello.txt", "file", 0o640, 6, [2]int{1, 1}, [2]uint64{}, true},
		{"link", "symlink", 0o777, uint64(len("dir/random.bin")), [2]int{}, [2]uint64{}, false},
		{"zeros.img", "file", 0o644, 4 * mib, [2]int{}, [2]uint64{4 * mib, 4 * mib}, true},
	}
	for _, c := range checks {
		e := byPath[c.path]
		if e.Kind != c.kind || e.Mode != c.mode || e.Size != c.size || e.ID.IsZero() {
			t.Errorf("%s: %s %04o, %d bytes, id %s; want %s %04o, %d bytes", c.path, e.Kind, e.Mode, e.Size, e.ID.Short(), c.kind, c.mode, c.size)
		}
		if e.Chunks < c.chunks[0] || e.Chunks > c.chunks[1] || e.HoleBytes < c.holes[0] || e.HoleBytes > c.holes[1] {
			t.Errorf("%s: %d chunks, %d hole bytes; want %v chunks, %v hole bytes", c.path, e.Chunks, e.HoleBytes, c.chunks, c.holes)
		}
		if c.isStreamed != (e.Chunking == chunking) {
			t.Errorf("%s: chunking %q, want %q for files and nothing otherwise", c.path, e.Chunking, chunking)
		}
	}
	root, err := objects.LoadTree(ctx, s.Objects, sn.Tree)
	if err != nil {
		t.Fatal(err)
	}
	if e := root.Find("hello.txt"); e == nil || e.ID != byPath["hello.txt"].ID {
		t.Errorf("show gives hello.txt the ID %s, the tree %v", byPath["hello.txt"].ID.Short(), e)
	}

	if _, err := s.Show(ctx, "main~5"); err == nil || !strings.Contains(err.Error(), "main~5") {
		t.Errorf("show main~5: got %v, want an error naming it", err)
	}
}

// A damaged pack index hides the objects it lists: log and du then fail
// saying so, rather than print sizes without them.
func TestLogDuDamagedPackIndex(t *testing.T) {
	ctx := context.Background()
	s := newScrapbook(t)
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "random.bin"), randomBytes(21, 800*kib), 0o644)
	mustImport(t, s, src, sbuml.SnapshotOptions{Message: "one"})
	writeFile(t, filepath.Join(src, "more.bin"), randomBytes(22, 300*kib), 0o644)
	mustImport(t, s, src, sbuml.SnapshotOptions{Message: "two"})
	wantLog, err := s.Log(ctx, sbuml.LogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantDu, err := s.Du(ctx)
	if err != nil {
		t.Fatal(err)
	}
	indexes, _ := filepath.Glob(filepath.Join(s.Dir, "objects", "pack", "*.idx"))
	for _, idx := range indexes {
		fi, _ := os.Stat(idx)
		undo := flipByte(t, idx, fi.Size()/2, 0x10)
		d := reopen(t, s)
		if got, err := d.Log(ctx, sbuml.LogOptions{}); err == nil && !reflect.DeepEqual(got, wantLog) {
			t.Errorf("%s damaged: log succeeds with other sizes: %+v", filepath.Base(idx), got)
		} else if err != nil && !strings.Contains(err.Error(), "fsck") {
			t.Errorf("%s damaged: log fails with %q, want it to say to run fsck", filepath.Base(idx), err)
		}
		if got, err := d.Du(ctx); err == nil && !reflect.DeepEqual(got, wantDu) {
			t.Errorf("%s damaged: du succeeds with other sizes: %+v", filepath.Base(idx), got)
		}
		undo()
	}
}
