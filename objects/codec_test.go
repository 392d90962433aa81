package objects_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sbuml/sbuml/objects"
)

// roundTripCases are valid objects of every kind, edge cases included.
// FuzzDecode uses their encodings as seeds.
//
// It is long because of its table, one case a line.
func roundTripCases() []struct {
	name string
	obj  encodable
} {
	allBytes := make([]byte, 256)
	for i := range allBytes {
		allBytes[i] = byte(i)
	}
	var manyEntries []objects.IndexEntry
	for i := range 1000 {
		manyEntries = append(manyEntries, objects.IndexEntry{ID: idOf("entry" + strconv.Itoa(i)), Length: uint64(i + 1)})
	}
	var manyParents []objects.ID
	for i := range objects.MaxParents {
		manyParents = append(manyParents, idOf("parent"+strconv.Itoa(i)))
	}
	bigTree := &objects.Tree{}
	for _, name := range []string{
		"a", "B", "a b", "a.b", ".hidden", "...", "-", "日本語", "e\u0301", "\u00e9",
		"tab\tname", "new\nline", "emoji 😀", strings.Repeat("x", 4096), "\x7f", "a\\b",
	} {
		bigTree.Entries = append(bigTree.Entries, objects.TreeEntry{Name: name, Kind: objects.EntryFile, Mode: 0o644, Size: uint64(len(name)), ID: idOf(name)})
	}
	bigTree.Sort()

	return []struct {
		name string
		obj  encodable
	}{
		{"chunk/empty", chunk(nil)},
		{"chunk/hello", chunk("hello")},
		{"chunk/all byte values", chunk(allBytes)},
		{"chunk/looks like zstd", chunk([]byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0})},
		{"chunk/random 100KiB", chunk(randomBytes(1, 100<<10))},

		{"index/one chunk", &objects.Index{Entries: []objects.IndexEntry{{ID: idOf("c"), Length: 1}}}},
		{"index/holes at level 0", &objects.Index{Entries: []objects.IndexEntry{
			{ID: objects.Zero, Length: 4096}, {ID: idOf("c1"), Length: 8192}, {ID: objects.Zero, Length: 1 << 40}}}},
		{"index/only a hole", &objects.Index{Entries: []objects.IndexEntry{{Length: 1 << 30}}}},
		{"index/max level", &objects.Index{Level: objects.MaxIndexLevel, Entries: []objects.IndexEntry{{ID: idOf("child"), Length: 1 << 50}}}},
		{"index/1000 entries", &objects.Index{Level: 1, Entries: manyEntries}},
		{"index/lengths sum to max", &objects.Index{Entries: []objects.IndexEntry{
			{ID: idOf("x"), Length: math.MaxUint64 - 1}, {ID: idOf("y"), Length: 1}}}},

		{"patch/one chunk", &objects.Patch{Entries: []objects.PatchEntry{{Offset: 4096, ID: idOf("c"), Length: 4096}}}},
		{"patch/chunks and holes", &objects.Patch{Entries: []objects.PatchEntry{
			{Offset: 0, ID: objects.Zero, Length: 8192}, {Offset: 8192, ID: idOf("c1"), Length: 4096},
			{Offset: 1 << 40, ID: objects.Zero, Length: 4096}, {Offset: 1<<40 + 8192, ID: objects.Zero, Length: 4096}}}},
		{"patch/at the end of the offsets", &objects.Patch{Entries: []objects.PatchEntry{{Offset: math.MaxUint64 - 1, ID: idOf("x"), Length: 1}}}},

		{"stream/empty", &objects.Stream{Chunking: objects.Chunking{Algorithm: 1, Min: 16 << 10, Avg: 64 << 10, Max: 256 << 10}, Fanout: 64}},
		{"stream/typical", &objects.Stream{Length: 1 << 33, Chunking: objects.Chunking{Algorithm: 1, Min: 16 << 10, Avg: 64 << 10, Max: 256 << 10}, Fanout: 64, Root: idOf("root")}},
		{"stream/extremes", &objects.Stream{Length: math.MaxUint64, Chunking: objects.Chunking{Algorithm: 255, Min: 0, Avg: math.MaxUint32, Max: math.MaxUint32}, Fanout: math.MaxUint32, Root: idOf("root")}},

		{"stream/patched", &objects.Stream{Length: 1 << 29, Chunking: objects.Chunking{Algorithm: 2, Min: 4096, Avg: 4096, Max: 4096}, Fanout: 32, Root: idOf("root"), Patch: idOf("patch")}},

		{"tree/empty", &objects.Tree{}},
		{"tree/one of each kind", &objects.Tree{Entries: []objects.TreeEntry{
			{Name: "disk.img", Kind: objects.EntryFile, Mode: 0o600, Size: 1 << 34, ID: idOf("disk")},
			{Name: "etc", Kind: objects.EntryDir, Mode: 0o755, Size: 12345, ID: idOf("etc")},
			{Name: "latest", Kind: objects.EntrySymlink, Mode: 0o777, Size: 8, ID: idOf("target")},
		}}},
		{"tree/mode extremes", &objects.Tree{Entries: []objects.TreeEntry{
			{Name: "all bits", Kind: objects.EntryFile, Mode: 0o7777, Size: math.MaxUint64, ID: idOf("1")},
			{Name: "no bits", Kind: objects.EntryFile, Mode: 0, Size: 0, ID: idOf("2")},
		}}},
		{"tree/unicode and odd names", bigTree},

		{"snapshot/minimal", &objects.Snapshot{Tree: idOf("tree"), Time: time.Unix(0, 0)}},
		{"snapshot/typical", &objects.Snapshot{
			Tree:    idOf("tree"),
			Parents: []objects.ID{idOf("p1")},
			Time:    time.Date(2026, 11, 22, 4, 24, 45, 123456789, time.UTC),
			Author:  "Ada <ada@example.org>",
			Host:    "builder-7",
			Message: "after boot\n\nkernel 6.1, 2 vCPUs",
			Labels:  map[string]string{"machine": "m1", "arch": "x86_64"},
		}},
		{"snapshot/max parents", &objects.Snapshot{Tree: idOf("tree"), Parents: manyParents, Time: time.Unix(1, 1)}},
		{"snapshot/unicode and zone", &objects.Snapshot{
			Tree:    idOf("tree"),
			Parents: []objects.ID{idOf("p1"), idOf("p2")},
			Time:    time.Date(2030, 1, 2, 3, 4, 5, 6, time.FixedZone("UTC+9", 9*3600)),
			Author:  "Zoë Ωmega",
			Host:    "ホスト",
			Message: "état sauvé ✓\x00 with a NUL",
			Labels:  map[string]string{"": "empty key", "ключ": "значение", "z": ""},
		}},
		{"snapshot/before 1970", &objects.Snapshot{Tree: idOf("tree"), Time: time.Date(1969, 7, 20, 20, 17, 40, 0, time.UTC)}},
		{"snapshot/time extremes", &objects.Snapshot{Tree: idOf("tree"), Time: time.Unix(0, math.MinInt64)}},
		{"snapshot/time max", &objects.Snapshot{Tree: idOf("tree"), Time: time.Unix(0, math.MaxInt64)}},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range roundTripCases() {
		t.Run(tc.name, func(t *testing.T) {
			enc := tc.obj.Encode()
			got, err := decode(enc)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !sameObject(got, tc.obj) {
				t.Errorf("decoded object differs:\n got %#v\nwant %#v", normalize(got), normalize(tc.obj))
			}
			if again := got.Encode(); !bytes.Equal(again, enc) {
				t.Errorf("re-encoding differs:\n got %x\nwant %x", again, enc)
			}
			k, refs, err := objects.References(enc)
			if err != nil {
				t.Fatalf("References: %v", err)
			}
			if want, _ := objects.KindOf(enc); k != want {
				t.Errorf("References kind %s, want %s", k, want)
			}
			for _, id := range refs {
				if id.IsZero() {
					t.Errorf("References returned the zero ID")
				}
			}
		})
	}
}

