package objects_test

import (
	"bytes"
	"testing"

	"github.com/sbuml/sbuml/objects"
)

// FuzzDecode feeds arbitrary bytes to References. It must never panic,
// and whatever decodes must be canonical: re-encoding the decoded object
// gives back the very same bytes, so no two encodings share an object.
//
//	go test ./objects -run '^$' -fuzz FuzzDecode -fuzztime 1m
func FuzzDecode(f *testing.F) {
	for _, tc := range roundTripCases() {
		e := tc.obj.Encode()
		if len(e) < 4096 {
			f.Add(e)
		}
	}
	for _, p := range pinnedObjects() {
		f.Add(p.obj.Encode())
	}
	a := idOf("a")
	f.Add(enc(objects.KindTree, uv(2), treeEntry("b", 1, 0, 0, a), treeEntry("a", 1, 0, 0, a)))
	f.Add(enc(objects.KindIndex, raw(1), uv(1), idb(objects.Zero), uv(5)))
	f.Add(enc(objects.KindSnapshot, idb(a), uv(0), sv(-1), str(""), str(""), str(""), uv(2), str("k"), str("1"), str("k"), str("2")))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		kind, refs, err := objects.References(data)
		obj, derr := decode(data)
		if (err == nil) != (derr == nil) {
			t.Fatalf("References error %v, but decoder error %v", err, derr)
		}
		if err != nil {
			return
		}
		if k, _ := objects.KindOf(data); k != kind {
			t.Fatalf("References kind %s, KindOf %s", kind, k)
		}
		if again := obj.Encode(); !bytes.Equal(again, data) {
			t.Fatalf("decoded %x as %#v, which encodes as %x", data, obj, again)
		}
		for _, id := range refs {
			if id.IsZero() {
				t.Fatalf("%x: References returned the zero ID", data)
			}
		}
	})
}

// FuzzApplyDelta feeds ApplyDelta hostile deltas and bases: it must
// return an encoding that hashes to the ID, or an error, never panic or
// allocate beyond the base's length.
func FuzzApplyDelta(f *testing.F) {
	base := objects.EncodeChunk([]byte("the previous version of a page, ...."))
	cur := objects.EncodeChunk([]byte("the next version of the page, ......"))
	delta := objects.EncodeDelta(objects.Sum(base), base, cur, nil)
	f.Add(delta, base)
	f.Add(delta, cur)
	f.Add(delta[:len(delta)-1], base)
	f.Add(delta, base[:len(base)-1])
	f.Add([]byte{0xde}, base)
	f.Add(append(delta[:objects.DeltaHeaderSize:objects.DeltaHeaderSize], objects.Compress(make([]byte, 1<<20))...), base)
	id := objects.Sum(cur)
	f.Fuzz(func(t *testing.T, delta, base []byte) {
		enc, err := objects.ApplyDelta(id, delta, base)
		if err != nil {
			return
		}
		if objects.Sum(enc) != id || len(enc) != len(base) {
			t.Fatalf("ApplyDelta returned %d bytes that are not the object", len(enc))
		}
	})
}
