package ui_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/ui"
)

const token = "s3cret-token"

// TestListenNeedsToken: an address other than loopback is refused without
// a token, and taken with one.
func TestListenNeedsToken(t *testing.T) {
	for _, tc := range []struct {
		addr  string
		token string
		ok    bool
	}{
		{"127.0.0.1:0", "", true},
		{"localhost:0", "", true},
		{"0.0.0.0:0", "", false},
		{":0", "", false},
		{"0.0.0.0:0", token, true},
	} {
		ln, err := ui.Listen(tc.addr, ui.Options{Token: tc.token})
		if ln != nil {
			ln.Close()
		}
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ui.ErrNeedToken)) {
			t.Errorf("Listen(%q, token %q) = %v, want ok %v", tc.addr, tc.token, err, tc.ok)
		}
	}
}

// request is one request of the security tests and the status it must get.
type request struct {
	name    string
	method  string
	path    string
	body    string
	headers map[string]string
	status  int
}

// TestRefusals sends requests that must be refused, to a server on all
// addresses with a token (reached through 127.0.0.1) and to one on
// loopback without, and checks that the scrapbook has not changed: its
// refs and history are as before. Requests that must pass are checked too.
func TestRefusals(t *testing.T) {
	s := importSnapshots(t, 2)
	remote := serve(t, s.Dir, "0.0.0.0:0", ui.Options{Token: token})
	local := serve(t, s.Dir, "", ui.Options{})
	before := state(t, s)

	tag := `{"name":"evil","snapshot":"main"}`
	bearer := map[string]string{"Authorization": "Bearer " + token}
	with := func(extra map[string]string) map[string]string {
		h := map[string]string{"Authorization": "Bearer " + token}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	for _, tc := range []struct {
		base string
		request
	}{
		{remote, request{"page without token", "GET", "/", "", nil, http.StatusUnauthorized}},
		{remote, request{"script without token", "GET", "/app.js", "", nil, http.StatusUnauthorized}},
		{remote, request{"graph without token", "GET", "/api/graph", "", nil, http.StatusUnauthorized}},
		{remote, request{"events without token", "GET", "/api/events", "", nil, http.StatusUnauthorized}},
		{remote, request{"tag without token", "POST", "/api/tag", tag, nil, http.StatusUnauthorized}},
		{remote, request{"tag with a wrong token", "POST", "/api/tag", tag, map[string]string{"Authorization": "Bearer nope"}, http.StatusUnauthorized}},
		{remote, request{"tag from another site", "POST", "/api/tag", tag, with(map[string]string{"Origin": "http://evil.example"}), http.StatusForbidden}},
		{remote, request{"tag from another site by fetch metadata", "POST", "/api/tag", tag, with(map[string]string{"Sec-Fetch-Site": "cross-site"}), http.StatusForbidden}},
		{remote, request{"tag by GET", "GET", "/api/tag?name=evil&snapshot=main", "", bearer, http.StatusMethodNotAllowed}},
		{remote, request{"gc from another site", "POST", "/api/gc", `{}`, with(map[string]string{"Origin": "http://evil.example"}), http.StatusForbidden}},
		{remote, request{"login with a wrong token", "POST", "/login", "token=nope", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, http.StatusUnauthorized}},
		{local, request{"another host name (DNS rebinding)", "GET", "/api/graph", "", map[string]string{"Host": "evil.example"}, http.StatusMisdirectedRequest}},
		{local, request{"tag from another site", "POST", "/api/tag", tag, map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden}},
		{local, request{"tag from http://localhost:1, another origin", "POST", "/api/tag", tag, map[string]string{"Origin": "http://localhost:1"}, http.StatusForbidden}},
		{remote, request{"graph with the token", "GET", "/api/graph", "", bearer, http.StatusOK}},
		{local, request{"graph on loopback", "GET", "/api/graph", "", nil, http.StatusOK}},
	} {
		if got := do(t, tc.base, tc.request); got != tc.status {
			t.Errorf("%s (%s %s): status %d, want %d", tc.name, tc.method, tc.path, got, tc.status)
		}
	}
	for _, tc := range []struct {
		name, base, path string
		headers          http.Header
		status           int
	}{
		{"console without token", remote, "/api/console?machine=m1", nil, http.StatusUnauthorized},
		{"screen without token", remote, "/api/vnc?machine=m1", nil, http.StatusUnauthorized},
		{"console from another site", remote, "/api/console?machine=m1", http.Header{"Authorization": {"Bearer " + token}, "Origin": {"http://evil.example"}}, http.StatusForbidden},
		{"console from another site on loopback", local, "/api/console?machine=m1", http.Header{"Origin": {"http://evil.example"}}, http.StatusForbidden},
	} {
		if got := dialStatus(t, tc.base, tc.path, tc.headers); got != tc.status {
			t.Errorf("websocket %s: status %d, want %d", tc.name, got, tc.status)
		}
	}
	if after := state(t, s); !reflect.DeepEqual(before, after) {
		t.Errorf("refused requests changed the scrapbook:\nbefore %v\nafter  %v", before, after)
	}

	// The same action from the page's own origin, with the token, works.
	if got := do(t, remote, request{"tag", "POST", "/api/tag", tag, with(map[string]string{"Origin": remote}), 0}); got != http.StatusOK {
		t.Fatalf("tag with the token from the server's origin: status %d", got)
	}
	if _, err := s.Refs.Get("refs/tags/evil"); err != nil {
		t.Errorf("after a tag with the token: %v", err)
	}
}

// TestLogin logs in through the form and uses the session cookie.
func TestLogin(t *testing.T) {
	s := importSnapshots(t, 1)
	base := serve(t, s.Dir, "0.0.0.0:0", ui.Options{Token: token})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("POST", base+"/login", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "sbuml-ui" {
			session = c
		}
	}
	if resp.StatusCode != http.StatusSeeOther || session == nil || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode {
		t.Fatalf("login: status %d, cookie %+v; want 303 and an HttpOnly, SameSite=Strict session cookie", resp.StatusCode, session)
	}
	if strings.Contains(session.Value, token) {
		t.Errorf("the session cookie holds the token itself")
	}
	req, _ = http.NewRequest("GET", base+"/api/graph", nil)
	req.AddCookie(session)
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("graph with the session cookie: status %d", resp.StatusCode)
	}
}

// scrapbookState is what refused requests must leave alone.
type scrapbookState struct {
	Refs []string
	Log  []string
}

func state(t testing.TB, s *sbuml.Scrapbook) scrapbookState {
	t.Helper()
	var st scrapbookState
	all, err := s.Refs.List("refs/")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range all {
		st.Refs = append(st.Refs, r.Name+" "+r.ID.String())
	}
	entries, err := s.Log(context.Background(), sbuml.LogOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		st.Log = append(st.Log, e.ID.String())
	}
	return st
}

// do sends a request and returns its status.
func do(t testing.TB, base string, r request) int {
	t.Helper()
	req, err := http.NewRequest(r.method, base+r.path, strings.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	if r.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range r.headers {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("%s: %v", r.name, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// dialStatus opens a websocket and returns the status of the handshake's
// answer (101 if it was taken).
func dialStatus(t testing.TB, base, path string, h http.Header) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+path, &websocket.DialOptions{HTTPHeader: h})
	if c != nil {
		c.CloseNow()
	}
	if resp == nil {
		t.Fatalf("websocket %s: %v", path, err)
	}
	return resp.StatusCode
}
