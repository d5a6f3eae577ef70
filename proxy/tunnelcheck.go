package proxy

import (
	"errors"
	"io"
	"os"
	"time"

	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/rules"
)

// tlsAccessDenied is a plaintext TLS alert record (fatal, access_denied),
// sent before closing a tunnel whose ClientHello names a blocked host, so
// that clients report "access denied" rather than a bare connection reset.
// It is valid before the handshake, as a server's early alerts are.
var tlsAccessDenied = [...]byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49}

// stricter reports whether a is a stricter answer than b: block over log
// over allow, and a block reported in report mode over a plain log.
func stricter(a, b rules.Decision) bool {
	if a.Action != b.Action {
		return a.Action > b.Action
	}
	return a.Reported && !b.Reported
}

// tunnelInputs are what a tunnel was decided on, kept so that it can be
// decided again when the policy changes.
type tunnelInputs struct {
	req   rules.Request // the CONNECT target, its client and port
	sni   string        // the ClientHello's server name, "" if none
	noSNI bool          // not TLS, no server name, or no ClientHello in time
}

// decideTunnel decides a tunnel at an instant: the CONNECT host and the
// SNI name are each decided, the stricter answer wins, and a tunnel
// without a usable server name is raised to tunnel_without_sni.
func decideTunnel(p *rules.Policy, in tunnelInputs, at time.Time) rules.Decision {
	req := in.req
	req.Time = at
	d := p.Decide(req)
	if in.sni != "" {
		req.Host = in.sni
		// On a tie the vendor's answer is kept: a Kaspersky name behind an
		// innocuous CONNECT host is Kaspersky traffic in the log and the
		// counters, whatever the action.
		if o := p.Decide(req); stricter(o, d) || !stricter(d, o) && d.Class == 0 && o.Class != 0 {
			d = o
		}
	}
	if floor := p.TLS.TunnelWithoutSNI; in.noSNI && floor > d.Action {
		d.Rule, d.RuleName, d.Action, d.Reported = rules.NoSNIRule, rules.NoSNIRuleName, floor, false
		if p.Mode == rules.Report && floor == rules.Block {
			d.Action, d.Reported = rules.Log, true
		}
	}
	return d
}

// checkHello reads the client's first bytes, up to a whole ClientHello or
// sni_timeout, decides the tunnel again with the server name it carries,
// and returns the bytes read so that they go upstream unchanged. It
// returns ok false when the tunnel must close: the decision is block, or
// the client connection failed.
func (s *Server) checkHello(st *state, t *tunnel, rec *record, early []byte) (first []byte, ok bool) {
	p := st.policy
	buf := make([]byte, len(early), max(len(early), 4096))
	copy(buf, early)
	_ = t.client.SetReadDeadline(time.Now().Add(p.TLS.SNITimeout))
	var name []byte
	result := ""
	for result == "" {
		n, hs := clientHelloServerName(buf)
		switch {
		case hs == helloComplete && n == nil:
			result = metrics.SNINone
		case hs == helloComplete:
			name = n
			result = metrics.SNIMatch
		case hs == helloNotTLS || len(buf) >= maxClientHello:
			result = metrics.SNINotTLS
		}
		if result != "" {
			break
		}
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, min(cap(buf), maxClientHello-len(buf)))...)[:len(buf)]
		}
		m, err := t.client.Read(buf[len(buf):min(cap(buf), maxClientHello)])
		buf = buf[:len(buf)+m]
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			result = metrics.SNITimeout
		case errors.Is(err, io.EOF) && len(buf) > 0:
			result = metrics.SNINotTLS
		case errors.Is(err, io.EOF):
			// The client half-closed before saying anything: there is
			// no name to check, so the tunnel is a tunnel without one;
			// if that is allowed the copy loop passes the half-close on.
			_ = t.client.SetReadDeadline(time.Time{})
			s.m.SNICheck(metrics.SNINone)
			rec.sniResult = metrics.SNINone
			return nil, s.settleTunnel(t, rec, tunnelInputs{req: t.in.req, noSNI: true})
		default:
			return nil, false // the connection failed or was closed
		}
	}
	_ = t.client.SetReadDeadline(time.Time{})
	in := tunnelInputs{req: t.in.req, noSNI: result != metrics.SNIMatch}
	if name != nil {
		in.sni = string(name)
		if a, err := rules.CanonicalHost(in.sni); err != nil || !sameHost(a, t.in.req.Host) {
			result = metrics.SNIMismatch
		}
	}
	s.m.SNICheck(result)
	rec.sni, rec.sniResult = in.sni, result
	if !s.settleTunnel(t, rec, in) {
		if result == metrics.SNIMatch || result == metrics.SNIMismatch || result == metrics.SNINone {
			_ = t.client.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = t.client.Write(tlsAccessDenied[:])
		}
		rec.closed = closedBlocked
		return nil, false
	}
	return buf, true
}

