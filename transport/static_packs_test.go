package transport_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-git/go-billy/v5/osfs"
	sbuml "github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/transport"
)

// requestLog counts the requests a web server answers, by kind of file.
type requestLog struct {
	mu     sync.Mutex
	byKind map[string]int
	paths  []string
}

func (l *requestLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kind := r.URL.Path
		switch {
		case strings.HasPrefix(kind, "/objects/"):
			kind = "object"
		case strings.HasSuffix(kind, ".pack"):
			kind = "pack"
		case strings.HasSuffix(kind, ".idx"):
			kind = "idx"
		}
		l.mu.Lock()
		l.byKind[kind]++
		l.paths = append(l.paths, r.URL.Path)
		l.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (l *requestLog) reset() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.byKind
	l.byKind, l.paths = map[string]int{}, nil
	return m
}

// serve serves the published directory dir and logs the requests.
func serve(t *testing.T, dir string) (string, *requestLog) {
	return serveWith(t, dir, http.FileServer(http.Dir(dir)))
}

// serveNoRanges serves dir as python3 -m http.server does: a range
// request gets the whole file.
func serveNoRanges(t *testing.T, dir string) (string, *requestLog) {
	return serveWith(t, dir, ignoreRanges(http.FileServer(http.Dir(dir))))
}

func ignoreRanges(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		req.Header.Del("Range")
		h.ServeHTTP(w, req)
	})
}

func serveWith(t *testing.T, dir string, h http.Handler) (string, *requestLog) {
	t.Helper()
	log := &requestLog{byKind: map[string]int{}}
	srv := httptest.NewServer(log.wrap(h))
	t.Cleanup(srv.Close)
	return srv.URL, log
}

// publishedBook is a scrapbook with a few MiB in one snapshot on main,
// published into dir.
func publishedBook(t *testing.T) (book *sbuml.Scrapbook, work, dir string, first objects.ID) {
	t.Helper()
	ctx := context.Background()
	book, err := sbuml.Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	work = t.TempDir()
	writeFiles(t, work, 11, map[string]int{"ram.bin": 3 << 20, "disk.bin": 1 << 20, "small/a.txt": 300})
	r, err := book.Import(ctx, work, sbuml.SnapshotOptions{Branch: "main", Message: "first"})
	if err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(t.TempDir(), "pub")
	if _, err := book.Publish(ctx, dir, "http://example.invalid/", sbuml.TransferOptions{}); err != nil {
		t.Fatal(err)
	}
	return book, work, dir, r.ID
}

func readPackList(t *testing.T, dir string) *transport.PackList {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, transport.PackListFile))
	if err != nil {
		t.Fatal(err)
	}
	var l transport.PackList
	if err := json.Unmarshal(b, &l); err != nil {
		t.Fatal(err)
	}
	return &l
}

// fetchStatic fetches snapshot id from url into local with a new Static
// client and checks local with fsck.
func fetchStatic(t *testing.T, local *sbuml.Scrapbook, url string, id objects.ID) error {
	t.Helper()
	ctx := context.Background()
	r := transport.NewStatic(url, nil)
	defer r.Close()
	if _, err := transport.Fetch(ctx, local.Objects, r, []objects.ID{id}, transport.Options{}); err != nil {
		return err
	}
	rep, err := local.Fsck(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("fsck after fetch: %v", rep.Problems)
	}
	if !has(t, local.Objects, id) {
		t.Fatalf("snapshot %s not fetched", id.Short())
	}
	return nil
}

