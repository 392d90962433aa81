package objects

import "fmt"

// Kind is the type of an object. Its numeric value is the first byte of
// every canonical encoding; never renumber.
type Kind uint8

// The object kinds.
const (
	KindChunk    Kind = 1 // raw bytes of one chunk
	KindIndex    Kind = 2 // one node of a stream's index tree
	KindStream   Kind = 3 // a large byte stream: length, chunking, index root
	KindTree     Kind = 4 // sorted named entries
	KindSnapshot Kind = 5 // a tree with parents, time, author and message
)

// Version is the encoding version written as the second byte of every
// canonical encoding that has only one form: chunks, trees, snapshots, and
// the first form of index nodes and streams. Decoders reject versions
// they do not know.
const Version = 1

// VersionPatch is the second encoding version of index nodes and streams:
// an index node of this version is a patch node (see Patch), and a stream
// of this version names one on top of its index tree.
const VersionPatch = 2

// maxVersion returns the newest encoding version of kind k.
func maxVersion(k Kind) byte {
	if k == KindIndex || k == KindStream {
		return VersionPatch
	}
	return Version
}

// headerSize is the size of the kind and version bytes that start every
// canonical encoding.
const headerSize = 2

func (k Kind) String() string {
	switch k {
	case KindChunk:
		return "chunk"
	case KindIndex:
		return "index"
	case KindStream:
		return "stream"
	case KindTree:
		return "tree"
	case KindSnapshot:
		return "snapshot"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// ParseKind is the inverse of Kind.String.
func ParseKind(s string) (Kind, error) {
	for k := KindChunk; k <= KindSnapshot; k++ {
		if k.String() == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("unknown object kind %q", s)
}

// header returns the two bytes that start an encoding of kind k.
func header(k Kind) [headerSize]byte { return [headerSize]byte{byte(k), Version} }

// VersionOf returns the encoding version of a canonical encoding whose
// header KindOf accepted.
func VersionOf(enc []byte) byte { return enc[1] }

// KindOf returns the kind of a canonical encoding after checking its header.
func KindOf(enc []byte) (Kind, error) {
	if len(enc) < headerSize {
		return 0, fmt.Errorf("object encoding too short (%d bytes)", len(enc))
	}
	k := Kind(enc[0])
	if k < KindChunk || k > KindSnapshot {
		return 0, fmt.Errorf("unknown object kind %d", enc[0])
	}
	if enc[1] < Version || enc[1] > maxVersion(k) {
		return 0, fmt.Errorf("%s object has unsupported encoding version %d", k, enc[1])
	}
	return k, nil
}
