package objects_test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	luke "lukechampine.com/blake3"

	"github.com/sbuml/sbuml/objects"
)

var update = flag.Bool("update", false, "rewrite testdata/objects/digests.golden from the current encodings")

const goldenPath = "../testdata/objects/digests.golden"

// pinnedObjects are fixed objects whose encodings and IDs are recorded in
// goldenPath. If this test fails, the encoding or the hash changed, and
// every existing scrapbook would stop verifying: that needs a new Version,
// not an -update.
func pinnedObjects() []struct {
	name string
	obj  encodable
} {
	hello := objects.Sum(objects.EncodeChunk([]byte("hello")))
	emptyTree := objects.Sum((&objects.Tree{}).Encode())
	index := &objects.Index{Entries: []objects.IndexEntry{{ID: hello, Length: 5}, {Length: 4091}}}
	stream := &objects.Stream{Length: 4096, Chunking: objects.Chunking{Algorithm: 1, Min: 16 << 10, Avg: 64 << 10, Max: 256 << 10}, Fanout: 64, Root: objects.Sum(index.Encode())}
	tree := &objects.Tree{Entries: []objects.TreeEntry{
		{Name: "disk.img", Kind: objects.EntryFile, Mode: 0o644, Size: 4096, ID: objects.Sum(stream.Encode())},
		{Name: "empty", Kind: objects.EntryDir, Mode: 0o755, Size: 0, ID: emptyTree},
		{Name: "greeting", Kind: objects.EntrySymlink, Mode: 0o777, Size: 5, ID: hello},
	}}
	snap := &objects.Snapshot{
		Tree:    objects.Sum(tree.Encode()),
		Time:    time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC),
		Author:  "sbuml test",
		Host:    "golden",
		Message: "pinned snapshot",
		Labels:  map[string]string{"machine": "m1"},
	}
	child := &objects.Snapshot{
		Tree:    emptyTree,
		Parents: []objects.ID{objects.Sum(snap.Encode())},
		Time:    time.Date(2026, 1, 2, 3, 4, 6, 0, time.UTC),
		Author:  "sbuml test",
		Message: "child",
	}
	return []struct {
		name string
		obj  encodable
	}{
		{"chunk-empty", chunk(nil)},
		{"chunk-hello", chunk("hello")},
		{"index-hello-hole", index},
		{"stream-4096", stream},
		{"tree-empty", &objects.Tree{}},
		{"tree-small", tree},
		{"snapshot-small", snap},
		{"snapshot-child", child},
	}
}

