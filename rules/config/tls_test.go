package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/config"
	"github.com/feedgate/feedgate/rules/internal/ruletest"
)

// The default policy flags tunnels without a name, intercepts nothing and
// goes direct.
func TestTLSDefaults(t *testing.T) {
	c := loadDefault(t)
	s := c.TLS
	if c.Policy.TunnelWithoutSNI != rules.Log || s.SNITimeout != 5*time.Second || !s.CutTunnels {
		t.Errorf("TLS = %v, %v, cut %v; want log, 5s, cut true", c.Policy.TunnelWithoutSNI, s.SNITimeout, s.CutTunnels)
	}
	if ic := c.Intercept; c.Policy.InterceptHosts != nil || ic.CACert != "" || ic.CAKey != "" || ic.UpstreamCA != nil {
		t.Errorf("Intercept = %+v; want none", ic)
	}
	if c.Policy.Intercepts("www.kaspersky.com") {
		t.Errorf("Intercepts(www.kaspersky.com) = true with interception off")
	}
	if u := c.Upstream; u.FromEnv || u.URL != nil || u.AuthFile != "" {
		t.Errorf("Upstream = %+v; want direct", u)
	}
}

func TestLoadTLS(t *testing.T) {
	c := loadFile(t, "testdata/tls.toml")
	s := c.TLS
	if c.Policy.TunnelWithoutSNI != rules.Block || s.SNITimeout != 750*time.Millisecond || s.CutTunnels {
		t.Errorf("TLS = %v, %v, cut %v; want block, 750ms, cut false", c.Policy.TunnelWithoutSNI, s.SNITimeout, s.CutTunnels)
	}
	ic := c.Intercept
	ruletest.DiffLines(t, "intercept hosts", c.Policy.InterceptHosts, []string{"www.example.com", "*.upd.example.com", "dl-*.example-labs.net", "192.0.2.10"})
	// Relative paths are relative to the policy's directory.
	if ic.CACert != "testdata/ca/ca.crt" || ic.CAKey != "/etc/feedgate/ca.key" {
		t.Errorf("CACert, CAKey = %q, %q; want testdata/ca/ca.crt, /etc/feedgate/ca.key", ic.CACert, ic.CAKey)
	}
	ruletest.DiffLines(t, "upstream CAs", ic.UpstreamCA, []string{"testdata/roots.pem", "/etc/ssl/extra.pem"})
	u := c.Upstream
	if u.FromEnv || u.URL == nil || u.URL.String() != "http://proxy.corp.example:3128" || u.AuthFile != "testdata/secrets/parent.auth" {
		t.Errorf("Upstream = %+v (URL %v); want http://proxy.corp.example:3128 with testdata/secrets/parent.auth", u, u.URL)
	}
}

func TestIntercepts(t *testing.T) {
	c := loadFile(t, "testdata/tls.toml")
	tests := []struct {
		host string
		want bool
	}{
		{"www.example.com", true}, // exact
		{"WWW.Example.COM", true},
		{"www.example.com.", true},
		{"example.com", false},
		{"shop.example.com", false},
		{"wwww.example.com", false},
		{"s1.upd.example.com", true}, // *.suffix, any depth
		{"a.b.upd.example.com", true},
		{"S1.UPD.EXAMPLE.COM.", true},
		{"upd.example.com", false},      // not the suffix itself
		{"dl-7.example-labs.net", true}, // label wildcard
		{"DL-cdn.example-labs.net", true},
		{"dl-.example-labs.net", false}, // the wildcard is at least one character
		{"x.dl-7.example-labs.net", false},
		{"192.0.2.10", true},
		{"192.0.2.1", false},
		{"[2001:db8::1]", false},
		{"", false},
		{".", false},
		{"www.exämple.com", false},
	}
	for _, tc := range tests {
		if got := c.Policy.Intercepts(tc.host); got != tc.want {
			t.Errorf("Intercepts(%q) = %v; want %v", tc.host, got, tc.want)
		}
		if strings.ContainsFunc(tc.host, func(r rune) bool { return r >= 0x80 }) {
			continue // Unicode names are converted to punycode, which allocates
		}
		if n := testing.AllocsPerRun(50, func() { c.Policy.Intercepts(tc.host) }); n != 0 {
			t.Errorf("Intercepts(%q) allocates %v times per call; want 0", tc.host, n)
		}
	}
}

