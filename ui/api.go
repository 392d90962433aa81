package ui

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
)

// actionTimeout bounds one action of the page. Actions do not end when the
// page that asked goes away (a reload must not kill a checkout half way),
// only when they are done, time out, or the server closes.
const actionTimeout = 15 * time.Minute

// Graph is what GET /api/graph answers: the history `sbuml log --all`
// lists, the refs, and the machines `sbuml ps` lists. The graph of a
// published scrapbook (graph.json) has the same fields but machines.
type Graph struct {
	Scrapbook string `json:"scrapbook"`
	// Head is the ref HEAD names ("refs/heads/main"), or a snapshot ID
	// when HEAD is detached; empty when there is no HEAD.
	Head      string              `json:"head"`
	Refs      []Ref               `json:"refs"`
	Snapshots []sbuml.LogEntry    `json:"snapshots"`
	Machines  []sbuml.MachineInfo `json:"machines"`
	// Generation counts the changes the server has seen; the events
	// stream (GET /api/events) announces each new one.
	Generation uint64 `json:"generation"`
}

// Ref is a ref and the snapshot it names.
type Ref struct {
	Name string     `json:"name"`
	ID   objects.ID `json:"id"`
}

// graphCache keeps the history part of a Graph until the scrapbook
// changes: listing the history of thousands of snapshots reads them all.
type graphCache struct {
	generation uint64
	head       string
	refs       []Ref
	snapshots  []sbuml.LogEntry
}

// openScrapbook opens the scrapbook for one request, as one sbuml command
// does: pack files that a gc removes are not kept open by the server.
func (s *Server) openScrapbook() (*sbuml.Scrapbook, error) {
	return sbuml.Open(s.dir)
}

func (s *Server) getGraph(w http.ResponseWriter, r *http.Request) {
	sb, err := s.openScrapbook()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	defer sb.Close()
	g, err := s.history(r.Context(), sb)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if g.Machines, err = sb.Machines(r.Context()); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.events.watch(g.Machines)
	writeJSON(w, g)
}

// history returns a Graph without its machines, from the cache when the
// scrapbook has not changed since it was filled.
func (s *Server) history(ctx context.Context, sb *sbuml.Scrapbook) (*Graph, error) {
	gen := s.changes.current()
	s.graphMu.Lock()
	defer s.graphMu.Unlock()
	if c := s.graph; c == nil || c.generation != gen {
		entries, err := sb.Log(ctx, sbuml.LogOptions{All: true})
		if err != nil {
			return nil, err
		}
		all, err := sb.Refs.List("refs/")
		if err != nil {
			return nil, err
		}
		c = &graphCache{generation: gen, refs: make([]Ref, len(all)), snapshots: entries}
		for i, ref := range all {
			c.refs[i] = Ref{Name: ref.Name, ID: ref.ID}
		}
		if c.head, err = sb.Refs.Symbolic("HEAD"); err != nil {
			if id, err := sb.Refs.Get("HEAD"); err == nil {
				c.head = id.String()
			}
		}
		s.graph = c
	}
	c := s.graph
	return &Graph{Scrapbook: s.dir, Head: c.head, Refs: c.refs, Snapshots: c.snapshots, Generation: c.generation}, nil
}

func (s *Server) getSnapshot(w http.ResponseWriter, r *http.Request) {
	rev := r.URL.Query().Get("rev")
	if rev == "" {
		writeError(w, http.StatusBadRequest, "show: name a snapshot with ?rev=")
		return
	}
	sb, err := s.openScrapbook()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	defer sb.Close()
	res, err := sb.Show(r.Context(), rev)
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, res)
}

func (s *Server) getImages(w http.ResponseWriter, r *http.Request) {
	sb, err := s.openScrapbook()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	defer sb.Close()
	imgs, err := sb.Images(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, imgs)
}

// actionFunc carries out one action on the scrapbook, with the request's
// JSON body decoded by decode.
type actionFunc func(ctx context.Context, sb *sbuml.Scrapbook, decode func(any) error) (any, error)

// action serves POST /api/NAME: it decodes the body, runs act on a
// scrapbook opened for it and answers its result as JSON.
func (s *Server) action(name string, act actionFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
		if err != nil {
			writeError(w, http.StatusRequestEntityTooLarge, name+": "+err.Error())
			return
		}
		decode := func(v any) error {
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(v); err != nil {
				return badRequest{fmt.Errorf("%s: bad request body: %w", name, err)}
			}
			return nil
		}
		sb, err := s.openScrapbook()
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		defer sb.Close()
		ctx, cancel := context.WithTimeout(s.ctx, actionTimeout)
		defer cancel()
		res, err := act(ctx, sb, decode)
		s.changes.bump()
		if err != nil {
			s.logf("%s: %v", name, err)
			writeError(w, statusOf(err), err.Error())
			return
		}
		writeJSON(w, res)
	}
}

// badRequest marks an error in what the page sent.
type badRequest struct{ error }

func (e badRequest) Unwrap() error { return e.error }

// statusOf chooses the HTTP status for an error of the porcelain.
func statusOf(err error) int {
	var bad badRequest
	switch {
	case errors.As(err, &bad):
		return http.StatusBadRequest
	case errors.Is(err, refs.ErrNotFound), errors.Is(err, objects.ErrNotFound), errors.Is(err, os.ErrNotExist):
		return http.StatusNotFound
	case errors.Is(err, refs.ErrConflict):
		return http.StatusConflict
	}
	return http.StatusUnprocessableEntity
}

// apiError is the body of every failed API request.
type apiError struct {
	Error string `json:"error"`
}

// writeError answers a failed request with its status and one line.
func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(apiError{Error: strings.Join(strings.Fields(msg), " ")})
}

// writeJSON answers v.
func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	json.NewEncoder(w).Encode(v)
}
