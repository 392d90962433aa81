package objects_test

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"reflect"

	"github.com/sbuml/sbuml/objects"
)

// An encodable is any object with a canonical encoding.
type encodable interface{ Encode() []byte }

// chunk adapts raw chunk bytes to encodable.
type chunk []byte

func (c chunk) Encode() []byte { return objects.EncodeChunk(c) }

// decode decodes enc with the decoder for its kind.
func decode(enc []byte) (encodable, error) {
	k, err := objects.KindOf(enc)
	if err != nil {
		return nil, err
	}
	switch k {
	case objects.KindChunk:
		c, err := objects.DecodeChunk(enc)
		if err != nil {
			return nil, err
		}
		return chunk(c), nil
	case objects.KindIndex:
		if objects.VersionOf(enc) == objects.VersionPatch {
			return decodeAs(objects.DecodePatch(enc))
		}
		return decodeAs(objects.DecodeIndex(enc))
	case objects.KindStream:
		return decodeAs(objects.DecodeStream(enc))
	case objects.KindTree:
		return decodeAs(objects.DecodeTree(enc))
	case objects.KindSnapshot:
		return decodeAs(objects.DecodeSnapshot(enc))
	}
	return nil, fmt.Errorf("no decoder for %s", k)
}

// decodeAs turns a typed decoder result into an encodable without
// leaving a typed nil pointer in the interface.
func decodeAs[T encodable](v T, err error) (encodable, error) {
	if err != nil {
		return nil, err
	}
	return v, nil
}

// normalize returns a copy of v with the differences that the encoding
// deliberately does not keep removed: nil versus empty lists and maps,
// and the time zone and monotonic reading of snapshot times.
func normalize(v encodable) encodable {
	switch x := v.(type) {
	case chunk:
		if len(x) == 0 {
			return chunk(nil)
		}
	case *objects.Tree:
		c := *x
		if len(c.Entries) == 0 {
			c.Entries = nil
		}
		return &c
	case *objects.Snapshot:
		c := *x
		c.Time = c.Time.UTC()
		if len(c.Parents) == 0 {
			c.Parents = nil
		}
		if len(c.Labels) == 0 {
			c.Labels = nil
		}
		return &c
	}
	return v
}

// sameObject reports whether a and b are the same object once normalized.
func sameObject(a, b encodable) bool {
	return reflect.DeepEqual(normalize(a), normalize(b))
}

// idOf returns a fixed non-zero ID derived from s, for objects that
// reference others.
func idOf(s string) objects.ID { return objects.Sum([]byte(s)) }

// randomBytes returns n pseudo-random bytes that depend only on seed.
func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; i < n; i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], r.Uint64())
		copy(b[i:], w[:])
	}
	return b
}

// textBytes returns n bytes of word-like text that compresses the way
// logs and configuration files do, depending only on seed.
func textBytes(seed uint64, n int) []byte {
	words := []string{"the", "machine", "saved", "state", "of", "disk", "memory",
		"kernel:", "[ok]", "started", "service", "network", "0x7f3a", "user", "root",
		"error", "retry", "=", "config", "/var/log", "snapshot", "2026-11-22", "\n"}
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, 0, n+16)
	for len(b) < n {
		b = append(b, words[r.IntN(len(words))]...)
		b = append(b, ' ')
	}
	return b[:n]
}

// Builders for hand-made encodings.

func enc(k objects.Kind, parts ...[]byte) []byte {
	b := []byte{byte(k), objects.Version}
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// encPatch is enc for a patch node (an index object of version 2).
func encPatch(parts ...[]byte) []byte {
	return cat(raw(byte(objects.KindIndex), objects.VersionPatch), cat(parts...))
}

// encStream2 is enc for a stream of version 2 (with a patch node).
func encStream2(parts ...[]byte) []byte {
	return cat(raw(byte(objects.KindStream), objects.VersionPatch), cat(parts...))
}

func uv(v uint64) []byte { return binary.AppendUvarint(nil, v) }

func sv(v int64) []byte { return binary.AppendVarint(nil, v) }

func str(s string) []byte { return append(uv(uint64(len(s))), s...) }

func idb(id objects.ID) []byte { return id[:] }

func raw(b ...byte) []byte { return b }

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// treeEntry is the encoding of one tree entry.
func treeEntry(name string, kind byte, mode, size uint64, id objects.ID) []byte {
	return cat(str(name), raw(kind), uv(mode), uv(size), idb(id))
}
