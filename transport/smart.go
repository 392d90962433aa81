package transport

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"

	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
)

// ProtocolName is the protocol a smart server names in GET /sbuml-protocol.
const ProtocolName = "sbuml/1"

// ProtocolInfo is the body of GET /sbuml-protocol.
type ProtocolInfo struct {
	Protocol string `json:"protocol"`
	// Push is "token" when pushing needs the bearer token, "disabled"
	// when the server refuses every push.
	Push string `json:"push"`
}

// Smart is a Remote served by `sbuml serve` over HTTP: batched existence
// queries, batched downloads and uploads of framed objects, and
// compare-and-swap ref updates (docs/transport.md).
type Smart struct {
	base   string // ends in "/"
	token  string
	client *client
	count  counter
	// warn, if set, is told once that the token goes over plain http to
	// a host that is not this machine.
	warn     func(string)
	warnOnce sync.Once
}

// NewSmart returns a client for the smart server at base (http:// or
// https://), within the default Limits. token, if not empty, is sent as
// a bearer token with every request that writes, and with no other. hc
// nil means a client from NewHTTPClient.
func NewSmart(base, token string, hc *http.Client) *Smart {
	return newSmart(base, token, newClient(hc, Limits{}), nil)
}

func newSmart(base, token string, c *client, warn func(string)) *Smart {
	return &Smart{base: withSlash(base), token: token, client: c, warn: warn}
}

func withSlash(u string) string {
	if !strings.HasSuffix(u, "/") {
		return u + "/"
	}
	return u
}

// URL implements Remote.
func (s *Smart) URL() string { return s.base }

// Traffic implements Remote: bytes of request and response bodies.
func (s *Smart) Traffic() Traffic { return s.count.traffic() }

// Close implements Remote.
func (s *Smart) Close() error {
	s.client.hc.CloseIdleConnections()
	return nil
}

// do sends a request and returns the response if its status is 200. The
// response body is counted as it is read. Any other status becomes an
// error carrying the server's one-line message and, where one fits, a
// sentinel error. Requests that write carry the token; refs/update, the
// one that is not idempotent, is sent again only if the server surely
// did not act on it.
func (s *Smart) do(ctx context.Context, method, path string, body []byte, write bool) (*http.Response, error) {
	r := request{method: method, url: s.base + path, body: body, header: http.Header{}, idempotent: path != "refs/update"}
	if body != nil {
		r.header.Set("Content-Type", "application/octet-stream")
	}
	if write && s.token != "" {
		r.header.Set("Authorization", "Bearer "+s.token)
		s.warnPlainToken()
	}
	resp, err := s.client.do(ctx, r, func(n int64) { s.count.sent.Add(n) })
	if err != nil {
		return nil, fmt.Errorf("remote %s: %w", s.base, err)
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, n: &s.count.received}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, statusError(s.base, method, path, resp)
}

// warnPlainToken warns, once, when the token is about to go over plain
// http to a host other than this machine, where anyone on the way can
// read it.
func (s *Smart) warnPlainToken() {
	if s.warn == nil || !strings.HasPrefix(s.base, "http://") {
		return
	}
	u, err := url.Parse(s.base)
	if err != nil || isLoopback(u.Hostname()) {
		return
	}
	s.warnOnce.Do(func() {
		s.warn(fmt.Sprintf("the push token goes to %s over plain http, readable on the way; serve it with --tls-cert and push to https://", u.Host))
	})
}

