package objects

import (
	"fmt"
	"slices"
	"sort"
	"time"
)

// A Snapshot records one saved state: a tree, the snapshots it descends
// from, and who made it, when and why. Like a git commit.
type Snapshot struct {
	Tree    ID        `json:"tree"`
	Parents []ID      `json:"parents"`
	Time    time.Time `json:"time"`
	Author  string    `json:"author"`
	Host    string    `json:"host"`
	Message string    `json:"message"`
	// Labels are free-form key/value annotations (for example
	// "machine": "m1"). Keys are unique.
	Labels map[string]string `json:"labels"`
}

// MaxParents bounds the number of parents a snapshot may name.
const MaxParents = 64

// Encode returns the canonical encoding:
//
//	tree [32]byte, count uvarint, count × parent [32]byte,
//	time varint (Unix nanoseconds, UTC), author string, host string,
//	message string, count uvarint, count × (key string, value string)
//
// with labels sorted by key.
func (s *Snapshot) Encode() []byte {
	e := newEncoder(KindSnapshot, IDSize*(1+len(s.Parents))+len(s.Message)+64)
	e.id(s.Tree)
	e.uvarint(uint64(len(s.Parents)))
	for _, p := range s.Parents {
		e.id(p)
	}
	e.varint(s.Time.UnixNano())
	e.string(s.Author)
	e.string(s.Host)
	e.string(s.Message)
	keys := s.labelKeys()
	e.uvarint(uint64(len(keys)))
	for _, k := range keys {
		e.string(k)
		e.string(s.Labels[k])
	}
	return e.buf
}

func (s *Snapshot) labelKeys() []string {
	keys := make([]string, 0, len(s.Labels))
	for k := range s.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// DecodeSnapshot parses and checks a snapshot encoding.
func DecodeSnapshot(enc []byte) (*Snapshot, error) {
	d := newDecoder(KindSnapshot, enc)
	s := &Snapshot{Tree: d.id()}
	n := d.count(IDSize)
	if n > MaxParents {
		d.fail("%d parents exceed %d", n, MaxParents)
	}
	for i := 0; i < n && d.err == nil; i++ {
		s.Parents = append(s.Parents, d.id())
	}
	if slices.Contains(s.Parents, Zero) {
		d.fail("zero parent")
	}
	s.Time = time.Unix(0, d.varint()).UTC()
	s.Author = d.string()
	s.Host = d.string()
	s.Message = d.string()
	nl := d.count(2)
	prev := ""
	for i := 0; i < nl && d.err == nil; i++ {
		k, v := d.string(), d.string()
		if d.err != nil {
			break
		}
		if i > 0 && k <= prev {
			d.fail("label %q: keys not sorted or not unique", k)
		}
		prev = k
		if s.Labels == nil {
			s.Labels = make(map[string]string, nl)
		}
		s.Labels[k] = v
	}
	if d.err == nil && s.Tree.IsZero() {
		d.fail("zero tree")
	}
	if err := d.finish(); err != nil {
		return nil, err
	}
	return s, nil
}

// References returns the tree and the parents.
func (s *Snapshot) References() []ID {
	return append([]ID{s.Tree}, s.Parents...)
}

func (s *Snapshot) String() string {
	return fmt.Sprintf("snapshot tree %s, %d parents, %s", s.Tree.Short(), len(s.Parents), s.Time.Format(time.RFC3339))
}
