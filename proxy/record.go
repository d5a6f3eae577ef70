package proxy

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/feedgate/feedgate/proxy/accesslog"
)

// record is one request's decision record while it is being served: the
// typed access-log record, and what the proxy needs to finish it.
type record struct {
	accesslog.Record
	st    *state    // the policy the request is decided and counted under
	start time.Time // for the duration and the histogram
	// live is the request's entry in the live set, left after the record
	// is written, so that shutdown waits for the record.
	live       cuttable
	clientGone bool // the client closed the request before the answer
	counted    bool // the decision is in feedgate_requests_total
	finished   bool
	// clientErr: reading the client's request body failed. The body is
	// read by net/http's transport goroutine, which may still run when
	// the handler ends, so it and bodySent are atomics.
	clientErr atomic.Bool
	bodySent  atomic.Int64
	ex        *exchange // the live exchange of a forwarded request
	streamed  bool      // the response body's length is unknown: flush it as it comes
	// Bytes of an upgraded connection, copied by goroutines of goproxy.
	upgradedSent, upgradedReceived atomic.Int64
}

// begin starts the record of a request that arrived now under the current
// policy. Every path that begins a record defers finish on it, so that no
// path can end without one.
func (s *Server) begin(kind string, client netip.Addr, method, host string, port int) *record {
	rec := &record{st: s.state.Load(), start: time.Now()}
	rec.Kind, rec.Client, rec.Method, rec.Host, rec.Port = kind, client, method, host, port
	return rec
}

// finish writes the decision record, once, and counts and times it: every
// decided request, blocked ones included, is counted and in the duration
// histogram exactly once. A record finished before anything was said to
// the client (a malformed request answered by net/http itself) still
// reaches the log.
func (s *Server) finish(rec *record) {
	if rec.finished {
		return
	}
	rec.finished = true
	st := rec.st
	// A decided request that ended before it was counted (a tunnel whose
	// dial failed) is counted here, so that every decision is counted once.
	s.count(rec)
	elapsed := time.Since(rec.start)
	switch rec.Kind {
	case accesslog.KindConnect:
		s.m.DurationConnect.Observe(elapsed.Seconds())
	case accesslog.KindTransparent:
		s.m.DurationTransparent.Observe(elapsed.Seconds())
	default:
		s.m.DurationHTTP.Observe(elapsed.Seconds())
	}
	rec.Time, rec.Duration, rec.Policy = time.Now(), elapsed, st.policy.Name
	if err := s.log.Write(&rec.Record); err != nil {
		s.errLog.Warn("decision log write failed", "error", err)
	}
	if rec.live != nil {
		s.live.remove(rec.live)
	}
}