func TestEncodingIsDeterministic(t *testing.T) {
	// Labels live in a map; their order must not leak into the encoding.
	labels := map[string]string{}
	for i := range 50 {
		labels[string(rune('A'+i))] = strings.Repeat("v", i)
	}
	s := &objects.Snapshot{Tree: idOf("t"), Time: time.Unix(100, 0), Labels: labels}
	first := s.Encode()
	for range 20 {
		if !bytes.Equal(s.Encode(), first) {
			t.Fatal("snapshot encoding depends on map order")
		}
	}
	// A time is encoded as its instant, whatever its zone.
	local := *s
	local.Time = s.Time.In(time.FixedZone("X", -7*3600))
	if !bytes.Equal(local.Encode(), first) {
		t.Error("snapshot encoding depends on the time zone")
	}
}

func TestReferences(t *testing.T) {
	tree := &objects.Tree{Entries: []objects.TreeEntry{
		{Name: "a", Kind: objects.EntryFile, ID: idOf("a")},
		{Name: "b", Kind: objects.EntryDir, ID: idOf("b")},
	}}
	cases := []struct {
		name string
		obj  encodable
		kind objects.Kind
		want []objects.ID
	}{
		{"chunk", chunk("data"), objects.KindChunk, nil},
		{"index skips holes", &objects.Index{Entries: []objects.IndexEntry{
			{ID: idOf("c1"), Length: 1}, {Length: 2}, {ID: idOf("c2"), Length: 3}}},
			objects.KindIndex, []objects.ID{idOf("c1"), idOf("c2")}},
		{"empty stream", &objects.Stream{}, objects.KindStream, nil},
		{"stream", &objects.Stream{Length: 1, Root: idOf("r")}, objects.KindStream, []objects.ID{idOf("r")}},
		{"patched stream", &objects.Stream{Length: 1, Root: idOf("r"), Patch: idOf("p")}, objects.KindStream, []objects.ID{idOf("r"), idOf("p")}},
		{"patch skips holes", &objects.Patch{Entries: []objects.PatchEntry{
			{ID: idOf("c1"), Length: 1}, {Offset: 1, Length: 2}, {Offset: 9, ID: idOf("c2"), Length: 3}}},
			objects.KindIndex, []objects.ID{idOf("c1"), idOf("c2")}},
		{"empty tree", &objects.Tree{}, objects.KindTree, nil},
		{"tree", tree, objects.KindTree, []objects.ID{idOf("a"), idOf("b")}},
		{"snapshot", &objects.Snapshot{Tree: idOf("t"), Parents: []objects.ID{idOf("p1"), idOf("p2")}},
			objects.KindSnapshot, []objects.ID{idOf("t"), idOf("p1"), idOf("p2")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k, refs, err := objects.References(tc.obj.Encode())
			if err != nil {
				t.Fatal(err)
			}
			if k != tc.kind {
				t.Errorf("kind %s, want %s", k, tc.kind)
			}
			if len(refs) != len(tc.want) {
				t.Fatalf("references %v, want %v", refs, tc.want)
			}
			for i := range refs {
				if refs[i] != tc.want[i] {
					t.Errorf("reference %d is %s, want %s", i, refs[i].Short(), tc.want[i].Short())
				}
			}
		})
	}
}

