package rules

import (
	"net/url"
	"strconv"
	"strings"
)

// UpstreamProxy is the parent proxy feedgate sends its upstream requests
// through: none (direct), the one the environment names, or a fixed one.
type UpstreamProxy struct {
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

// upstreamEnv is the upstream_proxy value that defers to the environment.
const upstreamEnv = "env"

// parseUpstream validates upstream_proxy and upstream_proxy_auth_file.
func (f *fileCtx) parseUpstream(raw, auth string) UpstreamProxy {
	var up UpstreamProxy
	switch raw {
	case "":
	case upstreamEnv:
		up.FromEnv = true
	default:
		u, msg := parseProxyURL(raw)
		if msg != "" {
			f.errorf("upstream_proxy", "upstream_proxy %q: %s", redactURL(raw), msg)
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

// parseProxyURL parses a parent proxy URL, returning it in the form
// http://host:port, or a message saying what is wrong.
func parseProxyURL(raw string) (*url.URL, string) {
	const want = `want "http://host:port", "env" or ""`
	scheme, _, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, "no scheme: " + want
	}
	switch strings.ToLower(scheme) {
	case "http":
	case "https":
		return nil, "https:// parent proxies are not supported (TLS to the parent is not implemented): " + want
	case "socks4", "socks4a", "socks5", "socks5h":
		return nil, "SOCKS parent proxies are not supported: " + want
	default:
		return nil, "unsupported scheme " + strconv.Quote(scheme) + ": " + want
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, "not a URL: " + want
	}
	switch {
	case u.User != nil:
		// Credentials in a policy file end up in backups, diffs and
		// logs; a separate file can be kept secret.
		return nil, "credentials in the URL: put \"user:password\" in a file and name it in upstream_proxy_auth_file"
	case u.Hostname() == "":
		return nil, "no host: " + want
	case u.Port() == "":
		return nil, "no port: write it, as in \"http://" + u.Host + ":3128\""
	case u.Opaque != "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, "a parent proxy URL has no path, query or fragment: " + want
	}
	if n, err := strconv.Atoi(u.Port()); err != nil || n < 1 || n > 65535 {
		return nil, "port " + strconv.Quote(u.Port()) + ": want 1-65535"
	}
	return &url.URL{Scheme: "http", Host: u.Host}, ""
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
