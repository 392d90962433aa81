package ui

import (
	"net/http"
)

// vnc serves GET /api/vnc?machine=NAME: a websocket carrying the
// machine's screen (RFB) for noVNC, through the same handler as `sbuml vnc
// --web`, which also refuses pages of another origin.
func (s *Server) vnc(w http.ResponseWriter, r *http.Request) {
	sb, err := s.openScrapbook()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	h, err := sb.VNCWebHandler(r.URL.Query().Get("machine"))
	sb.Close()
	if err != nil {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/websockify"
	h.ServeHTTP(w, r2)
}
