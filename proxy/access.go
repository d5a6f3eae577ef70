package proxy

import (
	"net/http"
	"net/netip"
	"strconv"

	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/rules/config"
)

// Admission comes before any decision: is the client allowed, may it
// reach this port, is there room for another connection or tunnel. It
// takes addresses and ports, not HTTP requests, so that every way in (the
// proxy port's requests and CONNECTs, and connections that arrive without
// either) is admitted by the same code; each caller answers a refusal in
// its own protocol.

// refusal is admission's answer to what it refused: the reason (a
// feedgate_rejected_total label and the record's "rejected"), the status
// an HTTP client gets, and a sentence for the reply body.
type refusal struct {
	reason string
	status int
	detail string
}

// targetPorts says which port list a target is checked against: a target
// feedgate reaches over TLS (CONNECT, https://) is checked against
// connect_ports, plain HTTP against http_ports. what names the target in
// the refusal ("CONNECT", "https", "plain HTTP").
type targetPorts struct {
	tls  bool
	what string
}

var (
	portsConnect   = targetPorts{tls: true, what: "CONNECT"}
	portsHTTPS     = targetPorts{tls: true, what: "https"}
	portsPlainHTTP = targetPorts{tls: false, what: "plain HTTP"}
)

// admit applies the client and port rules to a target. It returns nil if
// the target may go on to the policy.
func admit(a *config.Access, client netip.Addr, port int, tp targetPorts) *refusal {
	if !a.ClientAllowed(client) {
		return &refusal{metrics.RejectClient, http.StatusForbidden, "client " + clientString(client) + " is not in allowed_clients"}
	}
	if tp.tls && !a.ConnectPortAllowed(port) {
		return &refusal{metrics.RejectPort, http.StatusForbidden, tp.what + " to port " + strconv.Itoa(port) + " is not allowed (connect_ports: " + a.ConnectPorts() + ")"}
	}
	if !tp.tls && !a.HTTPPortAllowed(port) {
		return &refusal{metrics.RejectPort, http.StatusForbidden, tp.what + " to port " + strconv.Itoa(port) + " is not allowed (http_ports: " + a.HTTPPorts() + ")"}
	}
	return nil
}

// invalid is the refusal of a request whose target the policy cannot read:
// an evasion attempt or a broken client, either worth seeing in the log.
func invalid(status int, detail string) *refusal {
	return &refusal{metrics.RejectInvalid, status, detail}
}

// takeTunnelSlot takes a tunnel slot for a CONNECT or a websocket upgrade,
// or refuses it: 503 beyond max_tunnels, 429 beyond
// max_connections_per_client. A slot taken must be given back with
// releaseTunnelSlot. The connection the tunnel came on is still counted as
// a connection until it is hijacked (or for as long as it carries a
// websocket): one more than the per-client cap is that very connection.
func (s *Server) takeTunnelSlot(lim *config.Limits, client netip.Addr) *refusal {
	n := s.tunnelSlots.Add(1)
	pc := s.perClient.add(client, 1)
	switch {
	case n > int64(lim.MaxTunnels):
		s.releaseTunnelSlot(client)
		return &refusal{metrics.RejectLimit, http.StatusServiceUnavailable, "too many tunnels open"}
	case lim.MaxConnectionsPerClient > 0 && pc > lim.MaxConnectionsPerClient+1:
		s.releaseTunnelSlot(client)
		return &refusal{metrics.RejectClientLimit, http.StatusTooManyRequests, "too many connections from this client"}
	}
	return nil
}

func (s *Server) releaseTunnelSlot(client netip.Addr) {
	s.tunnelSlots.Add(-1)
	s.perClient.add(client, -1)
}

// openConn admits a new client connection under max_connections and
// max_connections_per_client, or refuses it; a connection admitted must be
// given back with closeConn (a refused one too: the count is taken first,
// so that concurrent arrivals cannot all squeeze under the cap).
func (s *Server) openConn(client netip.Addr) *refusal {
	n := s.conns.Add(1)
	lim := &s.state.Load().cfg.Limits
	pc := s.perClient.add(client, 1)
	switch {
	case n+s.tunnelSlots.Load() > int64(lim.MaxConnections):
		return &refusal{metrics.RejectLimit, http.StatusServiceUnavailable, "too many connections open"}
	case lim.MaxConnectionsPerClient > 0 && pc > lim.MaxConnectionsPerClient:
		return &refusal{metrics.RejectClientLimit, http.StatusTooManyRequests, "too many connections from this client"}
	}
	return nil
}

func (s *Server) closeConn(client netip.Addr) {
	s.conns.Add(-1)
	s.perClient.add(client, -1)
}

// reject counts a refusal and puts it in the record.
func (s *Server) reject(rec *record, rf *refusal) {
	s.m.Rejected(rf.reason)
	rec.Status, rec.Rejected = rf.status, rf.reason
}

func clientString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