// TestStaticPacks fetches a published scrapbook whole and then an
// increment from a server that ignores range requests: each time the
// objects come in the one pack the publish wrote, not one request per
// object. (TestStaticPacksRanges has a server that serves ranges.)
func TestStaticPacks(t *testing.T) {
	ctx := context.Background()
	book, work, dir, first := publishedBook(t)
	if l := readPackList(t, dir); len(l.Packs) != 1 {
		t.Fatalf("packs.json lists %d packs after one publish, want 1", len(l.Packs))
	}
	url, log := serveNoRanges(t, dir)
	local := newLocal(t)
	if err := fetchStatic(t, local, url, first); err != nil {
		t.Fatal(err)
	}
	n := len(reachable(t, local.Objects, first))
	got := log.reset()
	want := map[string]int{"/" + transport.PackListFile: 1, "idx": 1, "pack": 1}
	if len(got) != len(want) || got["object"] != 0 {
		t.Errorf("fetch of %d objects made requests %v, want %v", n, got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("fetch of %d objects made %d requests for %s, want %d (all: %v)", n, got[k], k, v, got)
		}
	}

	// Publishing again adds a pack of the new objects only.
	patchFile(t, filepath.Join(work, "ram.bin"), 1<<20, 64<<10, 12)
	r2, err := book.Import(ctx, work, sbuml.SnapshotOptions{Branch: "main", Message: "second"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := book.Publish(ctx, dir, "http://example.invalid/", sbuml.TransferOptions{}); err != nil {
		t.Fatal(err)
	}
	l := readPackList(t, dir)
	if len(l.Packs) != 2 {
		t.Fatalf("packs.json lists %d packs after two publishes, want 2", len(l.Packs))
	}
	if l.Packs[1].Size >= l.Packs[0].Size/2 {
		t.Errorf("second pack has %d bytes, the first %d: it should hold only the change", l.Packs[1].Size, l.Packs[0].Size)
	}
	if err := fetchStatic(t, local, url, r2.ID); err != nil {
		t.Fatal(err)
	}
	got = log.reset()
	if got["object"] != 0 || got["pack"] != 1 || got["idx"] != 2 {
		t.Errorf("incremental fetch made requests %v, want 2 idx, 1 pack, no objects", got)
	}
	// Publishing with nothing new writes no pack.
	if _, err := book.Publish(ctx, dir, "http://example.invalid/", sbuml.TransferOptions{}); err != nil {
		t.Fatal(err)
	}
	if l := readPackList(t, dir); len(l.Packs) != 2 {
		t.Errorf("publish without new objects: packs.json lists %d packs, want 2", len(l.Packs))
	}
}

// corruptPacked flips a byte in the stored form of id in every pack of
// the published directory dir that holds it.
func corruptPacked(t testing.TB, dir string, id objects.ID) {
	t.Helper()
	corruptInPacks(t, filepath.Join(dir, transport.PackDir), id)
}

// corruptInPacks flips a byte in the stored form of id in every pack in
// packDir that holds it, and returns how many it damaged.
func corruptInPacks(t testing.TB, packDir string, id objects.ID) int {
	t.Helper()
	damaged := 0
	idxs, _ := filepath.Glob(filepath.Join(packDir, "*.idx"))
	for _, idxFile := range idxs {
		b, err := os.ReadFile(idxFile)
		if err != nil {
			t.Fatal(err)
		}
		entries, err := objects.DecodePackIndex(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.ID == id {
				flipByte(t, strings.TrimSuffix(idxFile, ".idx")+".pack", int64(e.Offset)+int64(e.Size)/2)
				damaged++
			}
		}
	}
	return damaged
}

func flipByte(t testing.TB, name string, off int64) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x40
	os.Chmod(name, 0o644) // packs are written read-only
	if err := os.WriteFile(name, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// withLooseCopies makes the published directory dir look as an older
// sbuml published it: every object of its packs also as a loose file,
// objects/ab/cdef….
func withLooseCopies(t *testing.T, dir string) {
	t.Helper()
	ctx := context.Background()
	src := newSourceStore(t, dir)
	loose := objects.NewLoose(osfs.New(dir), "objects", filepath.Join(dir, "objects"))
	err := src.List(ctx, func(id objects.ID, _ int64) error {
		stored, err := src.Get(ctx, id)
		if err != nil {
			return err
		}
		return loose.Put(ctx, id, stored)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestStaticPacksOnly: a publish stores each object once, in its packs,
// and a damaged or missing pack is a fetch that fails, naming what is
// damaged, and stores nothing wrong.
func TestStaticPacksOnly(t *testing.T) {
	_, _, dir, first := publishedBook(t)
	if _, err := os.Stat(filepath.Join(dir, "objects")); !os.IsNotExist(err) {
		t.Errorf("a publish wrote loose objects too (%v)", err)
	}
	var stored, packed int64
	for _, size := range reachable(t, newSourceStore(t, dir), first) {
		stored += size
	}
	for _, p := range readPackList(t, dir).Packs {
		packed += p.Size
	}
	if packed < stored || packed > stored+stored/10+4096 {
		t.Errorf("the packs hold %d bytes for %d bytes of objects: each object should be there once", packed, stored)
	}
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string, victim objects.ID)
		want   error
	}{
		{"object in pack", func(t *testing.T, dir string, victim objects.ID) { corruptPacked(t, dir, victim) }, objects.ErrCorrupt},
		{"pack missing", func(t *testing.T, dir string, _ objects.ID) {
			m, _ := filepath.Glob(filepath.Join(dir, transport.PackDir, "*.pack"))
			for _, p := range m {
				os.Remove(p)
			}
		}, objects.ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, dir, first := publishedBook(t)
			victim := largeObject(t, dir, first)
			tt.damage(t, dir, victim)
			url, _ := serve(t, dir)
			local := newLocal(t)
			r := transport.NewStatic(url, nil)
			defer r.Close()
			_, err := transport.Fetch(context.Background(), local.Objects, r, []objects.ID{first}, transport.Options{})
			mustIs(t, err, tt.want)
			if !strings.Contains(err.Error(), transport.PackDir+"/pack-") {
				t.Errorf("the error does not name the damaged pack: %v", err)
			}
			if has(t, local.Objects, first) {
				t.Error("the snapshot was stored over a damaged object")
			}
			checkClosed(t, local.Objects)
		})
	}
}

// TestStaticPacksDamaged fetches from directories published by an older
// sbuml, which hold every object as a loose file too, whose packs are
// damaged or missing: the objects are then downloaded one by one, and
// nothing wrong is stored.
func TestStaticPacksDamaged(t *testing.T) {
	onlyFile := func(t *testing.T, dir, pattern string) string {
		m, _ := filepath.Glob(filepath.Join(dir, transport.PackDir, pattern))
		if len(m) != 1 {
			t.Fatalf("%d files match %s", len(m), pattern)
		}
		return m[0]
	}
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string, victim objects.ID)
		// loose is how many objects are downloaded one by one: -1 all.
		loose int
		// ranges serves byte ranges; the other cases read whole packs.
		ranges bool
	}{
		{"object in pack", func(t *testing.T, dir string, victim objects.ID) { corruptPacked(t, dir, victim) }, 1, false},
		{"object in pack, ranges", func(t *testing.T, dir string, victim objects.ID) { corruptPacked(t, dir, victim) }, 1, true},
		{"pack magic", func(t *testing.T, dir string, _ objects.ID) { flipByte(t, onlyFile(t, dir, "*.pack"), 2) }, -1, false},
		{"index", func(t *testing.T, dir string, _ objects.ID) { flipByte(t, onlyFile(t, dir, "*.idx"), 20) }, -1, false},
		{"pack missing", func(t *testing.T, dir string, _ objects.ID) { os.Remove(onlyFile(t, dir, "*.pack")) }, -1, false},
		{"pack list missing", func(t *testing.T, dir string, _ objects.ID) {
			os.Remove(filepath.Join(dir, transport.PackListFile))
		}, -1, false},
		{"pack list invalid", func(t *testing.T, dir string, _ objects.ID) {
			os.WriteFile(filepath.Join(dir, transport.PackListFile), []byte("{\"format\": 99}"), 0o644)
		}, -1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, dir, first := publishedBook(t)
			withLooseCopies(t, dir)
			victim := largeObject(t, dir, first)
			tt.damage(t, dir, victim)
			url, log := serveNoRanges(t, dir)
			if tt.ranges {
				url, log = serve(t, dir)
			}
			local := newLocal(t)
			if err := fetchStatic(t, local, url, first); err != nil {
				t.Fatal(err)
			}
			n := len(reachable(t, local.Objects, first))
			want := tt.loose
			if want < 0 {
				want = n
			}
			if got := log.reset()["object"]; got != want {
				t.Errorf("%d objects downloaded one by one, want %d", got, want)
			}
		})
	}
}

