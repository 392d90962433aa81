package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/logging"
)

// S3Scheme starts the URL of a scrapbook in an S3 bucket:
// s3://BUCKET[/PREFIX].
const S3Scheme = "s3://"

// S3Options configure OpenS3. Whatever is not set here is taken the way
// AWS tools take it: credentials from AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN or the profile
// AWS_PROFILE names in ~/.aws/credentials and ~/.aws/config, the region
// from AWS_REGION or the profile, the endpoint from AWS_ENDPOINT_URL or
// the profile, else AWS itself.
type S3Options struct {
	// Endpoint is the URL of an S3-compatible server, such as
	// http://127.0.0.1:7070.
	Endpoint string
	// Region is the bucket's region; "" means the configured one, else
	// us-east-1.
	Region string
	// PathStyle addresses buckets as ENDPOINT/BUCKET rather than
	// BUCKET.ENDPOINT. It is implied for an endpoint whose host is an IP
	// address or localhost.
	PathStyle bool
	// UnsafeNoConditionalWrites lets refs move on a store that does not
	// honour If-Match and If-None-Match on PutObject, by a plain
	// read-compare-write: two hosts pushing one ref at the same moment
	// may then lose an update. Without it such a store is refused.
	UnsafeNoConditionalWrites bool
	// CacheDir, if set, keeps the pack indexes read from the bucket, so
	// that a later transfer reads only the indexes of new packs: in a
	// directory of its own per endpoint, bucket and prefix, from which
	// every listing of the packs drops the indexes of packs that are
	// gone. Several remotes may share one CacheDir.
	CacheDir string
	// Client makes HTTP requests; nil means one from NewHTTPClient.
	Client *http.Client
	// Limits bound every request (timeouts, retries) and the ref list.
	Limits Limits
	// Lease tunes the lease a push holds on the bucket (see s3lease.go);
	// zero fields take the defaults.
	Lease LeaseTimes
}

// LeaseTimes tune push leases: a push rewrites its lease every Refresh,
// and a lease not rewritten for Stale belongs to a push that died.
type LeaseTimes struct {
	Refresh, Stale time.Duration
}

// Default lease times.
const (
	DefaultLeaseRefresh = time.Minute
	DefaultLeaseStale   = 10 * time.Minute
)

func (l LeaseTimes) orDefaults() LeaseTimes {
	if l.Refresh <= 0 {
		l.Refresh = DefaultLeaseRefresh
	}
	if l.Stale <= 0 {
		l.Stale = DefaultLeaseStale
	}
	return l
}

// S3 is a Remote on a scrapbook kept in an S3 bucket under a prefix:
//
//	PREFIX/config                 marks the scrapbook (JSON, format 1)
//	PREFIX/HEAD                   "ref: refs/heads/main"
//	PREFIX/refs/...               one object per ref: the snapshot's hex ID
//	PREFIX/packs/data/pack-H-R.*  packs of objects that reference nothing (chunks)
//	PREFIX/packs/tree/pack-H-R.*  packs of the other objects
//	PREFIX/locks/push-R           the lease of a push under way
//	PREFIX/locks/gc               the lock of a gc under way
//	PREFIX/gc/generation          what the last gc condemned (see GCS3)
//
// Packs and their indexes are in the format of a scrapbook's packs
// (docs/format.md); a pack is there once its index is, and an index is
// uploaded only after its pack and after every pack holding an object
// its objects reference, so the bucket keeps the closure invariant.
// Objects are read with ranged GETs. Refs move by compare-and-swap
// with S3 conditional writes: If-Match on the ref object's ETag, or
// If-None-Match: * to create it.
type S3 struct {
	url    string // s3://bucket/prefix/
	bucket string
	prefix string // "" or ending in "/"
	api    *s3.Client
	opts   S3Options
	limits Limits
	count  counter
	clock  serverClock
	// cacheBytes counts the bytes of small packs kept in memory.
	cacheBytes atomic.Int64

	// beginMu is held while the remote gets ready to be written.
	beginMu sync.Mutex

	mu    sync.Mutex
	view  *packView // the packs, once listed
	lease *lease    // held from the first write until Close
	// condOK records that the store's conditional writes were checked
	// (see checkConditional), and condWorks that they work.
	condOK, condWorks bool
	// known records that the prefix holds a scrapbook.
	known bool
}

var bucketPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// ParseS3URL splits s3://BUCKET[/PREFIX] into the bucket and the prefix
// (without slashes at either end).
func ParseS3URL(u string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(u, S3Scheme)
	if !ok {
		return "", "", fmt.Errorf("URL %q does not start with %s", u, S3Scheme)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	prefix = strings.Trim(prefix, "/")
	if !bucketPattern.MatchString(bucket) || strings.Contains(bucket, "..") {
		return "", "", fmt.Errorf("URL %q: %q is not a bucket name (3 to 63 lowercase letters, digits, dots and hyphens)", u, bucket)
	}
	if strings.ContainsAny(prefix, "?#\\ \t\r\n") {
		return "", "", fmt.Errorf("URL %q: the prefix may not contain white space, '\\', '?' or '#'", u)
	}
	for _, c := range strings.Split(prefix, "/") {
		if prefix != "" && (c == "" || c == "." || c == "..") {
			return "", "", fmt.Errorf("URL %q: the prefix may not have empty, '.' or '..' components", u)
		}
	}
	return bucket, prefix, nil
}

// IsS3URL reports whether u names a scrapbook in S3.
func IsS3URL(u string) bool { return strings.HasPrefix(u, S3Scheme) }

// OpenS3 returns the Remote at u, s3://BUCKET[/PREFIX]. It sends no
// request: a missing bucket, bad credentials or a prefix holding no
// scrapbook are found by the first call that needs them.
func OpenS3(ctx context.Context, u string, opts S3Options) (*S3, error) {
	bucket, prefix, err := ParseS3URL(u)
	if err != nil {
		return nil, fmt.Errorf("open remote %s: %w", u, err)
	}
	if prefix != "" {
		prefix += "/"
	}
	limits := opts.Limits.withDefaults()
	cfg, err := loadAWSConfig(ctx, opts, limits)
	if err != nil {
		return nil, fmt.Errorf("open remote %s: %w", u, err)
	}
	endpoint := opts.Endpoint
	if endpoint == "" && cfg.BaseEndpoint != nil {
		endpoint = *cfg.BaseEndpoint
	}
	api := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
		o.UsePathStyle = opts.PathStyle || localEndpoint(endpoint)
	})
	opts.Lease = opts.Lease.orDefaults()
	return &S3{url: S3Scheme + bucket + "/" + prefix, bucket: bucket, prefix: prefix, api: api, opts: opts, limits: limits}, nil
}

