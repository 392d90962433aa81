package transport

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"

	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
)

// ServerOptions configure a Server.
type ServerOptions struct {
	// Token is the bearer token that writing requests must carry. Empty
	// means no request may write: push is refused.
	Token string
	// ReadOnly refuses every write, whatever the token.
	ReadOnly bool
	// Log, if set, receives one line for each refused or failed request.
	Log func(format string, args ...any)
	// Limits bound what clients can make the server hold.
	Limits ServerLimits
}

// Server serves a Remote (normally the Dir of a scrapbook) over the smart
// HTTP protocol described in docs/transport.md. Anyone may read; writing
// needs the bearer token. It also answers GET /refs.json and GET
// /objects/ab/cdef…, so a static client can read from it too.
type Server struct {
	remote   Remote
	opts     ServerOptions
	limits   ServerLimits
	mux      *http.ServeMux
	requests chan struct{} // a place for each request handled
	mem      *memory
}

// NewServer returns a handler serving r.
func NewServer(r Remote, opts ServerOptions) *Server {
	l := opts.Limits.withDefaults()
	s := &Server{remote: r, opts: opts, limits: l, mux: http.NewServeMux(),
		requests: make(chan struct{}, l.MaxRequests), mem: newMemory(l.MaxMemory)}
	s.mux.HandleFunc("GET /{$}", s.root)
	s.mux.HandleFunc("GET /sbuml-protocol", s.protocol)
	s.mux.HandleFunc("GET /refs", s.refs)
	s.mux.HandleFunc("GET /"+RefListFile, s.refs)
	s.mux.HandleFunc("POST /objects/has", s.has)
	s.mux.HandleFunc("POST /objects/get", s.get)
	s.mux.HandleFunc("POST /objects/put", s.put)
	s.mux.HandleFunc("POST /refs/update", s.updateRef)
	s.mux.HandleFunc("GET /objects/{id}", s.object)
	s.mux.HandleFunc("GET /objects/{fan}/{rest}", s.object)
	return s
}

// ServeHTTP implements http.Handler. A request past MaxRequests is
// answered 503 at once; the others' bodies are paced (see ServerLimits).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	release, ok := s.admit(w, r)
	if !ok {
		return
	}
	defer release()
	pw := s.paced(w, r)
	defer pw.reset()
	w.Header().Set("Cache-Control", "no-cache")
	s.mux.ServeHTTP(pw, r)
}

// Error codes sent in the Sbuml-Error header of failed responses, so
// clients can tell failures apart without parsing messages.
const (
	codeBadRequest       = "bad-request"
	codeTooLarge         = "too-large"
	codeNotFound         = "not-found"
	codeConflict         = "conflict"
	codeInvalidName      = "invalid-name"
	codeCorrupt          = "corrupt"
	codeMissingReference = "missing-reference"
	codeNotSnapshot      = "not-snapshot"
	codeReadOnly         = "read-only"
	codeDenied           = "denied"
	codeNoSpace          = "no-space"
	codeBusy             = "busy"
	codeInternal         = "internal"
)

// errorHeader is the response header carrying an error code.
const errorHeader = "Sbuml-Error"

// fail answers with status and one line of text.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	msg = strings.ReplaceAll(msg, "\n", " ")
	if s.opts.Log != nil {
		s.opts.Log("%s %s from %s: %d %s", r.Method, r.URL.Path, r.RemoteAddr, status, msg)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set(errorHeader, code)
	w.WriteHeader(status)
	fmt.Fprintln(w, msg)
}

// failErr answers with the status and code that fit err.
func (s *Server) failErr(w http.ResponseWriter, r *http.Request, err error) {
	status, code := http.StatusInternalServerError, codeInternal
	var maxErr *http.MaxBytesError
	switch {
	case errors.As(err, &maxErr):
		status, code = http.StatusRequestEntityTooLarge, codeTooLarge
	case errors.Is(err, refs.ErrInvalidName):
		status, code = http.StatusBadRequest, codeInvalidName
	case errors.Is(err, refs.ErrConflict):
		status, code = http.StatusConflict, codeConflict
	case errors.Is(err, ErrMissingReference):
		status, code = http.StatusUnprocessableEntity, codeMissingReference
	case errors.Is(err, ErrNotSnapshot):
		status, code = http.StatusUnprocessableEntity, codeNotSnapshot
	case errors.Is(err, objects.ErrCorrupt):
		status, code = http.StatusUnprocessableEntity, codeCorrupt
	case errors.Is(err, objects.ErrNotFound):
		status, code = http.StatusNotFound, codeNotFound
	case errors.Is(err, ErrProtocol):
		status, code = http.StatusBadRequest, codeBadRequest
	case errors.Is(err, syscall.ENOSPC):
		status, code = http.StatusInsufficientStorage, codeNoSpace
	}
	s.fail(w, r, status, code, err.Error())
}