// closedBlocked is the record's "closed" value for a tunnel refused after it
// was accepted (by its ClientHello): it got a 200 and then a close.
const closedBlocked = "blocked"

// settleTunnel makes the tunnel's final decision from its inputs, under
// the policy current now (not the one of the CONNECT: a reload may have
// landed while the ClientHello was awaited), counts it, and reports whether
// the tunnel may carry bytes.
//
// A policy swap or transition recheck that runs while the tunnel settles
// skips it if it is not settled yet; so the decision is made again until no
// swap or recheck started in between. Either the recheck saw the tunnel
// settled and decided it itself, or the loop sees the new generation.
func (s *Server) settleTunnel(t *tunnel, rec *record, in tunnelInputs) bool {
	var st *state
	var d rules.Decision
	for {
		gen := s.gen.Load()
		st = s.state.Load()
		at := s.clock.Now()
		if last := time.Unix(0, s.recheckAt.Load()); at.Before(last) {
			at = last // a transition recheck already decided at that instant
		}
		d = decideTunnel(st.policy, in, at)
		t.mu.Lock()
		t.in, t.settled, t.st = in, true, st
		t.mu.Unlock()
		if s.gen.Load() == gen {
			break
		}
	}
	t.class.Store(int32(d.Class))
	rec.decision = d
	s.count(st, rec)
	return d.Action != rules.Block
}

func sameHost(canonical, connectHost string) bool {
	h, err := rules.CanonicalHost(connectHost)
	return err == nil && h == canonical
}

// count counts a decided request once.
func (s *Server) count(st *state, rec *record) {
	if rec.decided && !rec.counted {
		rec.counted = true
		st.counters.Request(rec.decision)
		if inv := s.opts.Inventory; inv != nil && rec.decision.Class != 0 {
			inv.Record(rec.client, rec.decision.Vendor, rec.decision.Category, rec.decision.Action.String(), rec.decision.RuleName)
		}
	}
}

// recheckTunnels decides every open connection again at an instant and
// cuts those whose answer is now block. It runs when a rule window opens
// or closes and after a reload.
func (s *Server) recheckTunnels(st *state, at time.Time) {
	if !st.policy.TLS.CutTunnels {
		return
	}
	var cut []cuttable
	for _, c := range s.live.list() {
		if d, ok := c.redecide(st.policy, at); ok && d.Action == rules.Block {
			c.markCut(d)
			cut = append(cut, c)
		}
	}
	for _, c := range cut {
		_ = c.Close()
	}
}

// scheduleRecheck arms one timer for the policy's next transition after
// now. At most one timer is armed; a newer policy replaces it.
func (s *Server) scheduleRecheck(st *state) {
	s.recheck.Lock()
	defer s.recheck.Unlock()
	if s.recheck.stop != nil {
		s.recheck.stop()
		s.recheck.stop = nil
	}
	if s.recheck.closed {
		return
	}
	now := s.clock.Now()
	next, ok := st.policy.NextTransition(now)
	if !ok {
		return
	}
	s.recheck.stop = s.clock.AfterFunc(next.Sub(now), func() {
		if s.state.Load() != st {
			return // a reload replaced the policy and its timer
		}
		// The timer may run a hair before the policy clock reaches the
		// instant (they are different clocks): decide at the instant.
		at := s.clock.Now()
		if at.Before(next) {
			at = next
		}
		s.recheckAt.Store(at.UnixNano())
		s.gen.Add(1)
		s.recheckTunnels(st, at)
		s.scheduleRecheck(st)
	})
}

// stopRecheck disarms the timer for good (shutdown).
func (s *Server) stopRecheck() {
	s.recheck.Lock()
	defer s.recheck.Unlock()
	s.recheck.closed = true
	if s.recheck.stop != nil {
		s.recheck.stop()
	}
}
