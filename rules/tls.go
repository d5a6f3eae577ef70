package rules

import (
	"path"
	"strings"
	"time"
)

// TLSSettings are the CONNECT tunnel and TLS interception settings of the
// [tls] table.
type TLSSettings struct {
	// TunnelWithoutSNI is the least strict action for a CONNECT tunnel
	// whose ClientHello carries no server name, or that is not TLS at
	// all: such a tunnel cannot be checked against the host it claims, so
	// an operator may flag or refuse it. The default is Log: a CONNECT to
	// an IP literal without a name is the typical way around a host
	// policy, and must at least show up; block would break the TLS
	// clients that rightly send no name to an address.
	TunnelWithoutSNI Action
	// SNITimeout is how long to wait for a tunnel's ClientHello.
	SNITimeout time.Duration
	// CutTunnels closes open tunnels whose decision becomes block at a
	// policy transition, rather than letting them run until they end.
	CutTunnels bool
	// Intercept lists the hosts whose TLS is terminated and inspected.
	Intercept Intercept
}

// Intercept is the [tls.intercept] table. Interception is on iff Hosts is
// not empty. The loader resolves the file paths but reads none of them:
// the proxy loads the CA and the roots.
type Intercept struct {
	// Hosts are the host patterns to intercept, as written, in the
	// catalog syntax: an exact host, "*.suffix" or a label wildcard.
	Hosts []string
	// CACert and CAKey are the PEM files of the CA that signs the
	// certificates shown to clients. Relative paths in the policy are
	// resolved against the policy file's directory, as catalog paths are;
	// like those they are slash-separated names in the policy's Source.
	CACert, CAKey string
	// UpstreamCA are PEM files trusted for verifying upstream servers in
	// addition to the system roots, resolved like CACert.
	UpstreamCA []string

	hosts *hostMatcher // nil when interception is off
}

// SNI timeout bounds and default.
const (
	DefaultSNITimeout = 5 * time.Second
	minSNITimeout     = 100 * time.Millisecond
	maxSNITimeout     = 60 * time.Second
)

type tlsFile struct {
	TunnelWithoutSNI string        `toml:"tunnel_without_sni"`
	SNITimeout       string        `toml:"sni_timeout"`
	CutTunnels       *bool         `toml:"cut_tunnels"` // nil: not set, default true
	Intercept        interceptFile `toml:"intercept"`
}

type interceptFile struct {
	Hosts      []string `toml:"hosts"`
	CACert     string   `toml:"ca_cert"`
	CAKey      string   `toml:"ca_key"`
	UpstreamCA []string `toml:"upstream_ca"`
}

// Intercepts reports whether TLS to host is to be intercepted. The host is
// canonicalised as Decide does (case, one trailing dot, IPv6 brackets,
// Unicode). It is false when interception is off or the host has no
// canonical form, and it does not allocate for ASCII hosts.
func (p *Policy) Intercepts(host string) bool {
	m := p.TLS.Intercept.hosts
	if m == nil {
		return false
	}
	var buf hostBuf
	hs, hb, err := canonicalHost(&buf, host)
	if err != nil {
		return false
	}
	var t *target
	if hb != nil {
		t, _ = match(m, hb, 0, "")
	} else {
		t, _ = match(m, hs, 0, "")
	}
	return t != nil
}

// parseTLS validates the [tls] table.
func (f *fileCtx) parseTLS(tf tlsFile) TLSSettings {
	s := TLSSettings{TunnelWithoutSNI: Log, SNITimeout: DefaultSNITimeout, CutTunnels: true}
	if tf.TunnelWithoutSNI != "" {
		if a, ok := ParseAction(tf.TunnelWithoutSNI); ok {
			s.TunnelWithoutSNI = a
		} else {
			f.errorf("tls.tunnel_without_sni", "unknown action %q: want allow, log or block", tf.TunnelWithoutSNI)
		}
	}
	if tf.SNITimeout != "" {
		d, err := time.ParseDuration(tf.SNITimeout)
		switch {
		case err != nil:
			f.errorf("tls.sni_timeout", "sni_timeout %q: want a duration such as \"5s\" or \"500ms\"", tf.SNITimeout)
		case d < minSNITimeout || d > maxSNITimeout:
			f.errorf("tls.sni_timeout", "sni_timeout %s is out of range: want %s to %s", d, minSNITimeout, maxSNITimeout)
		default:
			s.SNITimeout = d
		}
	}
	if tf.CutTunnels != nil {
		s.CutTunnels = *tf.CutTunnels
	}
	s.Intercept = f.parseIntercept(tf.Intercept)
	return s
}

func (f *fileCtx) parseIntercept(inf interceptFile) Intercept {
	const key = "tls.intercept"
	ic := Intercept{Hosts: inf.Hosts}
	for j, h := range inf.Hosts {
		hp, err := parseHostPattern(h)
		if err != nil {
			f.errorf(key+".hosts", "%v", err)
			continue
		}
		if ic.hosts == nil {
			ic.hosts = newHostMatcher()
		}
		if !ic.hosts.add(hp, target{}) {
			f.errorf(key+".hosts", "host pattern %q listed twice (entry %d)", h, j+1)
		}
	}
	if len(inf.Hosts) > 0 {
		var missing []string
		if inf.CACert == "" {
			missing = append(missing, "ca_cert")
		}
		if inf.CAKey == "" {
			missing = append(missing, "ca_key")
		}
		if len(missing) > 0 {
			f.errorf(key+".hosts", "intercepting hosts needs the CA that signs their certificates: add %s", strings.Join(missing, " and "))
		}
	} else {
		// Without hosts nothing is intercepted, and a CA named anyway
		// suggests the operator believes otherwise.
		for _, k := range []struct {
			name string
			set  bool
		}{{"ca_cert", inf.CACert != ""}, {"ca_key", inf.CAKey != ""}, {"upstream_ca", len(inf.UpstreamCA) > 0}} {
			if k.set {
				f.errorf(key+"."+k.name, "%s without hosts: nothing is intercepted until hosts lists the hosts to intercept", k.name)
			}
		}
	}
	ic.CACert, ic.CAKey = f.resolvePath(inf.CACert), f.resolvePath(inf.CAKey)
	for _, c := range inf.UpstreamCA {
		if c == "" {
			f.errorf(key+".upstream_ca", "empty path in upstream_ca")
			continue
		}
		ic.UpstreamCA = append(ic.UpstreamCA, f.resolvePath(c))
	}
	return ic
}

// resolvePath resolves a file named in the policy: a relative name is
// relative to the policy file's directory, as catalogs are. "" stays "".
func (f *fileCtx) resolvePath(name string) string {
	if name == "" || path.IsAbs(name) {
		return name
	}
	return path.Join(path.Dir(f.name), name)
}
