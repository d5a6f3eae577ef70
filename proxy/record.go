package proxy

import (
	"context"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/rules"
)

// statusClientClosed is logged for a request whose client went away before
// the upstream answered (nginx's convention; Squid logs it as an abort).
const statusClientClosed = 499

// record is one request's decision record: what was asked, what the policy
// said, and what happened.
type record struct {
	kind        string
	client      netip.Addr
	method      string
	host        string
	port        int
	path        string
	decision    rules.Decision
	status      int
	sent        int64 // client to upstream
	received    int64 // upstream to client
	upstreamErr string
	clientGone  bool   // the client closed the request before the answer
	decided     bool   // the policy decided (false if refused before that)
	rejected    string // access-rule refusal reason, "" if none
	closed      string // why feedgate closed a tunnel ("idle"), "" if a peer did
	counted     bool   // the decision is in feedgate_requests_total
	sni         string // a tunnel's ClientHello server name, as sent
	sni2        string // the server name of its second ClientHello (after a HelloRetryRequest)
	sniResult   string // a tunnel's SNI check result, "" if not checked
	cutRule     string // the rule that cut a tunnel at a policy change
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

// finish writes the decision record. A flagged (log) decision is written at
// warning level so that it stands out in any log pipeline.
// It also observes the request's duration, so that every decided request,
// blocked ones included, is in the histogram exactly once.
func (s *Server) finish(st *state, rec *record, start time.Time) {
	// A decided request that ended before it was counted (a tunnel whose
	// dial failed) is counted here, so that every decision is counted once.
	s.count(st, rec)
	elapsed := time.Since(start)
	if rec.kind == metrics.KindConnect {
		s.m.DurationConnect.Observe(elapsed.Seconds())
	} else {
		s.m.DurationHTTP.Observe(elapsed.Seconds())
	}
	level := slog.LevelInfo
	if rec.decided && rec.decision.Action == rules.Log || rec.rejected != "" {
		level = slog.LevelWarn
	}
	if !s.log.Enabled(context.Background(), level) {
		return
	}
	attrs := make([]slog.Attr, 0, 20)
	attrs = append(attrs,
		slog.String("kind", rec.kind),
		slog.String("client", clientString(rec.client)),
		slog.String("method", rec.method),
		slog.String("host", rec.host),
		slog.Int("port", rec.port),
	)
	if rec.kind == metrics.KindHTTP || rec.kind == KindMITM {
		attrs = append(attrs, slog.String("path", rec.path))
	}
	if rec.decided {
		attrs = append(attrs,
			slog.String("vendor", rec.decision.Vendor),
			slog.String("category", rec.decision.Category),
			slog.String("rule", rec.decision.RuleName),
			slog.String("action", rec.decision.Action.String()),
			slog.Bool("flagged", rec.decision.Action == rules.Log),
		)
		if rec.decision.Reported {
			attrs = append(attrs, slog.Bool("report_only", true))
		}
		if rec.decision.ClientGroup != "" {
			attrs = append(attrs, slog.String("client_group", rec.decision.ClientGroup))
		}
	}
	if rec.rejected != "" {
		attrs = append(attrs, slog.String("rejected", rec.rejected))
	}
	attrs = append(attrs,
		slog.Int("status", rec.status),
		slog.Int64("bytes_sent", rec.sent),
		slog.Int64("bytes_received", rec.received),
		slog.Float64("duration_seconds", elapsed.Seconds()),
		slog.String("policy", st.policy.Name),
	)
	if rec.sniResult != "" {
		attrs = append(attrs, slog.String("sni", rec.sni), slog.String("sni_result", rec.sniResult))
	}
	if rec.sni2 != "" {
		attrs = append(attrs, slog.String("sni_retry", rec.sni2))
	}
	if rec.closed != "" {
		attrs = append(attrs, slog.String("closed", rec.closed))
	}
	if rec.cutRule != "" {
		attrs = append(attrs, slog.String("cut_rule", rec.cutRule))
	}
	if rec.upstreamErr != "" {
		attrs = append(attrs, slog.String("error", rec.upstreamErr))
	}
	s.log.LogAttrs(context.Background(), level, "request", attrs...)
}

func clientString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
