package config

import (
	"strings"
	"time"
)

// TLS are the tunnel settings of the [tls] table. (tunnel_without_sni
// is policy: rules.Policy.TunnelWithoutSNI.)
type TLS struct {
	// SNITimeout is how long to wait for a tunnel's ClientHello.
	SNITimeout time.Duration
	// CutTunnels closes open tunnels whose decision becomes block at a
	// policy transition, rather than letting them run until they end.
	CutTunnels bool
}

// Intercept is the CA side of the [tls.intercept] table: interception is
// on iff the policy lists hosts (rules.Policy.InterceptHosts). The loader
// resolves the file paths but reads none of them: the proxy loads the CA
// and the roots.
type Intercept struct {
	// On is set when the policy intercepts any host, so that turning
	// interception on counts as a change of this section.
	On bool
	// CACert and CAKey are the PEM files of the CA that signs the
	// certificates shown to clients. Relative paths are resolved against
	// the configuration file's directory, as catalog paths are; like those
	// they are slash-separated names in the configuration's Source.
	CACert, CAKey string
	// UpstreamCA are PEM files trusted for verifying upstream servers in
	// addition to the system roots, resolved like CACert.
	UpstreamCA []string
}

// SNI timeout bounds and default.
const (
	DefaultSNITimeout = 5 * time.Second
	minSNITimeout     = 100 * time.Millisecond
	maxSNITimeout     = 60 * time.Second
)

type tlsFile struct {
	SNITimeout string        `toml:"sni_timeout"`
	CutTunnels *bool         `toml:"cut_tunnels"` // nil: not set, default true
	Intercept  interceptFile `toml:"intercept"`
}

type interceptFile struct {
	Hosts      []string `toml:"hosts"`
	CACert     string   `toml:"ca_cert"`
	CAKey      string   `toml:"ca_key"`
	UpstreamCA []string `toml:"upstream_ca"`
}

// parseTLS validates the [tls] table's settings.
func (f *fileCtx) parseTLS(tf tlsFile) TLS {
	s := TLS{SNITimeout: DefaultSNITimeout, CutTunnels: true}
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
	return s
}

// parseIntercept validates the CA side of [tls.intercept]; on says whether
// the policy intercepts any host.
func (f *fileCtx) parseIntercept(inf interceptFile, on bool) Intercept {
	const key = "tls.intercept"
	ic := Intercept{On: on}
	if on {
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
