package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Upstream is the parent proxy feedgate sends its upstream requests
// through: none (direct), the one the environment names, or a fixed one.
type Upstream struct {
	// FromEnv is set by upstream_proxy = "env": HTTP_PROXY, HTTPS_PROXY
	// and NO_PROXY decide, as for any Go program.
	FromEnv bool
	// URL is the parent proxy, http://host:port with nothing else; nil
	// when direct or FromEnv.
	URL *url.URL
	// AuthFile is the file holding the parent's "user:password",
	// resolved like catalog paths; "" if none. The loader does not read
	// it.
	AuthFile string
}

// equal reports whether two upstream settings name the same parent.
func (u Upstream) equal(v Upstream) bool {
	return u.FromEnv == v.FromEnv && u.AuthFile == v.AuthFile &&
		(u.URL == nil) == (v.URL == nil) && (u.URL == nil || u.URL.String() == v.URL.String())
}

// upstreamEnv is the upstream_proxy value that defers to the environment.
const upstreamEnv = "env"

// parseUpstream validates upstream_proxy and upstream_proxy_auth_file.
func (f *fileCtx) parseUpstream(raw, auth string) Upstream {
	var up Upstream
	switch raw {
	case "":
	case upstreamEnv:
		up.FromEnv = true
	default:
		u, err := ParseProxyURL(raw)
		if err != nil {
			f.errorf("upstream_proxy", "upstream_proxy %q: %v", redactURL(raw), err)
		}
		up.URL = u
	}
	if auth != "" {
		switch {
		case up.FromEnv:
			f.errorf("upstream_proxy_auth_file", "upstream_proxy_auth_file works only with an http:// upstream_proxy, not with \"env\"")
		case raw == "":
			f.errorf("upstream_proxy_auth_file", "upstream_proxy_auth_file without upstream_proxy: name the parent proxy, e.g. upstream_proxy = \"http://proxy.example:3128\"")
		}
		up.AuthFile = f.resolvePath(auth)
	}
	return up
}

// ParseProxyURL parses a parent proxy URL, returning it in the form
// http://host:port, or an error saying what is wrong. The host is spelled as
// net/http's transport spells the address it dials (an international name
// in its ASCII form), so that the proxy can recognise the parent's dials.
//
// It is the one check of a parent proxy's URL: the loader applies it to
// upstream_proxy, and the proxy to the values of the proxy variables when
// upstream_proxy is "env" (after taking out their credentials, which a
// variable may carry and a policy file may not).
func ParseProxyURL(raw string) (*url.URL, error) {
	const want = `want "http://host:port", "env" or ""`
	scheme, _, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, errors.New("no scheme: " + want)
	}
	switch strings.ToLower(scheme) {
	case "http":
	case "https":
		return nil, errors.New("https:// parent proxies are not supported (TLS to the parent is not implemented): " + want)
	case "socks4", "socks4a", "socks5", "socks5h":
		return nil, errors.New("SOCKS parent proxies are not supported: " + want)
	default:
		return nil, errors.New("unsupported scheme " + strconv.Quote(scheme) + ": " + want)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("not a URL: " + want)
	}
	switch {
	case u.User != nil:
		// Credentials in a policy file end up in backups, diffs and
		// logs; a separate file can be kept secret.
		return nil, errors.New("credentials in the URL: put \"user:password\" in a file and name it in upstream_proxy_auth_file")
	case u.Hostname() == "":
		return nil, errors.New("no host: " + want)
	case u.Port() == "":
		return nil, errors.New("no port: write it, as in \"http://" + u.Host + ":3128\"")
	case u.Opaque != "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, errors.New("a parent proxy URL has no path, query or fragment: " + want)
	}
	if n, err := strconv.Atoi(u.Port()); err != nil || n < 1 || n > 65535 {
		return nil, errors.New("port " + strconv.Quote(u.Port()) + ": want 1-65535")
	}
	host := u.Host
	if name := u.Hostname(); !isASCII(name) {
		a, err := idna.Lookup.ToASCII(name)
		if err != nil {
			return nil, fmt.Errorf("host %q is not a valid international name: %w", name, err)
		}
		host = net.JoinHostPort(a, u.Port())
	}
	return &url.URL{Scheme: "http", Host: host}, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// redactURL hides the password of a URL quoted in a message, whether or
// not the URL parses.
func redactURL(raw string) string {
	prefix, rest := "", raw
	if i := strings.Index(raw, "://"); i >= 0 {
		prefix, rest = raw[:i+3], raw[i+3:]
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	at := strings.LastIndexByte(authority, '@')
	if at < 0 {
		return raw
	}
	user, _, hasPassword := strings.Cut(authority[:at], ":")
	if !hasPassword {
		return raw
	}
	return prefix + user + ":xxxxx" + rest[at:]
}
