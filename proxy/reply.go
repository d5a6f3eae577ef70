package proxy

import (
	"io"
	"net/http"
	"strconv"

	"github.com/feedgate/feedgate/metrics"
)

// refuseHTTP counts and records a refusal and answers it on the proxy
// port. A refused CONNECT gets the reply in one write and a lingering
// close, like a policy block, so that a client that pipelined its
// ClientHello still reads it.
func (s *Server) refuseHTTP(w http.ResponseWriter, r *http.Request, rec *record, rf *refusal) {
	s.reject(rec, rf)
	h := w.Header()
	switch rf.reason {
	case metrics.RejectInvalid:
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("X-Feedgate-Reason", rf.reason)
		h.Set("Connection", "close")
		w.WriteHeader(rf.status)
		_, _ = io.WriteString(w, "feedgate: "+rf.detail+"\n")
	case metrics.RejectLimit, metrics.RejectClientLimit:
		h.Set("Retry-After", "1")
		h.Set("X-Feedgate-Reason", rf.reason)
		h.Set("Connection", "close")
		http.Error(w, "feedgate: "+rf.detail, rf.status)
	default:
		body := "feedgate: request refused: " + rf.detail + "\n"
		if r.Method == http.MethodConnect {
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				_, _ = io.WriteString(conn, "HTTP/1.1 403 Forbidden\r\n"+
					"Content-Type: text/plain; charset=utf-8\r\n"+
					"Content-Length: "+strconv.Itoa(len(body))+"\r\n"+
					"X-Feedgate-Reason: "+rf.reason+"\r\n"+
					"Cache-Control: no-store\r\n"+
					"Connection: close\r\n\r\n"+body)
				// The record before the linger, which may take seconds.
				s.finish(rec)
				lingerClose(conn)
				return
			}
		}
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("X-Feedgate-Reason", rf.reason)
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(rf.status)
		_, _ = io.WriteString(w, body)
	}
}

// refuseMalformed records a request too malformed to name a target the
// policy could decide, as rejected "invalid", and answers it with
// net/http's plain error reply.
func (s *Server) refuseMalformed(w http.ResponseWriter, rec *record, status int, msg string, closeConn bool) {
	s.reject(rec, invalid(status, msg))
	if closeConn {
		w.Header().Set("Connection", "close")
	}
	http.Error(w, msg, status)
}
