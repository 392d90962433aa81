package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/objects"
)

func TestDrawGraph(t *testing.T) {
	id := func(name string) objects.ID { return objects.Sum([]byte(name)) }
	// snap makes an entry named name whose parents are the named ones.
	snap := func(name string, parents ...string) sbuml.LogEntry {
		e := sbuml.LogEntry{ID: id(name), Message: name}
		for _, p := range parents {
			e.Parents = append(e.Parents, id(p))
		}
		return e
	}
	tests := []struct {
		name    string
		entries []sbuml.LogEntry
		want    []string
	}{
		{
			name:    "one line of history",
			entries: []sbuml.LogEntry{snap("c", "b"), snap("b", "a"), snap("a")},
			want:    []string{"* c", "* b", "* a"},
		},
		{
			name:    "two branches from one snapshot",
			entries: []sbuml.LogEntry{snap("b2", "b1"), snap("a2", "base"), snap("b1", "base"), snap("base")},
			want:    []string{"* b2", "| * a2", "* | b1", "|/", "* base"},
		},
		{
			name:    "three branches from one snapshot",
			entries: []sbuml.LogEntry{snap("x", "base"), snap("y", "base"), snap("z", "base"), snap("base")},
			want:    []string{"* x", "| * y", "| | * z", "|/ /", "* base"},
		},
		{
			name:    "an unrelated history after one that ended",
			entries: []sbuml.LogEntry{snap("m2", "m1"), snap("m1"), snap("image")},
			want:    []string{"* m2", "* m1", "", "* image"},
		},
		{
			name:    "an unrelated history beside a running one",
			entries: []sbuml.LogEntry{snap("m2", "m1"), snap("image"), snap("m1")},
			want:    []string{"* m2", "| * image", "* m1"},
		},
		{
			name:    "a merge",
			entries: []sbuml.LogEntry{snap("m", "a", "b"), snap("a", "base"), snap("b", "base"), snap("base")},
			want:    []string{"* m", "* | a", "| * b", "|/", "* base"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lines := make([]string, len(tt.entries))
			for i, e := range tt.entries {
				lines[i] = e.Message
			}
			got := drawGraph(tt.entries, lines)
			for i := range got {
				got[i] = strings.TrimRight(got[i], " ")
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}
