package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/feedgate/feedgate/metrics"
)

// DestinationError is a dial refused by the destination policy.
type DestinationError struct {
	Addr   netip.AddrPort
	Reason string // e.g. "loopback", "link-local", "private", "feedgate itself"
}

func (e *DestinationError) Error() string {
	return fmt.Sprintf("destination %s refused: %s address", e.Addr, e.Reason)
}

// refuse answers a request refused by the access rules: 403 with the reason
// in X-Feedgate-Reason, counted, and recorded. A refused CONNECT gets the
// reply in one write and a lingering close, like a policy block.
func (s *Server) refuse(st *state, w http.ResponseWriter, r *http.Request, rec *record, reason, detail string, start time.Time) {
	s.m.Rejected(reason)
	rec.status, rec.rejected = http.StatusForbidden, reason
	body := "feedgate: request refused: " + detail + "\n"
	if r.Method == http.MethodConnect {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			_, _ = io.WriteString(conn, "HTTP/1.1 403 Forbidden\r\n"+
				"Content-Type: text/plain; charset=utf-8\r\n"+
				"Content-Length: "+strconv.Itoa(len(body))+"\r\n"+
				"X-Feedgate-Reason: "+reason+"\r\n"+
				"Cache-Control: no-store\r\n"+
				"Connection: close\r\n\r\n"+body)
			s.finish(st, rec, start)
			lingerClose(conn)
			return
		}
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Feedgate-Reason", reason)
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusForbidden)
	_, _ = io.WriteString(w, body)
	s.finish(st, rec, start)
}

// refuseInvalid answers 400 to a request whose target the policy cannot
// read, and records it: such a request is an evasion attempt or a broken
// client, and either is worth seeing in the log.
func (s *Server) refuseInvalid(st *state, w http.ResponseWriter, rec *record, start time.Time, detail string) {
	s.m.Rejected(metrics.RejectInvalid)
	rec.status, rec.rejected = http.StatusBadRequest, metrics.RejectInvalid
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Feedgate-Reason", metrics.RejectInvalid)
	h.Set("Connection", "close")
	w.WriteHeader(http.StatusBadRequest)
	_, _ = io.WriteString(w, "feedgate: "+detail+"\n")
	s.finish(st, rec, start)
}

// admit applies the client and port rules before anything else happens. It
// reports false when it has answered the request itself.
func (s *Server) admit(st *state, w http.ResponseWriter, r *http.Request, rec *record, start time.Time) bool {
	a := &st.policy.Access
	if !a.ClientAllowed(rec.client) {
		s.refuse(st, w, r, rec, metrics.RejectClient, "client "+clientString(rec.client)+" is not in allowed_clients", start)
		return false
	}
	if r.Method == http.MethodConnect && !a.ConnectPortAllowed(rec.port) {
		s.refuse(st, w, r, rec, metrics.RejectPort, "CONNECT to port "+strconv.Itoa(rec.port)+" is not allowed (connect_ports: "+a.ConnectPorts()+")", start)
		return false
	}
	if r.Method != http.MethodConnect && r.URL.Scheme == "https" && !a.ConnectPortAllowed(rec.port) {
		// feedgate itself speaks TLS upstream: the TLS ports apply.
		s.refuse(st, w, r, rec, metrics.RejectPort, "https to port "+strconv.Itoa(rec.port)+" is not allowed (connect_ports: "+a.ConnectPorts()+")", start)
		return false
	}
	if r.Method != http.MethodConnect && r.URL.Scheme != "https" && !a.HTTPPortAllowed(rec.port) {
		s.refuse(st, w, r, rec, metrics.RejectPort, "plain HTTP to port "+strconv.Itoa(rec.port)+" is not allowed (http_ports: "+a.HTTPPorts()+")", start)
		return false
	}
	return true
}