// loadAWSConfig reads the AWS configuration (environment, shared files)
// and makes every request go through a watched HTTP client, retried by
// the SDK within limits.
func loadAWSConfig(ctx context.Context, opts S3Options, limits Limits) (aws.Config, error) {
	load := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = limits.Attempts
				o.MaxBackoff = 8 * time.Second
				o.RateLimiter = ratelimit.None
			})
		}),
		// S3-compatible servers differ in the checksums they take;
		// objects carry their own (IDs, CRCs, index checksums).
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
		// Errors are returned, explained; the SDK's own log would only
		// print them again, unexplained.
		config.WithLogger(logging.Nop{}),
	}
	if opts.Region != "" {
		load = append(load, config.WithRegion(opts.Region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, load...)
	if err != nil {
		return cfg, fmt.Errorf("read the AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	// The configuration's own client carries AWS_CA_BUNDLE, if set.
	var base httpDoer
	switch c := cfg.HTTPClient.(type) {
	case *awshttp.BuildableClient:
		base = c.WithDialerOptions(func(d *net.Dialer) { d.Timeout = limits.ConnectTimeout })
	default:
		base = NewHTTPClient(limits)
	}
	if opts.Client != nil {
		base = opts.Client
	}
	cfg.HTTPClient = &watchedClient{base: base, limits: limits}
	return cfg, nil
}

// httpDoer sends HTTP requests.
type httpDoer interface {
	Do(*http.Request) (*http.Response, error)
}

// localEndpoint reports whether endpoint's host is an IP address or
// localhost, which cannot carry a bucket name in front.
func localEndpoint(endpoint string) bool {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return false
	}
	h := u.Hostname()
	return h == "localhost" || net.ParseIP(h) != nil
}

// URL implements Remote.
func (s *S3) URL() string { return s.url }

// Traffic implements Remote: the bytes of request and response bodies.
func (s *S3) Traffic() Traffic { return s.count.traffic() }

// key returns the object key of name below the prefix.
func (s *S3) key(name string) string { return s.prefix + name }

// Close implements Remote: a push's lease is given up.
func (s *S3) Close() error {
	s.mu.Lock()
	l := s.lease
	s.lease = nil
	s.mu.Unlock()
	if l != nil {
		return l.release(context.Background())
	}
	return nil
}

// watchedClient bounds each request of the SDK as client.once bounds
// the requests of the other remotes (see watchdog), and counts the body
// bytes of the remote named in the request's context.
type watchedClient struct {
	base   httpDoer
	limits Limits
}

// remoteKey is the context key of the *S3 on whose behalf a request is
// made: its bytes are counted there, and its answer's Date read.
type remoteKey struct{}

// Do sends req through the base client under a watchdog.
func (t *watchedClient) Do(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	w := startWatchdog(t.limits, cancel, req.ContentLength > 0)
	var c *counter
	remote, _ := ctx.Value(remoteKey{}).(*S3)
	if remote != nil {
		c = &remote.count
	}
	req = req.Clone(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		req.Body = &watchedRequestBody{ReadCloser: req.Body, w: w, left: req.ContentLength, c: c}
	}
	resp, err := t.base.Do(req)
	if err != nil {
		w.stop()
		cancel(nil)
		return nil, w.explain(err)
	}
	w.receiving()
	if remote != nil {
		remote.clock.observe(resp.Header.Get("Date"))
	}
	body := &watchedBody{ReadCloser: resp.Body, w: w, cancel: cancel}
	if c != nil {
		resp.Body = &countingBody{ReadCloser: body, n: &c.received}
	} else {
		resp.Body = body
	}
	return resp, nil
}

// watchedRequestBody is a request body read by the transport: counted,
// and once all of it is read, the request waits for its answer.
type watchedRequestBody struct {
	io.ReadCloser
	w    *watchdog
	left int64
	c    *counter
}

func (r *watchedRequestBody) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.w.moved.Add(int64(n))
	if r.c != nil {
		r.c.sent.Add(int64(n))
	}
	if r.left -= int64(n); r.left <= 0 || err != nil {
		r.w.setPhase(phaseWaiting)
	}
	return n, err
}

// withCount returns ctx for the requests made on s's behalf: their
// bytes are counted in s's traffic, and their answers set s's clock.
func (s *S3) withCount(ctx context.Context) context.Context {
	return context.WithValue(ctx, remoteKey{}, s)
}

// serverClock follows the store's clock from the Date of its answers,
// so that the times of objects (their LastModified) are compared with
// the store's present, never with this machine's clock.
type serverClock struct {
	mu   sync.Mutex
	date time.Time // the Date of the last answer
	at   time.Time // when it came, by this machine's monotonic clock
}

func (c *serverClock) observe(date string) {
	t, err := http.ParseTime(date)
	if err != nil {
		return
	}
	c.mu.Lock()
	c.date, c.at = t, time.Now()
	c.mu.Unlock()
}

// now returns the store's present time (zero before any answer).
func (c *serverClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.date.IsZero() {
		return c.date
	}
	return c.date.Add(time.Since(c.at))
}

// errS3 wraps an error of the S3 API in one line that names the
// remote, the operation and the key, and says what to do where the
// cause is known.
func (s *S3) errS3(op, key string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("remote %s: %s %s: %w", s.url, op, key, err)
	}
	return &s3Err{msg: fmt.Sprintf("remote %s: %s %s: %v", s.url, op, key, explainS3(s.bucket, err)), err: err}
}
