package objects

import (
	"bytes"
	"context"
	"testing"

	"github.com/go-git/go-billy/v5/memfs"
)

// TestPackEncoder writes a pack with PackEncoder and reads it back as a
// scrapbook's pack and through DecodePackIndex.
func TestPackEncoder(t *testing.T) {
	ctx := context.Background()
	src := NewPacked(memfs.New(), "objects", "")
	want := putChunks(t, src, 50, 7)
	var buf bytes.Buffer
	enc, err := NewPackEncoder(&buf)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[ID][]byte{}
	for id := range want {
		b, err := src.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		stored[id] = b
		for range 2 { // the second Add is skipped
			if err := enc.Add(id, b); err != nil {
				t.Fatal(err)
			}
		}
	}
	if enc.Len() != len(want) || enc.Size() != uint64(buf.Len()) {
		t.Fatalf("Len %d Size %d, want %d objects and %d bytes", enc.Len(), enc.Size(), len(want), buf.Len())
	}
	if err := CheckPackHeader(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	idx, name := enc.Index()
	if name != "pack-"+Sum(idx).String() {
		t.Errorf("name %s is not the index checksum", name)
	}
	entries, err := DecodePackIndex(idx)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(want) {
		t.Fatalf("index lists %d objects, want %d", len(entries), len(want))
	}
	for i, e := range entries {
		if i > 0 && bytes.Compare(entries[i-1].ID[:], e.ID[:]) >= 0 {
			t.Errorf("index not sorted at %d", i)
		}
		got := buf.Bytes()[e.Offset : e.Offset+uint64(e.Size)]
		if !bytes.Equal(got, stored[e.ID]) || !e.Check(got) {
			t.Errorf("object %s: bytes at offset %d or CRC do not match", e.ID.Short(), e.Offset)
		}
	}

	fsys := memfs.New()
	if err := writeWhole(fsys, "objects/pack/"+name+".pack", buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := writeWhole(fsys, "objects/pack/"+name+".idx", idx); err != nil {
		t.Fatal(err)
	}
	dst := NewPacked(fsys, "objects", "")
	defer dst.Close()
	if errs := dst.CheckFiles(ctx); len(errs) > 0 {
		t.Fatalf("fsck of the written pack: %v", errs)
	}
	for id, enc := range want {
		got, err := Load(ctx, dst, id)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, enc) {
			t.Errorf("object %s read back wrong", id.Short())
		}
	}
}

func TestPackEncoderRefusals(t *testing.T) {
	for _, tt := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"short", []byte("SBPA")},
		{"index magic", []byte("SBPIDX\x00\x01")},
	} {
		if err := CheckPackHeader(tt.data); err == nil {
			t.Errorf("%s: CheckPackHeader accepted %q", tt.name, tt.data)
		}
	}
	if _, err := DecodePackIndex([]byte("SBPIDX\x00\x01\x00\x00\x00\x00" + string(make([]byte, 32)))); err == nil {
		t.Error("DecodePackIndex accepted a wrong checksum")
	}
}
