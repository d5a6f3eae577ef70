package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"time"

	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/proxy/accesslog"
	"github.com/feedgate/feedgate/proxy/internal/hello"
	"github.com/feedgate/feedgate/rules"
)

// tlsAccessDenied is a plaintext TLS alert record (fatal, access_denied),
// sent before closing a tunnel whose ClientHello names a blocked host, so
// that clients report "access denied" rather than a bare connection reset.
// It is valid before the handshake, as a server's early alerts are.
var tlsAccessDenied = [...]byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49}

// decideTunnel decides a tunnel's inputs at an instant.
func decideTunnel(p *rules.Policy, in rules.Tunnel, at time.Time) rules.Decision {
	in.Target.Time = at
	return p.DecideTunnel(in)
}

// helloBufSize is the size of a pooled handshake buffer: a ClientHello or a
// server's first flight mostly fits; a larger one grows out of the pool.
const helloBufSize = 4096

// helloBuf returns an empty handshake buffer of capacity helloBufSize.
func (s *Server) helloBuf() []byte {
	if p, ok := s.helloBufs.Get().(*[helloBufSize]byte); ok {
		return p[:0]
	}
	return new([helloBufSize]byte)[:0]
}

// putHelloBuf gives back a buffer of helloBuf once nothing refers to its
// bytes; a buffer that grew elsewhere is left to the collector.
func (s *Server) putHelloBuf(b []byte) {
	if cap(b) == helloBufSize {
		s.helloBufs.Put((*[helloBufSize]byte)(b[:helloBufSize]))
	}
}

// checkHello reads the client's first bytes, up to a whole ClientHello or
// sni_timeout, decides the tunnel again with the server name it carries,
// and returns the bytes read so that they go upstream unchanged. It
// returns ok false when the tunnel must close: the decision is block, or
// the client connection failed.
func (s *Server) checkHello(st *state, t *tunnel, rec *record, early []byte) (first []byte, ok bool) {
	var buf []byte
	if len(early) <= helloBufSize {
		buf = append(s.helloBuf(), early...)
	} else {
		buf = bytes.Clone(early)
	}
	var sc hello.Scanner
	var name []byte
	timeout := st.cfg.TLS.SNITimeout
	if t.prefetched {
		// The transparent listener already waited for the hello and
		// decided on it; what it read is all there is to check.
		timeout = 0
	}
	buf, hs, err := readHello(t.client, buf, timeout, func(b []byte) hello.Status {
		var st hello.Status
		name, st = sc.ClientHelloServerName(b)
		return st
	})
	result := ""
	switch {
	case hs == hello.Complete && name == nil:
		result = metrics.SNINone
	case hs == hello.Complete:
		result = metrics.SNIMatch
	case hs == hello.NotTLS:
		result = metrics.SNINotTLS
	case errors.Is(err, os.ErrDeadlineExceeded):
		result = metrics.SNITimeout
	case errors.Is(err, io.EOF) && len(buf) > 0:
		result = metrics.SNINotTLS
	case errors.Is(err, io.EOF):
		// The client half-closed before saying anything: there is no
		// name to check, so the tunnel is a tunnel without one; if that
		// is allowed the copy loop passes the half-close on.
		s.m.SNICheck(metrics.SNINone)
		rec.SNIResult = metrics.SNINone
		return nil, s.settleTunnel(t, rec, rules.Tunnel{Target: t.in.Target, NoSNI: true}, true)
	default:
		return nil, false // the connection failed or was closed
	}
	in := rules.Tunnel{Target: t.in.Target, NoSNI: result != metrics.SNIMatch}
	if name != nil {
		// The record keeps the name as sent; the decision uses the host
		// it names, as the servers read it (one trailing dot and a
		// ":port" stripped, case folded, IDNA).
		rec.SNI = string(name)
		canon, _ := hello.CanonicalSNI(name) // the parser only returns usable names
		in.SNI = canon
		// A transparent tunnel's target is an address, not a name the
		// client claimed: its name is checked against the address by
		// host verification instead.
		if !t.transparent && !sameHost(canon, t.in.Target.Host) {
			result = metrics.SNIMismatch
		}
	}
	if hs == hello.Complete {
		// After a HelloRetryRequest the client sends a second
		// ClientHello; t.hello tells the copy loop where it starts.
		if end, st := hello.ClientHelloEnd(buf); st == hello.Complete {
			t.hello = &helloState{after: bytes.Clone(buf[end:])}
		}
	}
	s.m.SNICheck(result)
	rec.SNIResult = result
	// A TLS tunnel is counted after checkRetry, which may make its
	// decision stricter; a refused one at once.
	if !s.settleTunnel(t, rec, in, t.hello == nil) {
		if result == metrics.SNIMatch || result == metrics.SNIMismatch || result == metrics.SNINone {
			_ = t.client.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = t.client.Write(tlsAccessDenied[:])
		}
		rec.Closed = accesslog.ClosedBlocked
		return nil, false
	}
	return buf, true
}

// readHello reads c into buf, with a deadline timeout away, until parse
// finds the bytes complete or not TLS, or hello.MaxClientHello bytes are
// there (then not TLS). err is the read error that ended it early.
func readHello(c net.Conn, buf []byte, timeout time.Duration, parse func([]byte) hello.Status) ([]byte, hello.Status, error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	for {
		if len(buf) > 0 {
			switch st := parse(buf); {
			case st != hello.Incomplete:
				return buf, st, nil
			case len(buf) >= hello.MaxClientHello:
				return buf, hello.NotTLS, nil
			}
		}
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, min(max(cap(buf), 4096), hello.MaxClientHello-len(buf)))...)[:len(buf)]
		}
		m, err := c.Read(buf[len(buf):min(cap(buf), hello.MaxClientHello)])
		buf = buf[:len(buf)+m]
		if err != nil {
			if m > 0 {
				if st := parse(buf); st != hello.Incomplete {
					return buf, st, nil
				}
			}
			return buf, hello.Incomplete, err
		}
	}
}

