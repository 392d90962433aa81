// Package ui serves sbuml's web interface: a scrapbook's history as a
// graph, its machines, their serial consoles and screens, in a browser.
//
// A Server answers a JSON API under /api/ and the page and its scripts
// (package ui/web). Every action the page offers (boot, commit, checkout,
// rewind, freeze, continue, halt, tag, branch deletion, gc) calls the same
// function of package sbuml that the command line calls, on a scrapbook
// opened for that request, so the scrapbook ends in the same state either
// way. Actions are POST requests; GET requests change nothing.
//
// Listen on 127.0.0.1 (Listen refuses any other address without a
// token): without a token the server answers only requests addressed to a
// loopback name, which keeps other web sites out through DNS rebinding. With
// a token, every request and websocket must carry it. Either way, the
// Origin of websockets and state-changing requests must be the server's
// own. See docs/ui.md.
package ui

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/ui/web"
)

// DefaultAddr is where sbuml ui listens unless told otherwise.
const DefaultAddr = "127.0.0.1:8418"

// Options configure a Server.
type Options struct {
	// Token, if set, must come with every request: as the session cookie
	// the login form sets, or as "Authorization: Bearer TOKEN".
	Token string
	// Accel is the accelerator of the machines booted, checked out and
	// rewound from the page: kvm, tcg or auto (the default).
	Accel string
	// TLS says that the server speaks HTTPS: its cookie is then Secure
	// and pages must come from https origins.
	TLS bool
	// Log, if set, receives a line per refused request and failed action.
	Log func(format string, args ...any)
}

// Server is the web interface of one scrapbook. It is an http.Handler.
type Server struct {
	dir  string
	opts Options
	mux  *http.ServeMux

	ctx    context.Context // ends with Close: actions and consoles stop
	cancel context.CancelFunc

	changes  *changes
	watch    *watcher
	events   *machineEvents
	consoles *consoles

	graphMu sync.Mutex
	graph   *graphCache

	closeOnce sync.Once
}

// New returns a Server for the scrapbook in dir. It watches the
// scrapbook's refs and machines to tell pages of changes; Close stops it.
func New(dir string, opts Options) (*Server, error) {
	sb, err := sbuml.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("ui: %w", err)
	}
	dir = sb.Dir
	sb.Close()
	if opts.Accel == "" {
		opts.Accel = "auto"
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{dir: dir, opts: opts, ctx: ctx, cancel: cancel, changes: newChanges()}
	s.events = newMachineEvents(ctx, s.changes.bump)
	s.consoles = newConsoles()
	if s.watch, err = watchScrapbook(dir, s.changes.bump); err != nil {
		// Pages then learn of changes made elsewhere only when they
		// reload or act; say why, and serve anyway.
		s.logf("ui: not watching %s for changes: %v", dir, err)
	}
	s.routes()
	return s, nil
}

// Close stops watching the scrapbook, ends every console and display
// session and cancels actions under way.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		if s.watch != nil {
			s.watch.close()
		}
		s.consoles.closeAll()
		s.events.wait()
	})
	return nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.guard(s.mux).ServeHTTP(w, r)
}

func (s *Server) routes() {
	mux := http.NewServeMux()
	mux.Handle("/", readOnly(securityHeaders(http.FileServerFS(web.App()))))
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("GET /api/graph", s.getGraph)
	mux.HandleFunc("GET /api/snapshot", s.getSnapshot)
	mux.HandleFunc("GET /api/images", s.getImages)
	mux.HandleFunc("GET /api/events", s.getEvents)
	mux.HandleFunc("GET /api/console", s.console)
	mux.HandleFunc("GET /api/vnc", s.vnc)
	for name, act := range s.actions() {
		mux.HandleFunc("/api/"+name, postOnly(s.action(name, act)))
	}
	s.mux = mux
}

// readOnly refuses every method but GET and HEAD.
func readOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, r.URL.Path+" takes GET only")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// postOnly refuses every method but POST: actions change the scrapbook,
// and GET never does.
func postOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeError(w, http.StatusMethodNotAllowed, r.URL.Path+" changes the scrapbook: it takes POST only")
			return
		}
		h(w, r)
	}
}

// logf logs through Options.Log.
func (s *Server) logf(format string, args ...any) {
	if s.opts.Log != nil {
		s.opts.Log(format, args...)
	}
}

// ErrNeedToken is wrapped by the error of Listen for an address other
// than loopback without a token.
var ErrNeedToken = errors.New("an address other than loopback needs a token (--token-file)")

// Listen listens on addr for a Server with opts. It refuses an address
// that is not a loopback address (127.0.0.0/8, ::1) unless opts.Token is
// set: anyone who can reach the page can drive the machines.
func Listen(addr string, opts Options) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ui: %w", err)
	}
	if opts.Token == "" && !isLoopbackAddr(ln.Addr()) {
		ln.Close()
		return nil, fmt.Errorf("ui: listen on %s: %w", addr, ErrNeedToken)
	}
	return ln, nil
}

// isLoopbackAddr reports whether a listener's address is reachable from
// this host only.
func isLoopbackAddr(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}
