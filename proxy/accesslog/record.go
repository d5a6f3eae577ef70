// Package accesslog is feedgate's decision log: the typed record of one
// request or tunnel, the sinks that write it (JSON lines, Squid's native
// access.log format), and the buffered, reopenable file they write to.
//
// The proxy fills one Record per request, whatever path the request took,
// and hands it to a Sink once, when the request is over. Sinks read the
// record's fields directly; nothing is passed by key name.
package accesslog

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/feedgate/feedgate/rules"
)

// Kinds of record: how the request reached feedgate.
const (
	// KindHTTP is an absolute-URI request on the proxy port.
	KindHTTP = "http"
	// KindConnect is a CONNECT tunnel.
	KindConnect = "connect"
	// KindMITM is a request read inside an intercepted tunnel
	// ([tls.intercept]).
	KindMITM = "mitm"
	// KindTransparent is a connection the firewall redirected to a
	// transparent listener and that feedgate relays as a tunnel (TLS, or
	// anything but HTTP); the HTTP requests on such connections are
	// KindHTTP with Mode ModeTransparent.
	KindTransparent = "transparent"
)

// ModeTransparent is Mode for a record of the transparent listener.
const ModeTransparent = "transparent"

// StatusClientClosed is logged for a request whose client went away
// before the upstream answered (nginx's convention; Squid logs it as an
// abort).
const StatusClientClosed = 499

// ClosedBlocked is Closed for a tunnel refused after it was established:
// its ClientHello named a host the policy blocks.
const ClosedBlocked = "blocked"

// Record is one request's decision record: what was asked, what the
// policy said, and what happened. The zero value of a field means "not
// known" or "not applicable", and the sinks leave such fields out where
// the format allows it.
type Record struct {
	// Time is when the record was finished.
	Time time.Time
	// Kind is KindHTTP, KindConnect, KindMITM or KindTransparent.
	Kind   string
	Client netip.Addr
	Method string
	// Host and Port are the target as the client named it.
	Host string
	Port int
	// Path is the normalised path of an HTTP request (kinds http and
	// mitm), "" for a tunnel.
	Path string
	// Decided is set once the policy decided the request; Decision is
	// its answer. A request refused before that (Rejected) has none.
	Decided  bool
	Decision rules.Decision
	// Rejected is the reason an access rule or limit refused the
	// request ("client", "port", "limit", "invalid", ...).
	Rejected string
	// Status is the HTTP status the client got (200 for an established
	// tunnel).
	Status int
	// Sent counts bytes from the client to the upstream, Received bytes
	// from the upstream to the client.
	Sent, Received int64
	Duration       time.Duration
	// Policy is the name of the policy the request was decided under.
	Policy string
	// SNI is a tunnel's ClientHello server name as sent, SNIResult the
	// outcome of its check ("" if it was not checked), and SNIRetry the
	// server name of a second ClientHello after a HelloRetryRequest.
	SNI, SNIResult, SNIRetry string
	// Closed says why feedgate closed the connection ("idle",
	// "policy_change", ClosedBlocked, ...), "" if a peer did; CutRule is
	// the rule that cut it at a policy change.
	Closed, CutRule string
	// Error is the class of the upstream failure, "" if none.
	Error string
	// Mode is ModeTransparent for a connection the firewall redirected,
	// "" on the proxy port. OriginalDst is where a redirected connection
	// was going; it is what feedgate dials. HostVerify says whether the
	// name the client sent (SNI or Host) resolves to it: "match",
	// "mismatch" or "unverified"; "" when there was no name.
	Mode        string
	OriginalDst netip.AddrPort
	HostVerify  string
}

// Flagged reports a record that deserves attention: a decision to log
// (allow and flag), or a refusal by an access rule or limit. The JSON sink
// writes it at warning level so that it stands out in any log pipeline.
func (r *Record) Flagged() bool {
	return r.Decided && r.Decision.Action == rules.Log || r.Rejected != ""
}

// HasPath reports whether the record's kind carries a path.
func (r *Record) HasPath() bool { return r.Kind == KindHTTP || r.Kind == KindMITM }

// Sink receives every finished record, once. Implementations must be safe
// for concurrent use: records of concurrent requests arrive concurrently.
type Sink interface {
	Write(r *Record) error
}

// Formats are the names of the formats New writes, as [log] format names
// them.
func Formats() []string { return []string{"json", "squid"} }

// New returns a sink that writes format (one of Formats) to w.
func New(format string, w io.Writer) (Sink, error) {
	switch format {
	case "json":
		return NewJSON(w), nil
	case "squid":
		return NewSquid(w), nil
	}
	return nil, fmt.Errorf("access log: unknown format %q (want one of %q)", format, Formats())
}

// Discard is a Sink that drops every record.
type Discard struct{}

// Write implements Sink.
func (Discard) Write(*Record) error { return nil }

// Tee returns a sink that writes every record to each of sinks, in order,
// so that one finished record can feed the log and an in-memory view of
// it. A sink that fails does not keep the record from the others: Write
// returns their errors joined. Nil sinks are skipped, so that optional
// ones can be passed as they are.
func Tee(sinks ...Sink) Sink {
	var t tee
	for _, s := range sinks {
		if s != nil {
			t = append(t, s)
		}
	}
	switch len(t) {
	case 0:
		return Discard{}
	case 1:
		return t[0]
	}
	return t
}

type tee []Sink

// Write implements Sink.
func (t tee) Write(r *Record) error {
	// Collected only on failure, so that a record that every sink takes
	// costs no allocation.
	var errs []error
	for _, s := range t {
		if err := s.Write(r); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