// mayWrite checks that a writing request is allowed, answering it if not.
func (s *Server) mayWrite(w http.ResponseWriter, r *http.Request) bool {
	switch {
	case s.opts.ReadOnly:
		s.fail(w, r, http.StatusForbidden, codeReadOnly, "this server is read-only (started with --read-only)")
		return false
	case s.opts.Token == "":
		s.fail(w, r, http.StatusForbidden, codeReadOnly, "push is disabled: the server was started without --token-file")
		return false
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.opts.Token)) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="sbuml"`)
		msg := "push needs the server's bearer token (give it with --token-file)"
		if ok {
			msg = "push refused: wrong bearer token"
		}
		s.fail(w, r, http.StatusUnauthorized, codeDenied, msg)
		return false
	}
	return true
}

// readBody reads a whole request body of at most limit bytes, holding
// twice that of the server's memory (see ServerLimits.MaxMemory) until
// the request ends: the body, and what it decodes into.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	release, err := s.mem.reserve(r.Context(), 2*limit)
	if err != nil {
		s.busy(w, r, err.Error())
		return nil, false
	}
	context.AfterFunc(r.Context(), release)
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			s.fail(w, r, http.StatusRequestEntityTooLarge, codeTooLarge, fmt.Sprintf("request body exceeds %d bytes", limit))
		} else {
			s.fail(w, r, http.StatusBadRequest, codeBadRequest, "read request body: "+err.Error())
		}
		return nil, false
	}
	return b, true
}

// readIDs reads a body of concatenated IDs, at most max of them.
func (s *Server) readIDs(w http.ResponseWriter, r *http.Request, max int) ([]objects.ID, bool) {
	b, ok := s.readBody(w, r, int64(max)*objects.IDSize)
	if !ok {
		return nil, false
	}
	ids, err := decodeIDs(b)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, codeBadRequest, err.Error())
		return nil, false
	}
	return ids, true
}

func (s *Server) root(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "sbuml scrapbook server (%s). Clone it with: sbuml clone URL DIR\n", ProtocolName)
}

func (s *Server) protocol(w http.ResponseWriter, r *http.Request) {
	info := ProtocolInfo{Protocol: ProtocolName, Push: "token"}
	if s.opts.ReadOnly || s.opts.Token == "" {
		info.Push = "disabled"
	}
	writeJSON(w, info)
}

func (s *Server) refs(w http.ResponseWriter, r *http.Request) {
	l, err := s.remote.ListRefs(r.Context())
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, l)
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(b, '\n'))
}

func (s *Server) has(w http.ResponseWriter, r *http.Request) {
	ids, ok := s.readIDs(w, r, MaxHasIDs)
	if !ok {
		return
	}
	has, err := s.remote.Has(r.Context(), ids)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(encodeBitmap(has))
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	ids, ok := s.readIDs(w, r, MaxGetIDs)
	if !ok {
		return
	}
	seen := make(map[objects.ID]bool, len(ids))
	for _, id := range ids {
		if seen[id] {
			s.fail(w, r, http.StatusBadRequest, codeBadRequest, fmt.Sprintf("object %s is asked for twice", id))
			return
		}
		seen[id] = true
	}
	has, err := s.remote.Has(r.Context(), ids)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	for i, ok := range has {
		if !ok {
			s.fail(w, r, http.StatusNotFound, codeNotFound, fmt.Sprintf("object %s not found", ids[i]))
			return
		}
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Trailer", errorTrailer)
	w.WriteHeader(http.StatusOK)
	hdr := make([]byte, recordHeaderSize)
	var writeErr error
	err = s.remote.Get(r.Context(), ids, func(id objects.ID, stored []byte) error {
		copy(hdr, id[:])
		binary.BigEndian.PutUint32(hdr[objects.IDSize:], uint32(len(stored)))
		if _, writeErr = w.Write(hdr); writeErr != nil {
			return writeErr
		}
		_, writeErr = w.Write(stored)
		return writeErr
	})
	if err != nil {
		if s.opts.Log != nil {
			s.opts.Log("POST /objects/get from %s: cut off: %v", r.RemoteAddr, err)
		}
		if writeErr != nil || r.Context().Err() != nil {
			// The client went away: cut the connection.
			panic(http.ErrAbortHandler)
		}
		// This scrapbook cannot read an object (damaged, or removed
		// meanwhile): the status is sent, so say why in the trailer,
		// without the server's paths (the log has them), and end the
		// response without the objects not sent.
		why := "unreadable"
		switch {
		case errors.Is(err, objects.ErrCorrupt):
			why = "damaged"
		case errors.Is(err, objects.ErrNotFound):
			why = "missing"
		}
		w.Header().Set(errorTrailer, why)
	}
}

// errorTrailer is the HTTP trailer in which the server says why a
// response to POST /objects/get lacks objects it promised: "damaged",
// "missing" or "unreadable".
const errorTrailer = "Sbuml-Error"

// putResult is the body of a successful POST /objects/put.
type putResult struct {
	Received int `json:"received"`
}

func (s *Server) put(w http.ResponseWriter, r *http.Request) {
	if !s.mayWrite(w, r) {
		return
	}
	body := http.MaxBytesReader(w, r.Body, MaxPutBytes+MaxPutObjects*recordHeaderSize)
	rr := recordReader{r: body, reserve: func(n int64) (func(), error) { return s.mem.reserve(r.Context(), n) }}
	n := 0
	for {
		id, stored, release, err := rr.next()
		if err == io.EOF {
			break
		}
		if errors.Is(err, errBusy) {
			s.sync(r)
			s.busy(w, r, fmt.Sprintf("%v; %d objects before it were stored", err, n))
			return
		}
		if err != nil {
			var maxErr *http.MaxBytesError
			if errors.As(err, &maxErr) {
				s.fail(w, r, http.StatusRequestEntityTooLarge, codeTooLarge, fmt.Sprintf("request body exceeds %d bytes; %d objects were stored", int64(MaxPutBytes), n))
				return
			}
			s.fail(w, r, http.StatusBadRequest, codeBadRequest, fmt.Sprintf("%v; %d objects before it were stored", err, n))
			return
		}
		if n == MaxPutObjects {
			release()
			s.fail(w, r, http.StatusRequestEntityTooLarge, codeTooLarge, fmt.Sprintf("more than %d objects in one request; the first %d were stored", MaxPutObjects, n))
			return
		}
		err = s.remote.Put(r.Context(), []Object{{ID: id, Stored: stored}})
		release()
		if err != nil {
			s.sync(r)
			s.failErr(w, r, err)
			return
		}
		n++
	}
	// Keep what arrived even if the push never finishes: a push that is
	// run again finds these objects present.
	if err := s.sync(r); err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, putResult{Received: n})
}

// sync makes the objects received durable, if the remote can.
func (s *Server) sync(r *http.Request) error {
	if sy, ok := s.remote.(interface{ Sync(context.Context) error }); ok {
		return sy.Sync(r.Context())
	}
	return nil
}

func (s *Server) updateRef(w http.ResponseWriter, r *http.Request) {
	if !s.mayWrite(w, r) {
		return
	}
	b, ok := s.readBody(w, r, maxRefUpdateSize)
	if !ok {
		return
	}
	var u refUpdate
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&u); err != nil {
		s.fail(w, r, http.StatusBadRequest, codeBadRequest, "ref update is not valid JSON: "+err.Error())
		return
	}
	if err := s.remote.UpdateRef(r.Context(), u.Name, u.Old, u.New); err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, u)
}

func (s *Server) object(w http.ResponseWriter, r *http.Request) {
	hex := r.PathValue("id")
	if fan := r.PathValue("fan"); fan != "" {
		hex = "-" // a wrong fan-out directory never names an object
		if len(fan) == 2 {
			hex = fan + r.PathValue("rest")
		}
	}
	id, err := objects.ParseID(hex)
	if err != nil || strings.ToLower(hex) != hex {
		s.fail(w, r, http.StatusNotFound, codeNotFound, fmt.Sprintf("no object at %s: not a lowercase object ID", r.URL.Path))
		return
	}
	if r.Method == http.MethodHead {
		has, err := s.remote.Has(r.Context(), []objects.ID{id})
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		if !has[0] {
			s.fail(w, r, http.StatusNotFound, codeNotFound, fmt.Sprintf("object %s not found", id))
		}
		return
	}
	var stored []byte
	err = s.remote.Get(r.Context(), []objects.ID{id}, func(_ objects.ID, b []byte) error {
		stored = b
		return nil
	})
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", fmt.Sprint(len(stored)))
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	w.Write(stored)
}
