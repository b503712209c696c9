package main

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strings"

	"github.com/redis/rueidis"
)

// urlEnv is the environment variable that names the Redis server when
// --url is not given; defaultURL is used when neither is.
const (
	urlEnv     = "REDISLOCK_URL"
	defaultURL = "redis://127.0.0.1:6379"
)

// connFlags are the flags of run and status that say where Redis is.
type connFlags struct {
	url      string
	cluster  bool
	sentinel string
}

func (c *connFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.url, "url", "", "the Redis server, as `URL`: redis://[USER[:PASSWORD]@]HOST[:PORT][/DB],\n"+
		"rediss:// for TLS, unix://[USER[:PASSWORD]@]/PATH/TO/SOCKET[?db=DB]; more\n"+
		"seed nodes of a cluster or more sentinels with ?addr=HOST:PORT&addr=...;\n"+
		"a Sentinel master with ?master_set=NAME (see --sentinel)\n"+
		"(default: $"+urlEnv+", else "+defaultURL+")")
	fs.BoolVar(&c.cluster, "cluster", false, "the URL names nodes of a Redis Cluster (an error if it is not one)")
	fs.StringVar(&c.sentinel, "sentinel", "", "the URL names Sentinels, which watch the master `NAME`\n"+
		"(as ?master_set=NAME in the URL)")
}

// options returns the rueidis options that c and getenv describe, and the
// URL with its password masked, for messages. Its errors are bad usage and
// never hold the password.
func (c *connFlags) options(getenv func(string) string) (rueidis.ClientOption, string, error) {
	raw, from := c.url, "--url"
	if raw == "" {
		raw, from = getenv(urlEnv), "$"+urlEnv
	}
	if raw == "" {
		raw = defaultURL
	}
	opt, err := rueidis.ParseURL(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the whole URL, password and all
		}
		return opt, "", fmt.Errorf("%s: %s is not a Redis URL: %s", from, redact(raw), scrub(err.Error(), raw))
	}
	where := redact(raw)
	if c.sentinel != "" {
		opt.Sentinel.MasterSet = c.sentinel
	}
	switch {
	case c.cluster && opt.Sentinel.MasterSet != "":
		return opt, "", errors.New("--cluster and Sentinel (--sentinel, ?master_set=) exclude each other")
	case !c.cluster && opt.Sentinel.MasterSet == "" && len(opt.InitAddress) > 1:
		return opt, "", fmt.Errorf("%s: several addresses (?addr=) need --cluster or --sentinel", from)
	}
	// Nothing is read through rueidis' client-side cache: without it a
	// server with no RESP3 (Redis 5, some proxies) works too. Without
	// --cluster, a server is taken for what the URL says it is.
	opt.DisableCache = true
	opt.ForceSingleClient = !c.cluster && opt.Sentinel.MasterSet == ""
	return opt, where, nil
}

// connect returns a client for c, after checking that a --cluster URL does
// name a cluster; its errors never hold the password.
func (c *connFlags) connect(getenv func(string) string) (rueidis.Client, string, error) {
	opt, where, err := c.options(getenv)
	if err != nil {
		return nil, "", usageError{err}
	}
	client, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, "", fmt.Errorf("connect to %s: %s", where, scrub(err.Error(), c.rawURL(getenv)))
	}
	if c.cluster && client.Mode() != rueidis.ClientModeCluster {
		client.Close()
		return nil, "", fmt.Errorf("--cluster: %s is not a Redis Cluster (%s); drop --cluster", where, client.Mode())
	}
	return client, where, nil
}

// rawURL returns the URL that options parses.
func (c *connFlags) rawURL(getenv func(string) string) string {
	if c.url != "" {
		return c.url
	}
	return getenv(urlEnv)
}

// redact returns raw with the password of its user info masked.
func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	if pw := password(raw); pw != "" {
		return strings.ReplaceAll(raw, pw, "xxxxx")
	}
	return raw
}

// scrub returns msg with the password of raw (as written, and unescaped)
// masked, should msg repeat it.
func scrub(msg, raw string) string {
	pw := password(raw)
	if pw == "" {
		return msg
	}
	msg = strings.ReplaceAll(msg, pw, "xxxxx")
	if un, err := url.PathUnescape(pw); err == nil && un != "" {
		msg = strings.ReplaceAll(msg, un, "xxxxx")
	}
	return msg
}

// password returns the password of raw's user info as written, found by
// the text alone: raw need not be a valid URL.
func password(raw string) string {
	_, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return ""
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return ""
	}
	_, pw, _ := strings.Cut(rest[:at], ":")
	return pw
}
