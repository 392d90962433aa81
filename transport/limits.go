package transport

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// Limits bound what a remote can make a client do: how long each HTTP
// request may wait or crawl, how often a failure in passing is retried,
// and how many refs a remote may list. A zero field means the value the
// environment variable named with it gives, else its Default constant;
// LimitsFromEnv checks those variables.
type Limits struct {
	// ConnectTimeout bounds opening a connection, TLS handshake
	// included ($SBUML_HTTP_CONNECT_TIMEOUT).
	ConnectTimeout time.Duration
	// ResponseTimeout bounds the wait for a response's status and
	// headers once the request is sent ($SBUML_HTTP_RESPONSE_TIMEOUT). A
	// push's batch is stored and synced before it is answered.
	ResponseTimeout time.Duration
	// LowSpeedLimit and LowSpeedTime end a request whose body, sent or
	// received, moves fewer than LowSpeedLimit bytes a second over
	// LowSpeedTime, as curl's options of those names do: a server that
	// stops sending, or sends a byte now and then
	// ($SBUML_HTTP_LOW_SPEED_LIMIT, $SBUML_HTTP_LOW_SPEED_TIME).
	LowSpeedLimit int64
	LowSpeedTime  time.Duration
	// Attempts is how many times a request is sent when it fails in
	// passing (the connection refused or reset, or a 429, 502, 503 or
	// 504 answer): waiting 0.5 s, 1 s, 2 s, … in between, or as
	// Retry-After asks, up to MaxRetryAfter. $SBUML_HTTP_RETRIES gives
	// the number of retries, Attempts less one.
	Attempts int
	// MaxRefs bounds the refs a remote may list, so that a clone or pull
	// cannot be made to create refs without end ($SBUML_MAX_REFS). Ref
	// names crossing the wire are at most MaxWireRefName bytes.
	MaxRefs int
}

// Defaults of Limits.
const (
	DefaultConnectTimeout  = 30 * time.Second
	DefaultResponseTimeout = 120 * time.Second
	DefaultLowSpeedLimit   = 1024
	DefaultLowSpeedTime    = 30 * time.Second
	DefaultAttempts        = 5
	DefaultMaxRefs         = 10000
	// MaxRetryAfter bounds how long a client waits when a server asks it
	// to retry later; a server asking for longer is an error.
	MaxRetryAfter = 30 * time.Second
	// MaxWireRefName bounds the full name of a ref a remote lists.
	MaxWireRefName = 256
)

// withDefaults returns l with its zero fields set from the environment
// or to the defaults.
func (l Limits) withDefaults() Limits {
	envOnce.Do(func() { envLimits, _ = LimitsFromEnv() })
	env := envLimits
	if l.ConnectTimeout <= 0 {
		l.ConnectTimeout = env.ConnectTimeout
	}
	if l.ResponseTimeout <= 0 {
		l.ResponseTimeout = env.ResponseTimeout
	}
	if l.LowSpeedLimit <= 0 {
		l.LowSpeedLimit = env.LowSpeedLimit
	}
	if l.LowSpeedTime <= 0 {
		l.LowSpeedTime = env.LowSpeedTime
	}
	if l.Attempts <= 0 {
		l.Attempts = env.Attempts
	}
	if l.MaxRefs <= 0 {
		l.MaxRefs = env.MaxRefs
	}
	return l.orDefaults()
}

// envLimits are the Limits of the environment, read once.
var (
	envOnce   sync.Once
	envLimits Limits
)

// orDefaults returns l with its zero fields set to the defaults.
func (l Limits) orDefaults() Limits {
	if l.ConnectTimeout <= 0 {
		l.ConnectTimeout = DefaultConnectTimeout
	}
	if l.ResponseTimeout <= 0 {
		l.ResponseTimeout = DefaultResponseTimeout
	}
	if l.LowSpeedLimit <= 0 {
		l.LowSpeedLimit = DefaultLowSpeedLimit
	}
	if l.LowSpeedTime <= 0 {
		l.LowSpeedTime = DefaultLowSpeedTime
	}
	if l.Attempts <= 0 {
		l.Attempts = DefaultAttempts
	}
	if l.MaxRefs <= 0 {
		l.MaxRefs = DefaultMaxRefs
	}
	return l
}

// LimitsFromEnv returns the Limits the environment variables named in
// Limits set, zero for the others, or an error naming a variable that is
// set to nonsense (which the limits of remotes ignore). Durations are Go
// durations ("90s", "2m") or whole seconds ("90").
func LimitsFromEnv() (Limits, error) {
	var l Limits
	for _, d := range []struct {
		name string
		to   *time.Duration
	}{
		{"SBUML_HTTP_CONNECT_TIMEOUT", &l.ConnectTimeout},
		{"SBUML_HTTP_RESPONSE_TIMEOUT", &l.ResponseTimeout},
		{"SBUML_HTTP_LOW_SPEED_TIME", &l.LowSpeedTime},
	} {
		v := os.Getenv(d.name)
		if v == "" {
			continue
		}
		dur, err := time.ParseDuration(v)
		if n, nerr := strconv.Atoi(v); nerr == nil {
			dur, err = time.Duration(n)*time.Second, nil
		}
		if err != nil || dur <= 0 {
			return Limits{}, fmt.Errorf("$%s=%q: want a duration such as 30s", d.name, v)
		}
		*d.to = dur
	}
	for _, n := range []struct {
		name string
		min  int64
		set  func(int64)
	}{
		{"SBUML_HTTP_LOW_SPEED_LIMIT", 1, func(v int64) { l.LowSpeedLimit = v }},
		{"SBUML_HTTP_RETRIES", 0, func(v int64) { l.Attempts = int(v) + 1 }},
		{"SBUML_MAX_REFS", 1, func(v int64) { l.MaxRefs = int(v) }},
	} {
		v := os.Getenv(n.name)
		if v == "" {
			continue
		}
		i, err := strconv.ParseInt(v, 10, 64)
		if err != nil || i < n.min {
			return Limits{}, fmt.Errorf("$%s=%q: want a whole number of at least %d", n.name, v, n.min)
		}
		n.set(i)
	}
	return l, nil
}