// helloState is what the copy loop needs to follow a TLS handshake past a
// HelloRetryRequest: the client's bytes after its first ClientHello (already
// sent upstream).
type helloState struct {
	after []byte
}

// serverHelloTimeout bounds the wait for the server's answer to a
// ClientHello, which decides whether a second ClientHello follows.
const serverHelloTimeout = 10 * time.Second

// checkRetry follows a TLS tunnel through the server's first answer. If it
// is a HelloRetryRequest, the client's second ClientHello, which may name
// another server, is read and the tunnel decided again with it. It relays
// the bytes it reads (counting them) and reports whether the tunnel may go
// on.
func (s *Server) checkRetry(st *state, t *tunnel, rec *record, sent, received func(int64)) bool {
	// The tunnel is counted once, with its final decision, however this
	// ends (checkHello left it uncounted).
	defer func() { s.count(rec) }()
	var sc hello.Scanner
	var hrr bool
	up, hs, err := readHello(t.upstream, s.helloBuf(), serverHelloTimeout, func(b []byte) hello.Status {
		var st hello.Status
		hrr, st = sc.ServerHelloStatus(b)
		return st
	})
	if len(up) > 0 {
		n, werr := t.client.Write(up)
		received(int64(n))
		if werr != nil {
			return false
		}
	}
	s.putHelloBuf(up)
	if hs != hello.Complete || !hrr {
		// Not a retry (or the server said nothing in time, or closed):
		// the copy loop takes over, passing on what comes.
		return err == nil || errors.Is(err, io.EOF) || errors.Is(err, os.ErrDeadlineExceeded)
	}
	var sc2 hello.Scanner
	var name []byte
	already := len(t.hello.after)
	var cbuf []byte
	if already <= helloBufSize {
		cbuf = append(s.helloBuf(), t.hello.after...)
	} else {
		cbuf = bytes.Clone(t.hello.after)
	}
	defer func() { s.putHelloBuf(cbuf) }()
	cbuf, hs, err = readHello(t.client, cbuf, st.cfg.TLS.SNITimeout, func(b []byte) hello.Status {
		var st hello.Status
		name, st = sc2.SecondClientHelloServerName(b)
		return st
	})
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, io.EOF) {
		return false
	}
	t.mu.Lock()
	in := t.in
	t.mu.Unlock()
	// Both ClientHellos are decided from now on; a second one without a
	// usable name makes the tunnel one without a name.
	if hs != hello.Complete || name == nil {
		in.NoSNI = true
	} else {
		canon, _ := hello.CanonicalSNI(name)
		in.RetrySNI = canon
		rec.SNIRetry = string(name)
		// As for the first ClientHello: a transparent tunnel's target
		// is an address, which no name matches.
		if !t.transparent && !sameHost(canon, in.Target.Host) {
			rec.SNIResult = metrics.SNIMismatch
		}
		// A transparent tunnel's second name is checked against where
		// the connection goes, as its first was (transparent_verify),
		// unless the first already failed: the record keeps that.
		if t.transparent && canon != in.SNI && rec.HostVerify == metrics.VerifyMatch {
			if rf := s.verifyHost(rec, canon, newRedirected(rec.OriginalDst)); rf != nil {
				s.reject(rec, rf)
				rec.Decided = false // refused, as a first name would be: not a decision
				denyTLS(t.client)
				return false
			}
		}
	}
	if !s.settleTunnel(t, rec, in, false) {
		_ = t.client.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = t.client.Write(tlsAccessDenied[:])
		rec.Closed = accesslog.ClosedBlocked
		return false
	}
	if b := cbuf[already:]; len(b) > 0 {
		n, werr := t.upstream.Write(b)
		sent(int64(n))
		if werr != nil {
			return false
		}
	}
	return true
}

// settleTunnel makes the tunnel's final decision from its inputs, under
// the policy current now (not the one of the CONNECT: a reload may have
// landed while the ClientHello was awaited), counts it, and reports whether
// the tunnel may carry bytes.
//
// A policy swap or transition recheck that runs while the tunnel settles
// skips it if it is not settled yet; so the decision is made again until no
// swap or recheck started in between. Either the recheck saw the tunnel
// settled and decided it itself, or the loop sees the new generation.
func (s *Server) settleTunnel(t *tunnel, rec *record, in rules.Tunnel, count bool) bool {
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
		t.in, t.settled = in, true
		t.mu.Unlock()
		if s.gen.Load() == gen {
			break
		}
	}
	t.class.Store(int32(d.Class))
	rec.Decision, rec.st = d, st
	if count || d.Action == rules.Block {
		s.count(rec)
	}
	return d.Action != rules.Block
}

func sameHost(canonical, connectHost string) bool {
	h, err := rules.CanonicalHost(connectHost)
	return err == nil && h == canonical
}

// count counts a decided request once.
func (s *Server) count(rec *record) {
	if rec.Decided && !rec.counted {
		rec.counted = true
		rec.st.counters.Request(rec.Decision)
		if inv := s.opts.Inventory; inv != nil && rec.Decision.Class != 0 {
			inv.RecordDecision(rec.Client, rec.Host, &rec.Decision)
		}
	}
}

// recheckTunnels decides every open connection again at an instant and
// cuts those whose answer is now block. It runs when a rule window opens
// or closes and after a reload.
func (s *Server) recheckTunnels(st *state, at time.Time) {
	if !st.cfg.TLS.CutTunnels {
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
