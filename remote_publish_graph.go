package sbuml

import (
	"encoding/json"
	"path/filepath"

	"github.com/sbuml/sbuml/internal/atomicfile"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/transport"
	"github.com/sbuml/sbuml/ui/web"
)

// publishedGraph is graph.json in a published directory: what the graph
// view of its index.html shows (the fields of sbuml ui's /api/graph,
// without machines).
type publishedGraph struct {
	Format    int            `json:"format"`
	URL       string         `json:"url"`
	Head      string         `json:"head,omitempty"`
	Refs      []publishedRef `json:"refs"`
	Snapshots []LogEntry     `json:"snapshots"`
}

type publishedRef struct {
	Name string     `json:"name"`
	ID   objects.ID `json:"id"`
}

// writeGraphSite writes graph.json and the graph view's scripts
// (assets/, from package ui/web) into a published directory, for its
// index.html.
func (s *Scrapbook) writeGraphSite(dir, url string, published []transport.Ref, entries []LogEntry) error {
	g := publishedGraph{Format: 1, URL: url, Refs: make([]publishedRef, len(published)), Snapshots: entries}
	for i, r := range published {
		g.Refs[i] = publishedRef{Name: r.Name, ID: r.ID}
	}
	if head, err := s.Refs.Symbolic("HEAD"); err == nil {
		for _, r := range published {
			if r.Name == head {
				g.Head = head
			}
		}
	}
	b, err := json.Marshal(g)
	if err != nil {
		return err
	}
	if err := web.WriteGraphSite(dir); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, "graph.json"), append(b, '\n'), 0o644)
}
