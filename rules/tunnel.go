package rules

// NoSNIRule is the Decision.Rule of a tunnel whose action was raised by the
// tunnel_without_sni setting rather than by a rule, and NoSNIRuleName the
// name reported for it. Decide never returns it; DecideTunnel does.
const (
	NoSNIRule     = -2
	NoSNIRuleName = "tunnel_without_sni"
)

// Tunnel is a CONNECT tunnel to decide: its target, and what its client's
// first bytes said.
type Tunnel struct {
	// Target is the CONNECT host and port, the client and the instant.
	Target Request
	// SNI is the canonical server name of the tunnel's ClientHello, and
	// RetrySNI that of a second ClientHello after a HelloRetryRequest; ""
	// for none.
	SNI, RetrySNI string
	// NoSNI reports a tunnel without a usable server name: not TLS, a
	// ClientHello without one, or no ClientHello in time.
	NoSNI bool
}

// stricter reports whether a is a stricter answer than b: block over log
// over allow, and a block reported in report mode over a plain log.
func stricter(a, b Decision) bool {
	if a.Action != b.Action {
		return a.Action > b.Action
	}
	return a.Reported && !b.Reported
}

// DecideTunnel decides a tunnel: the CONNECT host and each server name are
// decided, and the stricter answer wins; on a tie a vendor's answer is kept,
// so that a Kaspersky name behind an innocuous CONNECT host is Kaspersky
// traffic in the log and the counters, whatever the action. A tunnel
// without a usable server name is then raised to tunnel_without_sni, which
// report mode turns from block into log like any block.
func (p *Policy) DecideTunnel(t Tunnel) Decision {
	req := t.Target
	d := p.Decide(req)
	for _, name := range [...]string{t.SNI, t.RetrySNI} {
		if name == "" {
			continue
		}
		req.Host = name
		if o := p.Decide(req); stricter(o, d) || !stricter(d, o) && d.Class == 0 && o.Class != 0 {
			d = o
		}
	}
	if floor := p.TunnelWithoutSNI; t.NoSNI && floor > d.Action {
		d.Rule, d.RuleName = NoSNIRule, NoSNIRuleName
		d.Action, d.Reported = p.effective(floor)
	}
	return d
}