// isLoopback reports whether host names this machine.
func isLoopback(host string) bool {
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// statusError turns a failed response into an error: the first line of
// its body, wrapping the sentinel that matches the status.
func statusError(base, method, path string, resp *http.Response) error {
	line, _ := bufio.NewReader(io.LimitReader(resp.Body, 1024)).ReadString('\n')
	line = strings.TrimSpace(line)
	if line == "" {
		line = resp.Status
	}
	kind := errorKinds[resp.Header.Get(errorHeader)]
	if kind != nil {
		return &remoteError{msg: fmt.Sprintf("remote %s: %s %s: %s", base, method, path, line), kind: kind}
	}
	return fmt.Errorf("remote %s: %s %s: %d: %s", base, method, path, resp.StatusCode, line)
}

// errorKinds maps the error codes of a server to sentinel errors.
var errorKinds = map[string]error{
	codeNotFound:         objects.ErrNotFound,
	codeConflict:         refs.ErrConflict,
	codeInvalidName:      refs.ErrInvalidName,
	codeCorrupt:          objects.ErrCorrupt,
	codeMissingReference: ErrMissingReference,
	codeNotSnapshot:      ErrNotSnapshot,
	codeReadOnly:         ErrReadOnly,
	codeDenied:           ErrPushDenied,
	codeNoSpace:          syscall.ENOSPC,
}

// remoteError is an error from a server that still matches a sentinel.
type remoteError struct {
	msg  string
	kind error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.kind }

// countingBody counts the bytes read from a response body.
type countingBody struct {
	io.ReadCloser
	n interface{ Add(int64) int64 }
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// readAll reads a whole response body of at most limit bytes.
func readAll(resp *http.Response, limit int64, what string) ([]byte, error) {
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: %s exceeds %d bytes", ErrProtocol, what, limit)
	}
	return b, nil
}

// Info asks the server which protocol it speaks and whether it takes pushes.
func (s *Smart) Info(ctx context.Context) (*ProtocolInfo, error) {
	resp, err := s.do(ctx, "GET", "sbuml-protocol", nil, false)
	if err != nil {
		return nil, err
	}
	b, err := readAll(resp, 4096, "protocol info")
	if err != nil {
		return nil, fmt.Errorf("remote %s: %w", s.base, err)
	}
	var info ProtocolInfo
	if err := json.Unmarshal(b, &info); err != nil || info.Protocol != ProtocolName {
		return nil, fmt.Errorf("remote %s: %w: does not speak %s", s.base, ErrProtocol, ProtocolName)
	}
	return &info, nil
}

// ListRefs implements Remote.
func (s *Smart) ListRefs(ctx context.Context) (*RefList, error) {
	resp, err := s.do(ctx, "GET", "refs", nil, false)
	if err != nil {
		return nil, err
	}
	return readRefList(resp, "remote "+s.base, s.client.limits.MaxRefs)
}

// Has implements Remote, in requests of at most MaxHasIDs IDs.
func (s *Smart) Has(ctx context.Context, ids []objects.ID) ([]bool, error) {
	has := make([]bool, 0, len(ids))
	for len(ids) > 0 {
		n := min(len(ids), MaxHasIDs)
		resp, err := s.do(ctx, "POST", "objects/has", encodeIDs(ids[:n]), false)
		if err != nil {
			return nil, err
		}
		b, err := readAll(resp, (MaxHasIDs+7)/8, "existence bitmap")
		if err != nil {
			return nil, fmt.Errorf("remote %s: %w", s.base, err)
		}
		part, err := decodeBitmap(b, n)
		if err != nil {
			return nil, fmt.Errorf("remote %s: %w", s.base, err)
		}
		has = append(has, part...)
		ids = ids[n:]
	}
	return has, nil
}

// Get implements Remote, in requests of at most MaxGetIDs IDs. Objects
// are handed to fn as they come off the wire; a response cut off in
// passing (see transient) is asked again for the objects it did not
// bring, at most Limits.Attempts times in all. Once ctx is cancelled no
// request is started, and the one under way still hands over what keeps
// arriving until the stream goes idle (see drainIdle), so that objects
// already on their way when a fetch is interrupted are kept.
func (s *Smart) Get(ctx context.Context, ids []objects.ID, fn func(objects.ID, []byte) error) error {
	for len(ids) > 0 {
		n := min(len(ids), MaxGetIDs)
		batch := ids[:n]
		for attempt := 1; ; attempt++ {
			if ctx.Err() != nil {
				return fmt.Errorf("remote %s: POST objects/get: %w", s.base, context.Cause(ctx))
			}
			rest, err := s.get(ctx, batch, fn)
			if err == nil {
				break
			}
			if !errors.Is(err, errCutOff) || attempt >= s.client.limits.Attempts {
				return err
			}
			batch = rest
		}
		ids = ids[n:]
	}
	return nil
}

// errCutOff marks a response that ended in passing (objects/get of a
// smart server, a ranged GET of a bucket).
var errCutOff = errors.New("response cut off")

// get asks for ids and hands what arrives to fn. If the response is cut
// off in passing, it returns the IDs not handed over and an error
// wrapping errCutOff.
func (s *Smart) get(ctx context.Context, ids []objects.ID, fn func(objects.ID, []byte) error) ([]objects.ID, error) {
	d := startDraining(ctx)
	defer d.close()
	resp, err := s.do(d.ctx, "POST", "objects/get", encodeIDs(ids), false)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	resp.Body = &countingBody{ReadCloser: resp.Body, n: &d.read}
	want := make(map[objects.ID]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	rr := recordReader{r: resp.Body}
	for {
		id, stored, _, err := rr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			err = fmt.Errorf("remote %s: POST objects/get: %w", s.base, err)
			if transient(err) && ctx.Err() == nil {
				return missing(ids, want), fmt.Errorf("%w: %w", errCutOff, err)
			}
			return nil, err
		}
		if !want[id] {
			return nil, fmt.Errorf("remote %s: %w: sent object %s, which was not asked for or sent twice", s.base, ErrProtocol, id)
		}
		delete(want, id)
		if err := fn(id, stored); err != nil {
			return nil, err
		}
	}
	for id := range want {
		if why := resp.Trailer.Get(errorTrailer); why != "" {
			return nil, fmt.Errorf("remote %s cannot send objects it has (one is %s in its scrapbook): %w; its owner should run sbuml fsck there, pulling again will not help", s.base, why, objects.ErrCorrupt)
		}
		return nil, fmt.Errorf("remote %s: %w: response lacks object %s", s.base, ErrProtocol, id)
	}
	return nil, nil
}

// missing returns the IDs of ids still in want, in order.
func missing(ids []objects.ID, want map[objects.ID]bool) []objects.ID {
	var rest []objects.ID
	for _, id := range ids {
		if want[id] {
			rest = append(rest, id)
		}
	}
	return rest
}

// Put implements Remote in one request per call; callers keep objs under
// MaxPutObjects and MaxPutBytes.
func (s *Smart) Put(ctx context.Context, objs []Object) error {
	size := 0
	for _, o := range objs {
		size += recordHeaderSize + len(o.Stored)
	}
	body := make([]byte, 0, size)
	for _, o := range objs {
		body = appendRecord(body, o.ID, o.Stored)
	}
	resp, err := s.do(ctx, "POST", "objects/put", body, true)
	if err != nil {
		return err
	}
	_, err = readAll(resp, 4096, "put result")
	return err
}

// refUpdate is the body of POST /refs/update.
type refUpdate struct {
	Name string     `json:"name"`
	Old  objects.ID `json:"old"`
	New  objects.ID `json:"new"`
}

// UpdateRef implements Remote.
func (s *Smart) UpdateRef(ctx context.Context, name string, old, new objects.ID) error {
	body, err := json.Marshal(refUpdate{Name: name, Old: old, New: new})
	if err != nil {
		return err
	}
	resp, err := s.do(ctx, "POST", "refs/update", body, true)
	if err != nil {
		return err
	}
	_, err = readAll(resp, 4096, "ref update result")
	return err
}

// isHTTP reports whether u is an http:// or https:// URL.
func isHTTP(u string) bool {
	return strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://")
}
