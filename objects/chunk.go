package objects

import "fmt"

// ChunkHeader is the two-byte header of a chunk's canonical encoding. A
// chunk's encoding is ChunkHeader followed by its raw bytes, so writers can
// build it in place by leaving two bytes of room in front of the data.
var ChunkHeader = header(KindChunk)

// EncodeChunk returns the canonical encoding of a chunk holding data.
func EncodeChunk(data []byte) []byte {
	enc := make([]byte, headerSize+len(data))
	copy(enc, ChunkHeader[:])
	copy(enc[headerSize:], data)
	return enc
}

// DecodeChunk returns the raw bytes of a chunk encoding. The result aliases enc.
func DecodeChunk(enc []byte) ([]byte, error) {
	k, err := KindOf(enc)
	if err == nil && k != KindChunk {
		err = fmt.Errorf("is a %s, not a chunk", k)
	}
	if err != nil {
		return nil, fmt.Errorf("decode chunk: %w", err)
	}
	return enc[headerSize:], nil
}