// TestStaticPacksBadLoose damages an object both in its pack and as a
// loose file (published by an older sbuml): the fetch fails naming it and
// stores nothing wrong.
func TestStaticPacksBadLoose(t *testing.T) {
	_, _, dir, first := publishedBook(t)
	withLooseCopies(t, dir)
	var victim objects.ID
	for id, size := range reachable(t, newSourceStore(t, dir), first) {
		if size > 10000 {
			victim = id
			break
		}
	}
	corruptPacked(t, dir, victim)
	corruptLoose(t, dir, victim)
	url, _ := serve(t, dir)
	local := newLocal(t)
	r := transport.NewStatic(url, nil)
	defer r.Close()
	_, err := transport.Fetch(context.Background(), local.Objects, r, []objects.ID{first}, transport.Options{})
	mustIs(t, err, objects.ErrCorrupt)
	if !strings.Contains(err.Error(), victim.String()) {
		t.Errorf("error does not name the bad object %s: %v", victim.Short(), err)
	}
	if has(t, local.Objects, victim) || has(t, local.Objects, first) {
		t.Error("the bad object or the snapshot above it was stored")
	}
	checkClosed(t, local.Objects)
}

// newSourceStore opens the objects of the published directory dir.
func newSourceStore(t *testing.T, dir string) objects.Store {
	return openDir(t, dir).Store()
}