// Settings not given take their defaults; values are checked one by one.
func TestLoadTLSAndUpstreamForms(t *testing.T) {
	tests := []struct {
		name, policy string
		want         string // settings as tlsSummary prints them
	}{
		{"empty", ``, "log 5s cut=true intercept=[] upstream=direct"},
		{"tls-partial", "[tls]\ntunnel_without_sni = \"allow\"\n", "allow 5s cut=true intercept=[] upstream=direct"},
		{"tls-bounds", "[tls]\nsni_timeout = \"100ms\"\n", "log 100ms cut=true intercept=[] upstream=direct"},
		{"tls-bounds-high", "[tls]\nsni_timeout = \"1m\"\ncut_tunnels = true\n", "log 1m0s cut=true intercept=[] upstream=direct"},
		{"intercept-empty", "[tls.intercept]\nhosts = []\n", "log 5s cut=true intercept=[] upstream=direct"},
		{"env", "upstream_proxy = \"env\"\n", "log 5s cut=true intercept=[] upstream=env"},
		{"url", "upstream_proxy = \"http://10.1.2.3:8080\"\n", "log 5s cut=true intercept=[] upstream=http://10.1.2.3:8080"},
		{"url-upper-scheme", "upstream_proxy = \"HTTP://proxy.example:3128\"\n", "log 5s cut=true intercept=[] upstream=http://proxy.example:3128"},
		{"url-idna", "upstream_proxy = \"http://proxy.bücher.example:3128\"\n", "log 5s cut=true intercept=[] upstream=http://proxy.xn--bcher-kva.example:3128"},
		{"url-ipv6", "upstream_proxy = \"http://[2001:db8::1]:3128\"\nupstream_proxy_auth_file = \"/run/secrets/parent\"\n",
			"log 5s cut=true intercept=[] upstream=http://[2001:db8::1]:3128 auth=/run/secrets/parent"},
	}
	dir := t.TempDir()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(dir, tc.name+".toml")
			if err := os.WriteFile(file, []byte(tc.policy), 0o644); err != nil {
				t.Fatal(err)
			}
			c := loadFile(t, filepath.ToSlash(file))
			if got := tlsSummary(c); got != tc.want {
				t.Errorf("settings = %s; want %s", got, tc.want)
			}
		})
	}
}

func tlsSummary(c *config.Config) string {
	s := c.TLS
	out := c.Policy.TunnelWithoutSNI.String() + " " + s.SNITimeout.String()
	if s.CutTunnels {
		out += " cut=true"
	} else {
		out += " cut=false"
	}
	out += " intercept=[" + strings.Join(c.Policy.InterceptHosts, " ") + "] upstream="
	switch u := c.Upstream; {
	case u.FromEnv:
		out += "env"
	case u.URL != nil:
		out += u.URL.String()
	default:
		out += "direct"
	}
	if c.Upstream.AuthFile != "" {
		out += " auth=" + c.Upstream.AuthFile
	}
	return out
}

// A policy read from an fs.FS resolves its files the same way, as names in
// that file system.
func TestTLSPathsInFS(t *testing.T) {
	fsys := fstest.MapFS{"policies/edge.toml": {Data: []byte(`upstream_proxy = "http://proxy.example:3128"
upstream_proxy_auth_file = "parent.auth"

[tls.intercept]
hosts = ["www.example.com"]
ca_cert = "ca/ca.crt"
ca_key = "../keys/ca.key"
`)}}
	c, warns, err := config.Load(rules.FS{FS: fsys}, "policies/edge.toml", rules.Options{})
	if err != nil || len(warns) > 0 {
		t.Fatalf("Load error %v, warnings %v; want neither", err, warns)
	}
	ic := c.Intercept
	if ic.CACert != "policies/ca/ca.crt" || ic.CAKey != "keys/ca.key" || c.Upstream.AuthFile != "policies/parent.auth" {
		t.Errorf("CACert, CAKey, AuthFile = %q, %q, %q; want policies/ca/ca.crt, keys/ca.key, policies/parent.auth", ic.CACert, ic.CAKey, c.Upstream.AuthFile)
	}
	if !c.Policy.Intercepts("www.example.com") {
		t.Errorf("Intercepts(www.example.com) = false; want true")
	}
}
