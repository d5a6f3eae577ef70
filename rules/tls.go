package rules

// tlsFile is the policy's part of the [tls] table; the rest (timeouts,
// cut_tunnels, the interception CA) is configuration (rules/config).
type tlsFile struct {
	TunnelWithoutSNI string `toml:"tunnel_without_sni"`
	Intercept        struct {
		Hosts []string `toml:"hosts"`
	} `toml:"intercept"`
}

// Intercepts reports whether TLS to host is to be intercepted. The host is
// canonicalised as Decide does (case, one trailing dot, IPv6 brackets,
// Unicode). It is false when interception is off or the host has no
// canonical form, and it does not allocate for ASCII hosts.
func (p *Policy) Intercepts(host string) bool {
	m := p.intercept
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

// parseTLS reads the policy's part of the [tls] table.
func (f *fileCtx) parseTLS(p *Policy, tf tlsFile) {
	p.TunnelWithoutSNI = Log
	if tf.TunnelWithoutSNI != "" {
		if a, ok := ParseAction(tf.TunnelWithoutSNI); ok {
			p.TunnelWithoutSNI = a
		} else {
			f.errorf("tls.tunnel_without_sni", "unknown action %q: want allow, log or block", tf.TunnelWithoutSNI)
		}
	}
	const key = "tls.intercept"
	p.InterceptHosts = tf.Intercept.Hosts
	for j, h := range tf.Intercept.Hosts {
		hp, err := parseHostPattern(h)
		if err != nil {
			f.errorf(key+".hosts", "%v", err)
			continue
		}
		if p.intercept == nil {
			p.intercept = newHostMatcher()
		}
		if !p.intercept.add(hp, target{}) {
			f.errorf(key+".hosts", "host pattern %q listed twice (entry %d)", h, j+1)
		}
	}
}
