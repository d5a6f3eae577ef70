package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"sync"
)

// SquidHandler is a slog.Handler that writes each decision record as a
// line of Squid's native access.log format, so that log analysers and SIEM
// parsers written for Squid read feedgate's log unchanged:
//
//	time.ms elapsed client code/status bytes method URL user hierarchy/peer type
//	%ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt
//
// bytes is what went to the client; a CONNECT's URL is host:port. Result
// codes: TCP_DENIED for blocked or refused requests (with HIER_NONE),
// TCP_TUNNEL for tunnels, TCP_MISS for forwarded requests (feedgate does
// not cache), TCP_MISS_ABORTED when the client left first. The policy's
// answer (rule, action) is not in this format; use the JSON format for it.
type SquidHandler struct {
	mu *sync.Mutex
	w  io.Writer
}

// NewSquidHandler writes Squid access.log lines to w.
func NewSquidHandler(w io.Writer) *SquidHandler { return &SquidHandler{mu: &sync.Mutex{}, w: w} }

// Enabled implements slog.Handler: every decision record is written.
func (h *SquidHandler) Enabled(context.Context, slog.Level) bool { return true }

// WithAttrs and WithGroup implement slog.Handler; the proxy uses neither.
func (h *SquidHandler) WithAttrs([]slog.Attr) slog.Handler { return h }

// WithGroup implements slog.Handler.
func (h *SquidHandler) WithGroup(string) slog.Handler { return h }

// Handle implements slog.Handler.
func (h *SquidHandler) Handle(_ context.Context, r slog.Record) error {
	var kind, client, method, host, path, action, rejected, closed, errReason string
	var port, status int64
	var received int64
	var seconds float64
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "kind":
			kind = a.Value.String()
		case "client":
			client = a.Value.String()
		case "method":
			method = a.Value.String()
		case "host":
			host = a.Value.String()
		case "port":
			port = a.Value.Int64()
		case "path":
			path = a.Value.String()
		case "action":
			action = a.Value.String()
		case "rejected":
			rejected = a.Value.String()
		case "closed":
			closed = a.Value.String()
		case "error":
			errReason = a.Value.String()
		case "status":
			status = a.Value.Int64()
		case "bytes_received":
			received = a.Value.Int64()
		case "duration_seconds":
			seconds = a.Value.Float64()
		}
		return true
	})
	code, hier := "TCP_MISS", "HIER_DIRECT/"+host
	switch {
	case action == "block" || rejected != "" || closed == closedBlocked:
		code, hier = "TCP_DENIED", "HIER_NONE/-"
	case status == statusClientClosed:
		code = "TCP_MISS_ABORTED"
	case kind == "connect":
		code = "TCP_TUNNEL"
	}
	if errReason != "" && status >= 500 {
		hier = "HIER_NONE/-"
	}
	target := net.JoinHostPort(host, strconv.FormatInt(port, 10))
	if kind != "connect" {
		scheme, defPort := "http", int64(80)
		if kind == KindMITM {
			scheme, defPort = "https", 443
		}
		target = scheme + "://" + host
		if port != defPort {
			target = scheme + "://" + net.JoinHostPort(host, strconv.FormatInt(port, 10))
		}
		// Squid logs URLs escaped: a space in a path must not split
		// the line's fields.
		target += (&url.URL{Path: path}).EscapedPath()
	}
	if client == "" {
		client = "-"
	}
	ms := r.Time.UnixMilli()
	line := fmt.Sprintf("%d.%03d %6d %s %s/%03d %d %s %s - %s -\n",
		ms/1000, ms%1000, int64(seconds*1000), client, code, status, received, method, target, hier)
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, line)
	return err
}