// TestPinnedDigests compares encodings and IDs of fixed objects with
// testdata/objects/digests.golden. Each line is: name, ID, encoding in hex.
func TestPinnedDigests(t *testing.T) {
	var got bytes.Buffer
	fmt.Fprintln(&got, "# name id canonical-encoding-hex; see TestPinnedDigests. Never edit: a change breaks every scrapbook.")
	for _, p := range pinnedObjects() {
		e := p.obj.Encode()
		fmt.Fprintf(&got, "%s %s %x\n", p.name, objects.Sum(e), e)
	}
	if *update {
		if err := os.MkdirAll(filepath.Dir(goldenPath), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenPath, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatalf("%v (run go test -run TestPinnedDigests -update once to create it)", err)
	}
	wantLines := strings.Split(strings.TrimSpace(string(want)), "\n")
	gotLines := strings.Split(strings.TrimSpace(got.String()), "\n")
	if len(wantLines) != len(gotLines) {
		t.Fatalf("%s has %d lines, the test makes %d", goldenPath, len(wantLines), len(gotLines))
	}
	for i := range wantLines {
		if wantLines[i] != gotLines[i] {
			t.Errorf("%s line %d:\n got %s\nwant %s", goldenPath, i+1, gotLines[i], wantLines[i])
		}
	}
}

// TestPinnedDigestsIndependently checks the golden IDs with the other
// BLAKE3 implementation, straight from the recorded encodings, so the
// golden file pins the hash function and not just this package's use of it.
func TestPinnedDigestsIndependently(t *testing.T) {
	f, err := os.Open(goldenPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	n := 0
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 3 {
			t.Fatalf("bad golden line %q", line)
		}
		e, err := hex.DecodeString(fields[2])
		if err != nil {
			t.Fatalf("%s: %v", fields[0], err)
		}
		if sum := luke.Sum256(e); hex.EncodeToString(sum[:]) != fields[1] {
			t.Errorf("%s: lukechampine BLAKE3 gives %x, golden says %s", fields[0], sum, fields[1])
		}
		if _, _, err := objects.References(e); err != nil {
			t.Errorf("%s: golden encoding no longer decodes: %v", fields[0], err)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no golden objects")
	}
}

// TestSumKnownAnswer pins BLAKE3 itself with the published test vector
// for the empty input.
func TestSumKnownAnswer(t *testing.T) {
	const empty = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
	if got := objects.Sum(nil).String(); got != empty {
		t.Errorf("Sum(nil) = %s, want %s", got, empty)
	}
}

// TestSumMatchesLukechampine proves that github.com/zeebo/blake3 (used by
// Sum) and lukechampine.com/blake3 give identical digests, on every
// length around the block (64) and chunk (1024) boundaries and on random
// lengths up to a few MiB, where both switch to their SIMD paths.
func TestSumMatchesLukechampine(t *testing.T) {
	data := randomBytes(42, 5<<20)
	var lengths []int
	for n := 0; n <= 2*1024+130; n++ {
		lengths = append(lengths, n)
	}
	for _, n := range []int{4 << 10, 8<<10 - 1, 8 << 10, 8<<10 + 1, 16 << 10, 64 << 10, 64<<10 + 1, 1 << 20, 5 << 20} {
		lengths = append(lengths, n)
	}
	r := randomBytes(7, 8*64)
	for i := 0; i < len(r); i += 8 {
		lengths = append(lengths, int(uint32(r[i])|uint32(r[i+1])<<8|uint32(r[i+2])<<16)%(5<<20))
	}
	for _, n := range lengths {
		in := data[len(data)-n:] // unaligned starts, too
		if got, want := objects.Sum(in), objects.ID(luke.Sum256(in)); got != want {
			t.Fatalf("length %d: objects.Sum %s, lukechampine %s", n, got, want)
		}
	}
}

func TestParseID(t *testing.T) {
	id := idOf("x")
	s := id.String()
	if len(s) != 64 || strings.ToLower(s) != s {
		t.Fatalf("String() = %q", s)
	}
	if id.Short() != s[:12] {
		t.Errorf("Short() = %q", id.Short())
	}
	for _, in := range []string{s, strings.ToUpper(s)} {
		p, err := objects.ParseID(in)
		if err != nil || p != id {
			t.Errorf("ParseID(%q) = %s, %v", in, p, err)
		}
	}
	for _, bad := range []string{"", s[:63], s + "0", s[:63] + "g", " " + s[1:], s[:10]} {
		if _, err := objects.ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) accepted", bad)
		} else if !strings.Contains(err.Error(), "invalid object id") {
			t.Errorf("ParseID(%q): %v", bad, err)
		}
	}
	if !objects.Zero.IsZero() || id.IsZero() {
		t.Error("IsZero wrong")
	}
}

func TestIDText(t *testing.T) {
	in := map[string]objects.ID{"a": idOf("a"), "zero": objects.Zero}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"`+idOf("a").String()+`"`)) {
		t.Errorf("JSON %s does not hold the hex ID", b)
	}
	var out map[string]objects.ID
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out["a"] != in["a"] || out["zero"] != objects.Zero {
		t.Errorf("JSON round trip gave %v", out)
	}
	var id objects.ID
	if err := id.UnmarshalText([]byte("nothex")); err == nil {
		t.Error("UnmarshalText accepted nothex")
	}
}