// TestStaticPacksRanges fetches one small branch out of a publish whose
// pack also holds a large one: from a server that serves byte ranges only
// about the small branch's bytes travel; from one that ignores them (as
// python3 -m http.server does) the pack comes whole, and the fetch is
// as good.
//
// It is long because it is one scenario: each step starts from what the
// steps before it left.
func TestStaticPacksRanges(t *testing.T) {
	ctx := context.Background()
	book, err := sbuml.Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	big, small := t.TempDir(), t.TempDir()
	writeFiles(t, big, 21, map[string]int{"big.bin": 12 << 20})
	writeFiles(t, small, 22, map[string]int{"a.bin": 300 << 10, "b.txt": 500})
	if _, err := book.Import(ctx, big, sbuml.SnapshotOptions{Branch: "big"}); err != nil {
		t.Fatal(err)
	}
	r, err := book.Import(ctx, small, sbuml.SnapshotOptions{Branch: "small"})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "pub")
	if _, err := book.Publish(ctx, dir, "http://example.invalid/", sbuml.TransferOptions{}); err != nil {
		t.Fatal(err)
	}
	l := readPackList(t, dir)
	if len(l.Packs) != 1 {
		t.Fatalf("packs.json lists %d packs, want 1", len(l.Packs))
	}
	pack := l.Packs[0].Size

	noRanges := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			req.Header.Del("Range")
			h.ServeHTTP(w, req)
		})
	}
	for _, tt := range []struct {
		name       string
		wrap       func(http.Handler) http.Handler
		minRecv    int64
		maxRecv    int64
		wantRanged bool
	}{
		{"ranges", func(h http.Handler) http.Handler { return h }, 300 << 10, 700 << 10, true},
		{"no ranges", noRanges, pack, pack + 64<<10, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			ranged := 0
			count := func(h http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
					if req.Header.Get("Range") != "" {
						mu.Lock()
						ranged++
						mu.Unlock()
					}
					h.ServeHTTP(w, req)
				})
			}
			srv := httptest.NewServer(tt.wrap(count(http.FileServer(http.Dir(dir)))))
			defer srv.Close()
			local := newLocal(t)
			remote := transport.NewStatic(srv.URL, nil)
			defer remote.Close()
			st, err := transport.Fetch(ctx, local.Objects, remote, []objects.ID{r.ID}, transport.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if st.BytesReceived < tt.minRecv || st.BytesReceived > tt.maxRecv {
				t.Errorf("received %d bytes for a %d-byte pack, want %d to %d", st.BytesReceived, pack, tt.minRecv, tt.maxRecv)
			}
			if tt.wantRanged && ranged == 0 {
				t.Errorf("no range requests")
			}
			if rep, err := local.Fsck(ctx); err != nil || !rep.OK() {
				t.Fatalf("fsck after fetch: %v %v", err, rep)
			}
			out := filepath.Join(t.TempDir(), "out")
			if _, err := local.Export(ctx, r.ID.String(), out); err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"a.bin", "b.txt"} {
				want, _ := os.ReadFile(filepath.Join(small, name))
				got, err := os.ReadFile(filepath.Join(out, name))
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s after fetch: %d bytes, want %d (%v)", name, len(got), len(want), err)
				}
			}
		})
	}
}

// largeObject returns an object over 10,000 bytes that first reaches in
// the published directory dir.
func largeObject(t *testing.T, dir string, first objects.ID) objects.ID {
	t.Helper()
	for id, size := range reachable(t, newSourceStore(t, dir), first) {
		if size > 10000 {
			return id
		}
	}
	t.Fatal("no object over 10,000 bytes")
	return objects.ID{}
}