func TestTreeHelpers(t *testing.T) {
	tr := &objects.Tree{Entries: []objects.TreeEntry{
		{Name: "zeta", Kind: objects.EntryFile, Size: 1, ID: idOf("z")},
		{Name: "Alpha", Kind: objects.EntryDir, Size: 10, ID: idOf("A")},
		{Name: "alpha", Kind: objects.EntrySymlink, Size: 100, ID: idOf("a")},
	}}
	tr.Sort()
	var names []string
	for _, e := range tr.Entries {
		names = append(names, e.Name)
	}
	if got := strings.Join(names, ","); got != "Alpha,alpha,zeta" {
		t.Errorf("sorted names %s, want bytewise order Alpha,alpha,zeta", got)
	}
	if _, err := objects.DecodeTree(tr.Encode()); err != nil {
		t.Errorf("sorted tree does not decode: %v", err)
	}
	if e := tr.Find("alpha"); e == nil || e.ID != idOf("a") {
		t.Errorf("Find(alpha) = %v", e)
	}
	for _, missing := range []string{"", "Zeta", "alph", "zz"} {
		if e := tr.Find(missing); e != nil {
			t.Errorf("Find(%q) = %v, want nil", missing, e)
		}
	}
	if got := tr.Size(); got != 111 {
		t.Errorf("Size = %d, want 111", got)
	}
	if e := (&objects.Tree{}).Find("a"); e != nil {
		t.Errorf("Find in empty tree = %v", e)
	}
}

func TestIndexLength(t *testing.T) {
	x := &objects.Index{Entries: []objects.IndexEntry{{ID: idOf("a"), Length: 5}, {Length: 7}}}
	if got := x.Length(); got != 12 {
		t.Errorf("Length = %d, want 12", got)
	}
	if !strings.Contains(x.String(), "12 bytes") {
		t.Errorf("String = %q", x.String())
	}
}

