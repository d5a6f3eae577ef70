package activity

import (
	"net/netip"
	"strings"
	"time"

	"github.com/feedgate/feedgate/proxy/accesslog"
)

// Decision is one blocked, flagged or rejected record, as the page lists
// it. Time is the record's, in UTC; Client is unmapped (an IPv4 client of
// a dual-stack socket is shown as IPv4).
type Decision struct {
	Time   time.Time  `json:"time"`
	Client netip.Addr `json:"client"`
	Kind   string     `json:"kind"`
	Mode   string     `json:"mode,omitempty"`
	Method string     `json:"method,omitempty"`
	Host   string     `json:"host"`
	Port   int        `json:"port,omitempty"`
	// Path is set only where the record has one (Record.HasPath).
	Path      string `json:"path,omitempty"`
	Vendor    string `json:"vendor,omitempty"`
	Category  string `json:"category,omitempty"`
	Match     string `json:"match,omitempty"`
	Signature string `json:"signature,omitempty"`
	Rule      string `json:"rule,omitempty"`
	Action    string `json:"action"`             // "block" | "log" | "rejected"
	Rejected  string `json:"rejected,omitempty"` // the reason, for a rejected record
	Status    int    `json:"status,omitempty"`
}

// Filter selects decisions for Latest. Zero fields select everything.
type Filter struct {
	Client netip.Addr // zero: any; compared unmapped (::ffff:a.b.c.d is a.b.c.d)
	Host   string     // "": any; otherwise a case-insensitive substring of the host
	Action string     // "": any; else "block", "log" or "rejected"
}

// Latest returns up to limit decisions matching f, newest first (limit <=
// 0: all kept). The slice is never nil, so that it encodes as a JSON
// array.
func (a *Activity) Latest(f Filter, limit int) []Decision {
	client := f.Client.Unmap()
	host := strings.ToLower(f.Host)
	a.mu.Lock()
	defer a.mu.Unlock()
	n := a.kept
	if limit > 0 {
		n = min(n, limit)
	}
	out := make([]Decision, 0, n)
	for i := range a.kept {
		if len(out) == n {
			break
		}
		// Newest first: backwards from the slot before next.
		d := &a.decisions[(a.next-1-i+len(a.decisions))%len(a.decisions)]
		if (client.IsValid() && d.Client != client) ||
			(host != "" && !strings.Contains(strings.ToLower(d.Host), host)) ||
			(f.Action != "" && d.Action != f.Action) {
			continue
		}
		out = append(out, *d)
	}
	return out
}

// keep copies the record's decision into the ring, over the oldest one.
// The copy shares the record's strings, which are immutable, but not the
// record, which a sink must not keep.
func (a *Activity) keep(r *accesslog.Record, action string) {
	d := &a.decisions[a.next]
	*d = Decision{
		Time:     r.Time.UTC(),
		Client:   r.Client.Unmap(),
		Kind:     r.Kind,
		Mode:     r.Mode,
		Method:   r.Method,
		Host:     r.Host,
		Port:     r.Port,
		Action:   action,
		Rejected: r.Rejected,
		Status:   r.Status,
	}
	if r.HasPath() {
		d.Path = r.Path
	}
	if r.Decided {
		d.Vendor, d.Category = r.Decision.Vendor, r.Decision.Category
		d.Match, d.Signature = r.Decision.MatchedBy(), r.Decision.Signature
		d.Rule = r.Decision.RuleName
	}
	a.next = (a.next + 1) % len(a.decisions)
	a.kept = min(a.kept+1, len(a.decisions))
}
