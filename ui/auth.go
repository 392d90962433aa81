package ui

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// cookieName is the session cookie that the login form sets when the
// server wants a token.
const cookieName = "sbuml-ui"

// guard lets a request through only if it may be answered: addressed to a
// loopback name (no token) or carrying the token, and, for websockets and
// anything but GET and HEAD, coming from a page of this server.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.opts.Token == "" && !isLoopbackHost(r.Host) {
			s.refuse(w, r, http.StatusMisdirectedRequest, "this sbuml ui answers only to http://127.0.0.1 or http://localhost: it runs without a token")
			return
		}
		if (r.Method != http.MethodGet && r.Method != http.MethodHead) || isWebsocket(r) {
			if err := s.checkOrigin(r); err != nil {
				s.refuse(w, r, http.StatusForbidden, err.Error())
				return
			}
		}
		if s.opts.Token != "" && !s.authorized(r) && !(r.Method == http.MethodPost && r.URL.Path == "/login") {
			if r.Method == http.MethodGet && !strings.HasPrefix(r.URL.Path, "/api/") {
				s.loginPage(w, http.StatusUnauthorized, "")
				return
			}
			s.refuse(w, r, http.StatusUnauthorized, "this sbuml ui wants its token: log in on its page, or send Authorization: Bearer TOKEN")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refuse answers a request that the guard turned away.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, status int, msg string) {
	s.logf("refused %s %s from %s: %s", r.Method, r.URL.Path, r.RemoteAddr, msg)
	writeError(w, status, msg)
}

// isLoopbackHost reports whether a Host header names this host by a
// loopback name or address.
func isLoopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func isWebsocket(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// checkOrigin refuses a request that a page of another site made. A
// browser always names the page's origin on websockets and on requests
// other than GET; clients that are not browsers send no Origin.
func (s *Server) checkOrigin(r *http.Request) error {
	if site := r.Header.Get("Sec-Fetch-Site"); site == "cross-site" || site == "same-site" {
		return fmt.Errorf("refused: the request comes from a page of another site (%s)", site)
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	scheme := "http"
	if s.opts.TLS {
		scheme = "https"
	}
	if err != nil || u.Scheme != scheme || !strings.EqualFold(u.Host, r.Host) {
		return fmt.Errorf("refused: the request comes from a page of %s, not of this server (%s://%s)", origin, scheme, r.Host)
	}
	return nil
}

// session is the cookie value that stands for the token: a keyed hash of
// it, so that the token itself is not stored in the browser.
func (s *Server) session() string {
	m := hmac.New(sha256.New, []byte(s.opts.Token))
	m.Write([]byte("sbuml ui session"))
	return hex.EncodeToString(m.Sum(nil))
}

// authorized reports whether r carries the token.
func (s *Server) authorized(r *http.Request) bool {
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return subtle.ConstantTimeCompare([]byte(tok), []byte(s.opts.Token)) == 1
	}
	c, err := r.Cookie(cookieName)
	return err == nil && subtle.ConstantTimeCompare([]byte(c.Value), []byte(s.session())) == 1
}

// login checks the token typed into the login form and sets the session
// cookie.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if s.opts.Token == "" {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	tok := r.PostFormValue("token")
	if subtle.ConstantTimeCompare([]byte(tok), []byte(s.opts.Token)) != 1 {
		s.logf("refused login from %s: wrong token", r.RemoteAddr)
		s.loginPage(w, http.StatusUnauthorized, "Wrong token.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: s.session(), Path: "/", HttpOnly: true,
		Secure: s.opts.TLS, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// loginPage asks for the token.
func (s *Server) loginPage(w http.ResponseWriter, status int, problem string) {
	setSecurityHeaders(w.Header())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	loginTemplate.Execute(w, problem)
}

var loginTemplate = template.Must(template.New("login").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sbuml ui: log in</title>
<style>body{font:16px sans-serif;margin:4em auto;max-width:30em}.problem{color:#b00020}</style></head>
<body><form method="post" action="/login">
<h1>sbuml ui</h1>
<p>This scrapbook's page wants the token from the file given to <code>sbuml ui --token-file</code>.</p>
{{if .}}<p class="problem" role="alert">{{.}}</p>{{end}}
<label>Token <input type="password" name="token" autofocus autocomplete="current-password"></label>
<button type="submit">Log in</button>
</form></body></html>
`))

// securityHeaders adds setSecurityHeaders to a handler's answers.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setSecurityHeaders(w.Header())
		h.ServeHTTP(w, r)
	})
}

// setSecurityHeaders keeps the page from loading anything but its own
// files and from being framed by another site. xterm.js adds style
// elements, hence 'unsafe-inline' for styles only.
func setSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}