func TestValidEntryName(t *testing.T) {
	for _, ok := range []string{"a", "...", ".a", "a.", " ", "日本", strings.Repeat("n", 4096)} {
		if err := objects.ValidEntryName(ok); err != nil {
			t.Errorf("ValidEntryName(%.20q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "/", "a\x00", strings.Repeat("n", 4097)} {
		if err := objects.ValidEntryName(bad); err == nil {
			t.Errorf("ValidEntryName(%.20q) accepted", bad)
		}
	}
}

func TestKinds(t *testing.T) {
	for k := objects.KindChunk; k <= objects.KindSnapshot; k++ {
		p, err := objects.ParseKind(k.String())
		if err != nil || p != k {
			t.Errorf("ParseKind(%q) = %v, %v", k.String(), p, err)
		}
	}
	if _, err := objects.ParseKind("blob"); err == nil {
		t.Error("ParseKind(blob) accepted")
	}
	if s := objects.Kind(9).String(); s != "kind(9)" {
		t.Errorf("Kind(9).String() = %q", s)
	}
	for k, want := range map[objects.EntryKind]string{objects.EntryFile: "file", objects.EntryDir: "dir", objects.EntrySymlink: "symlink", 7: "entrykind(7)"} {
		if k.String() != want {
			t.Errorf("EntryKind(%d).String() = %q, want %q", uint8(k), k.String(), want)
		}
	}
	if objects.ChunkHeader != [2]byte{byte(objects.KindChunk), objects.Version} {
		t.Errorf("ChunkHeader = %x", objects.ChunkHeader)
	}
}

func TestKindOf(t *testing.T) {
	cases := []struct {
		enc     []byte
		want    objects.Kind
		wantErr string
	}{
		{nil, 0, "too short"},
		{raw(1), 0, "too short"},
		{raw(0, 1), 0, "unknown object kind 0"},
		{raw(6, 1), 0, "unknown object kind 6"},
		{raw(0x28, 0xb5, 0x2f, 0xfd), 0, "unknown object kind 40"},
		{raw(1, 0), 0, "unsupported encoding version 0"},
		{raw(4, 2), 0, "unsupported encoding version 2"},
		{raw(2, 3), 0, "unsupported encoding version 3"},
		{raw(3, 3), 0, "unsupported encoding version 3"},
		{raw(2, 2), objects.KindIndex, ""},
		{raw(3, 2), objects.KindStream, ""},
		{raw(1, 1), objects.KindChunk, ""},
		{raw(5, 1, 0xff), objects.KindSnapshot, ""},
	}
	for _, tc := range cases {
		k, err := objects.KindOf(tc.enc)
		switch {
		case tc.wantErr == "" && (err != nil || k != tc.want):
			t.Errorf("KindOf(%x) = %v, %v; want %v", tc.enc, k, err, tc.want)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("KindOf(%x) error %v, want %q", tc.enc, err, tc.wantErr)
		}
	}
}

// TestDecodeRejects feeds hand-made invalid encodings to References and to
// the decoder of their kind; each must fail with an error that says why.
//
// It is long because of its table, one case a line.
func TestDecodeRejects(t *testing.T) {
	a, b := idOf("a"), idOf("b")
	goodEntry := func(name string) []byte { return treeEntry(name, 1, 0o644, 1, idOf(name)) }
	cases := []struct {
		name    string
		enc     []byte
		wantErr string
	}{
		// Headers.
		{"empty", nil, "too short"},
		{"kind 0", enc(0, uv(0)), "unknown object kind"},
		{"kind 6", enc(6, uv(0)), "unknown object kind"},
		{"kind 255", enc(255, uv(0)), "unknown object kind"},
		{"version 0", raw(4, 0, 0), "version 0"},
		{"version 2", raw(4, 2, 0), "version 2"},
		{"version 255", raw(1, 255), "version 255"},

		// Trailing bytes.
		{"tree trailing", enc(objects.KindTree, uv(0), raw(0)), "1 trailing bytes"},
		{"index trailing", enc(objects.KindIndex, raw(0), uv(1), idb(a), uv(1), raw(0, 0)), "2 trailing bytes"},
		{"stream trailing", cat((&objects.Stream{}).Encode(), raw(7)), "trailing"},
		{"snapshot trailing", cat((&objects.Snapshot{Tree: a}).Encode(), raw(0)), "trailing"},

		// Non-canonical varints.
		{"tree count padded", enc(objects.KindTree, raw(0x80, 0x00)), "non-canonical varint"},
		{"tree count padded twice", enc(objects.KindTree, raw(0x81, 0x80, 0x00), goodEntry("a")), "non-canonical varint"},
		{"tree name length padded", enc(objects.KindTree, uv(1), raw(0x81, 0x00), []byte("a"), raw(1), uv(0), uv(0), idb(a)), "non-canonical varint"},
		{"tree mode padded", enc(objects.KindTree, uv(1), str("a"), raw(1), raw(0xa4, 0x83, 0x00), uv(0), idb(a)), "non-canonical varint"},
		{"index length padded", enc(objects.KindIndex, raw(0), uv(1), idb(a), raw(0x85, 0x00)), "non-canonical varint"},
		{"stream length padded", enc(objects.KindStream, raw(0x80, 0x80, 0x00), raw(1), uv(1), uv(2), uv(3), uv(4), idb(objects.Zero)), "non-canonical varint"},
		{"snapshot time padded", enc(objects.KindSnapshot, idb(a), uv(0), raw(0x80, 0x00), str(""), str(""), str(""), uv(0)), "non-canonical varint"},
		{"varint overflow", enc(objects.KindStream, raw(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02)), "bad or truncated varint"},
		{"varint of 11 bytes", enc(objects.KindTree, bytes.Repeat(raw(0x80), 10), raw(0)), "bad or truncated varint"},

		// Trees.
		{"tree unsorted", enc(objects.KindTree, uv(2), goodEntry("b"), goodEntry("a")), "not sorted"},
		{"tree duplicate", enc(objects.KindTree, uv(2), goodEntry("a"), goodEntry("a")), "not sorted or not unique"},
		{"tree case order", enc(objects.KindTree, uv(2), goodEntry("a"), goodEntry("B")), "not sorted"},
		{"tree name empty", enc(objects.KindTree, uv(2), treeEntry("", 1, 0, 0, a), goodEntry("a")), "invalid entry name"},
		{"tree name empty alone", enc(objects.KindTree, uv(1), treeEntry("", 1, 0, 0, a)), "exceeds the encoding"},
		{"tree name dot", enc(objects.KindTree, uv(1), treeEntry(".", 1, 0, 0, a)), "invalid entry name"},
		{"tree name dotdot", enc(objects.KindTree, uv(1), treeEntry("..", 1, 0, 0, a)), "invalid entry name"},
		{"tree name slash", enc(objects.KindTree, uv(1), treeEntry("a/b", 1, 0, 0, a)), "contains '/'"},
		{"tree name NUL", enc(objects.KindTree, uv(1), treeEntry("a\x00b", 1, 0, 0, a)), "NUL"},
		{"tree name too long", enc(objects.KindTree, uv(1), treeEntry(strings.Repeat("n", 4097), 1, 0, 0, a)), "4097 bytes long"},
		{"tree name invalid UTF-8", enc(objects.KindTree, uv(1), treeEntry("a\xffb", 1, 0, 0, a)), "not valid UTF-8"},
		{"tree name surrogate", enc(objects.KindTree, uv(1), treeEntry("\xed\xa0\x80", 1, 0, 0, a)), "not valid UTF-8"},
		{"tree kind 0", enc(objects.KindTree, uv(1), treeEntry("a", 0, 0, 0, a)), "unknown kind 0"},
		{"tree kind 4", enc(objects.KindTree, uv(1), treeEntry("a", 4, 0, 0, a)), "unknown kind 4"},
		{"tree kind 255", enc(objects.KindTree, uv(1), treeEntry("a", 255, 0, 0, a)), "unknown kind 255"},
		{"tree mode 010000", enc(objects.KindTree, uv(1), treeEntry("a", 1, 0o10000, 0, a)), "outside 07777"},
		{"tree mode with type bits", enc(objects.KindTree, uv(1), treeEntry("a", 1, 0o100644, 0, a)), "outside 07777"},
		{"tree mode beyond 32 bits", enc(objects.KindTree, uv(1), treeEntry("a", 1, 1<<32, 0, a)), "does not fit 32 bits"},
		{"tree zero ID", enc(objects.KindTree, uv(1), treeEntry("a", 1, 0o644, 0, objects.Zero)), "zero ID"},
		{"tree count beyond data", enc(objects.KindTree, uv(2), goodEntry("a")), "exceeds the encoding"},
		{"tree huge count", enc(objects.KindTree, uv(1<<62), goodEntry("a")), "exceeds the encoding"},
		{"tree huge name length", enc(objects.KindTree, uv(1), uv(1<<62), bytes.Repeat([]byte("n"), 40)), "truncated"},

		// Index nodes.
		{"index empty", enc(objects.KindIndex, raw(0), uv(0)), "empty index node"},
		{"index length 0", enc(objects.KindIndex, raw(0), uv(1), idb(a), uv(0)), "length 0"},
		{"index second length 0", enc(objects.KindIndex, raw(1), uv(2), idb(a), uv(1), idb(b), uv(0)), "entry 1 has length 0"},
		{"index hole above level 0", enc(objects.KindIndex, raw(1), uv(1), idb(objects.Zero), uv(5)), "hole above level 0"},
		{"index level too high", enc(objects.KindIndex, raw(objects.MaxIndexLevel+1), uv(1), idb(a), uv(5)), "exceeds"},
		{"index level 255", enc(objects.KindIndex, raw(255), uv(1), idb(a), uv(5)), "level 255"},
		{"index lengths overflow", enc(objects.KindIndex, raw(0), uv(2), idb(a), uv(math.MaxUint64), idb(b), uv(1)), "overflows"},
		{"index count beyond data", enc(objects.KindIndex, raw(0), uv(2), idb(a), uv(1)), "exceeds the encoding"},
		{"index huge count", enc(objects.KindIndex, raw(0), uv(1<<40), idb(a), uv(1)), "exceeds the encoding"},

		// Streams.
		{"stream length without root", enc(objects.KindStream, uv(10), raw(1), uv(1), uv(2), uv(3), uv(4), idb(objects.Zero)), "with root"},
		{"stream root without length", enc(objects.KindStream, uv(0), raw(1), uv(1), uv(2), uv(3), uv(4), idb(a)), "length 0 with root"},
		{"stream min beyond 32 bits", enc(objects.KindStream, uv(1), raw(1), uv(1<<32), uv(2), uv(3), uv(4), idb(a)), "does not fit 32 bits"},
		{"stream fanout beyond 32 bits", enc(objects.KindStream, uv(1), raw(1), uv(1), uv(2), uv(3), uv(math.MaxUint64), idb(a)), "does not fit 32 bits"},
		{"stream short root", enc(objects.KindStream, uv(1), raw(1), uv(1), uv(2), uv(3), uv(4), a[:31]), "truncated"},

		{"stream 2 without patch", encStream2(uv(1), raw(2), uv(1), uv(2), uv(3), uv(4), idb(a), idb(objects.Zero)), "without a patch node and a root"},
		{"stream 2 short patch", encStream2(uv(1), raw(2), uv(1), uv(2), uv(3), uv(4), idb(a), a[:31]), "truncated"},
		{"stream 2 empty with patch", encStream2(uv(0), raw(2), uv(1), uv(2), uv(3), uv(4), idb(objects.Zero), idb(b)), "without a patch node and a root"},

		// Patch nodes.
		{"patch empty", encPatch(uv(0)), "empty patch node"},
		{"patch length 0", encPatch(uv(1), uv(0), idb(a), uv(0)), "length 0"},
		{"patch hole after hole", encPatch(uv(2), uv(0), idb(objects.Zero), uv(4), uv(0), idb(objects.Zero), uv(4)), "a hole right after a hole"},
		{"patch offset overflow", encPatch(uv(2), uv(math.MaxUint64), idb(a), uv(1), uv(1), idb(b), uv(1)), "overflows"},
		{"patch count beyond data", encPatch(uv(2), uv(0), idb(a), uv(1)), "exceeds the encoding"},
		{"patch gap padded", encPatch(uv(1), raw(0x80, 0x00), idb(a), uv(1)), "non-canonical varint"},

		// Snapshots.
		{"snapshot zero tree", enc(objects.KindSnapshot, idb(objects.Zero), uv(0), sv(0), str(""), str(""), str(""), uv(0)), "zero tree"},
		{"snapshot zero parent", enc(objects.KindSnapshot, idb(a), uv(2), idb(b), idb(objects.Zero), sv(0), str(""), str(""), str(""), uv(0)), "zero"},
		{"snapshot too many parents", (&objects.Snapshot{Tree: a, Parents: make65(a)}).Encode(), "65 parents exceed 64"},
		{"snapshot huge parent count", enc(objects.KindSnapshot, idb(a), uv(1<<40), idb(b), sv(0), str(""), str(""), str(""), uv(0)), "exceeds the encoding"},
		{"snapshot labels unsorted", enc(objects.KindSnapshot, idb(a), uv(0), sv(0), str(""), str(""), str(""), uv(2), str("b"), str("1"), str("a"), str("2")), "not sorted"},
		{"snapshot labels duplicate", enc(objects.KindSnapshot, idb(a), uv(0), sv(0), str(""), str(""), str(""), uv(2), str("k"), str("1"), str("k"), str("2")), "not sorted or not unique"},
		{"snapshot labels empty key twice", enc(objects.KindSnapshot, idb(a), uv(0), sv(0), str(""), str(""), str(""), uv(2), str(""), str("1"), str(""), str("2")), "not unique"},
		{"snapshot huge label count", enc(objects.KindSnapshot, idb(a), uv(0), sv(0), str(""), str(""), str(""), uv(1<<62), str("k"), str("v")), "exceeds the encoding"},
		{"snapshot huge message length", enc(objects.KindSnapshot, idb(a), uv(0), sv(0), str(""), str(""), uv(1<<62), str("msg")), "truncated"},
		{"snapshot author invalid UTF-8", enc(objects.KindSnapshot, idb(a), uv(0), sv(0), str("\xc3"), str(""), str(""), uv(0)), "not valid UTF-8"},
		{"snapshot host invalid UTF-8", enc(objects.KindSnapshot, idb(a), uv(0), sv(0), str(""), str("\x80"), str(""), uv(0)), "not valid UTF-8"},
		{"snapshot message invalid UTF-8", enc(objects.KindSnapshot, idb(a), uv(0), sv(0), str(""), str(""), str("ok \xfe"), uv(0)), "not valid UTF-8"},
		{"snapshot label key invalid UTF-8", enc(objects.KindSnapshot, idb(a), uv(0), sv(0), str(""), str(""), str(""), uv(1), str("\xff"), str("v")), "not valid UTF-8"},
		{"snapshot label value invalid UTF-8", enc(objects.KindSnapshot, idb(a), uv(0), sv(0), str(""), str(""), str(""), uv(1), str("k"), str("\xc0\xaf")), "not valid UTF-8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := objects.References(tc.enc)
			if err == nil {
				t.Fatalf("References accepted %x", tc.enc)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not mention %q", err, tc.wantErr)
			}
			if strings.Count(err.Error(), "\n") != 0 {
				t.Errorf("error spans lines: %q", err)
			}
			if obj, err := decode(tc.enc); err == nil {
				t.Errorf("decoder accepted %x as %#v", tc.enc, obj)
			}
		})
	}
}

func make65(id objects.ID) []objects.ID {
	p := make([]objects.ID, objects.MaxParents+1)
	for i := range p {
		p[i] = id
	}
	return p
}

// TestDecodeErrorsNameTheKind checks the "decode <kind>:" prefix that
// tells a reader which decoder refused what.
func TestDecodeErrorsNameTheKind(t *testing.T) {
	_, err := objects.DecodeTree(enc(objects.KindTree, uv(1)))
	if err == nil || !strings.HasPrefix(err.Error(), "decode tree: ") {
		t.Errorf("DecodeTree error %v, want prefix %q", err, "decode tree: ")
	}
	_, err = objects.DecodeSnapshot((&objects.Tree{}).Encode())
	if err == nil || err.Error() != "decode snapshot: is a tree, not a snapshot" {
		t.Errorf("DecodeSnapshot of a tree: %v", err)
	}
}

// TestIndexVersionsNeedTheirDecoder checks that a patch node is not taken
// for a node of an index tree, nor the other way round.
func TestIndexVersionsNeedTheirDecoder(t *testing.T) {
	node := (&objects.Index{Entries: []objects.IndexEntry{{ID: idOf("c"), Length: 1}}}).Encode()
	patch := (&objects.Patch{Entries: []objects.PatchEntry{{ID: idOf("c"), Length: 1}}}).Encode()
	if _, err := objects.DecodePatch(node); err == nil || !strings.Contains(err.Error(), "not a patch node") {
		t.Errorf("DecodePatch of an index node: %v", err)
	}
	if _, err := objects.DecodeIndex(patch); err == nil || !strings.Contains(err.Error(), "is a patch node") {
		t.Errorf("DecodeIndex of a patch node: %v", err)
	}
}

// TestDecodeWrongKind hands every valid encoding to every other decoder.
func TestDecodeWrongKind(t *testing.T) {
	decoders := map[objects.Kind]func([]byte) error{
		objects.KindChunk: func(b []byte) error { _, err := objects.DecodeChunk(b); return err },
		objects.KindIndex: func(b []byte) error {
			if objects.VersionOf(b) == objects.VersionPatch {
				_, err := objects.DecodePatch(b)
				return err
			}
			_, err := objects.DecodeIndex(b)
			return err
		},
		objects.KindStream:   func(b []byte) error { _, err := objects.DecodeStream(b); return err },
		objects.KindTree:     func(b []byte) error { _, err := objects.DecodeTree(b); return err },
		objects.KindSnapshot: func(b []byte) error { _, err := objects.DecodeSnapshot(b); return err },
	}
	for _, tc := range roundTripCases() {
		e := tc.obj.Encode()
		own, _ := objects.KindOf(e)
		for k, dec := range decoders {
			err := dec(e)
			if k == own && err != nil {
				t.Errorf("%s: own decoder: %v", tc.name, err)
			}
			if k != own && (err == nil || !strings.Contains(err.Error(), "is a "+own.String()+", not a")) {
				t.Errorf("%s: %s decoder gave %v", tc.name, k, err)
			}
		}
	}
}

// TestDecodeTruncated cuts every valid encoding at every length: a chunk
// is valid at any length from its header on; every other kind must refuse
// every strict prefix.
func TestDecodeTruncated(t *testing.T) {
	for _, tc := range roundTripCases() {
		e := tc.obj.Encode()
		if len(e) > 8192 {
			e = e[:8192] // still a valid chunk; others are short
		}
		kind, _ := objects.KindOf(e)
		for n := range len(e) {
			_, _, err := objects.References(e[:n])
			if kind == objects.KindChunk && n >= 2 {
				if err != nil {
					t.Errorf("%s: chunk prefix of %d bytes refused: %v", tc.name, n, err)
				}
				continue
			}
			if err == nil {
				t.Errorf("%s: prefix of %d of %d bytes accepted", tc.name, n, len(e))
			}
		}
	}
}

// TestDecodeTrailingBytes appends to every valid encoding.
func TestDecodeTrailingBytes(t *testing.T) {
	for _, tc := range roundTripCases() {
		e := tc.obj.Encode()
		kind, _ := objects.KindOf(e)
		if kind == objects.KindChunk {
			continue // a chunk is its header and any bytes
		}
		for _, extra := range [][]byte{{0}, {1}, {0xff, 0xff}, idb(idOf("x"))} {
			_, _, err := objects.References(cat(e, extra))
			if err == nil || !strings.Contains(err.Error(), "trailing bytes") {
				t.Errorf("%s + %x: %v, want trailing bytes error", tc.name, extra, err)
			}
		}
	}
}

// TestDecodeHostileCountsAllocateLittle checks that a count or length
// field claiming far more than the encoding holds is refused before
// anything of that size is allocated.
func TestDecodeHostileCountsAllocateLittle(t *testing.T) {
	a := idOf("a")
	hostile := map[string][]byte{
		"tree count":      enc(objects.KindTree, uv(1<<62), treeEntry("a", 1, 0, 0, a)),
		"tree count 1M":   enc(objects.KindTree, uv(1<<20), treeEntry("a", 1, 0, 0, a)),
		"tree name":       enc(objects.KindTree, uv(1), uv(1<<40), treeEntry("a", 1, 0, 0, a)),
		"index count":     enc(objects.KindIndex, raw(0), uv(1<<62), idb(a), uv(1)),
		"index count 1M":  enc(objects.KindIndex, raw(0), uv(1<<20), idb(a), uv(1)),
		"parents count":   enc(objects.KindSnapshot, idb(a), uv(1<<62), idb(a)),
		"labels count":    enc(objects.KindSnapshot, idb(a), uv(0), sv(0), str(""), str(""), str(""), uv(1<<62), str("k"), str("v")),
		"labels count 1M": enc(objects.KindSnapshot, idb(a), uv(0), sv(0), str(""), str(""), str(""), uv(1<<20), str("k"), str("v")),
		"message length":  enc(objects.KindSnapshot, idb(a), uv(0), sv(0), str(""), str(""), uv(1<<40)),
	}
	for name, e := range hostile {
		bytesBefore := totalAlloc()
		const runs = 10
		for range runs {
			if _, _, err := objects.References(e); err == nil {
				t.Fatalf("%s: accepted", name)
			}
		}
		if per := (totalAlloc() - bytesBefore) / runs; per > 16<<10 {
			t.Errorf("%s: refusing a %d-byte encoding allocated %d bytes", name, len(e), per)
		}
	}
}

// TestDecodeErrorIsNotCorrupt documents that decoders report plain
// errors; wrapping them in ErrCorrupt is the loaders' job.
func TestDecodeErrorIsNotCorrupt(t *testing.T) {
	_, err := objects.DecodeTree(raw(4, 1, 1))
	if err == nil || errors.Is(err, objects.ErrCorrupt) {
		t.Errorf("DecodeTree: %v", err)
	}
}

// totalAlloc returns the bytes allocated on the heap so far.
func totalAlloc() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

// TestMethodReferences checks that each type's References method names
// the same IDs, in the same order, as objects.References.
func TestMethodReferences(t *testing.T) {
	for _, tc := range roundTripCases() {
		r, ok := tc.obj.(interface{ References() []objects.ID })
		if !ok {
			continue // chunks reference nothing
		}
		_, want, err := objects.References(tc.obj.Encode())
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := r.References(); !slices.Equal(got, want) && (len(got) != 0 || len(want) != 0) {
			t.Errorf("%s: References method gives %d IDs, objects.References %d", tc.name, len(got), len(want))
		}
	}
}

func TestStrings(t *testing.T) {
	root := idOf("root")
	cases := []struct {
		obj  fmt.Stringer
		want string
	}{
		{&objects.Stream{Length: 42, Root: root}, "stream 42 bytes, root " + root.Short()},
		{&objects.Index{Level: 2, Entries: []objects.IndexEntry{{ID: root, Length: 7}}}, "index level 2, 1 entries, 7 bytes"},
		{&objects.Snapshot{Tree: root, Parents: []objects.ID{root}, Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
			"snapshot tree " + root.Short() + ", 1 parents, 2026-01-02T03:04:05Z"},
	}
	for _, tc := range cases {
		if got := tc.obj.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}

// TestVersion1Fixtures decodes an index node and a stream in the first
// encoding version, as written before patch nodes existed: readers keep
// reading them, and writers still write them for every stream without a
// patch.
func TestVersion1Fixtures(t *testing.T) {
	node := mustHex(t, "02010002cad079fe52fa1b162e375eceec083d82ed9ac94420e05934969828aee17024918020"+
		"00000000000000000000000000000000000000000000000000000000000000008040")
	st := mustHex(t, "030180600280208020802020e52336326a9bebefc32a4a34d795d8fcedcbd625c0b129973f288982b3054975")
	x, err := objects.DecodeIndex(node)
	if err != nil {
		t.Fatal(err)
	}
	want := &objects.Index{Entries: []objects.IndexEntry{{ID: idOf("page"), Length: 4096}, {Length: 8192}}}
	if !sameObject(x, want) || !bytes.Equal(want.Encode(), node) {
		t.Errorf("index node decoded as %v", x)
	}
	s, err := objects.DecodeStream(st)
	if err != nil {
		t.Fatal(err)
	}
	if s.Length != 12288 || s.Root != objects.Sum(node) || !s.Patch.IsZero() || s.Fanout != 32 || s.Chunking.Avg != 4096 {
		t.Errorf("stream decoded as %+v", s)
	}
	if !bytes.Equal(s.Encode(), st) {
		t.Errorf("stream re-encoded as %x", s.Encode())
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
