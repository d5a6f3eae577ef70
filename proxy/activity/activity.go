// Package activity keeps what the status page shows of recent traffic:
// requests per vendor, category and action over the last hour and day, how
// much of it came through the transparent listener, and the latest
// blocked, flagged and refused requests.
//
// It exists so that the page can answer "what is feedgate doing right now"
// from feedgate's own records, without a Prometheus server to query and
// without reading the decision log back. An Activity is an
// accesslog.Sink: the proxy hands it every finished record, on the
// request path, so Write only bumps counters in fixed rings (a minute ring
// of an hour and an hour ring of a day) and copies a decision into a
// bounded ring, without allocating once the rings are warm. Everything is
// in memory and starts empty at each start.
package activity

import (
	"cmp"
	"sync"

	"github.com/feedgate/feedgate/proxy/accesslog"
	"github.com/feedgate/feedgate/rules"
)

// defaultDecisions bounds the ring of decisions when Options do not: a
// page's worth of history for a few hundred kilobytes.
const defaultDecisions = 1000

// ActionRejected is the action of a record an access rule or limit
// refused (accesslog.Record.Rejected), beside the policy's actions.
const ActionRejected = "rejected"

// Options configures an Activity.
type Options struct {
	// Decisions bounds the ring of latest decisions; <= 0 means 1000.
	Decisions int
}

// Activity counts finished records and keeps the latest decisions. It is
// safe for concurrent use.
type Activity struct {
	mu        sync.Mutex
	minutes   ring
	hours     ring
	decisions []Decision
	// next is where the next decision goes; kept is how many of the ring's
	// slots hold one.
	next, kept int
}

// New returns an empty Activity.
func New(opts Options) *Activity {
	n := opts.Decisions
	if n <= 0 {
		n = defaultDecisions
	}
	return &Activity{
		minutes:   newRing(60, 60),
		hours:     newRing(3600, 24),
		decisions: make([]Decision, n),
	}
}

// Write implements accesslog.Sink. It counts the record in the bucket of
// its Time and, for a blocked, flagged or refused request, keeps its
// decision. A record that is neither decided nor refused (a malformed
// request that net/http answered itself) has no action, and is not
// counted.
func (a *Activity) Write(r *accesslog.Record) error {
	k := countKey{vendor: rules.NoVendor, category: rules.NoVendor}
	if r.Decided {
		k.vendor = cmp.Or(r.Decision.Vendor, rules.NoVendor)
		k.category = cmp.Or(r.Decision.Category, rules.NoVendor)
	}
	var c counter
	switch {
	case r.Rejected != "":
		k.action, c = ActionRejected, counterRejected
	case !r.Decided:
		return nil
	case r.Decision.Action == rules.Allow:
		k.action, c = r.Decision.Action.String(), counterAllowed
	case r.Decision.Action == rules.Log:
		k.action, c = r.Decision.Action.String(), counterFlagged
	case r.Decision.Action == rules.Block:
		k.action, c = r.Decision.Action.String(), counterBlocked
	default:
		return nil
	}
	transparent := r.Mode == accesslog.ModeTransparent || r.Kind == accesslog.KindTransparent
	sec := r.Time.Unix()

	a.mu.Lock()
	defer a.mu.Unlock()
	a.minutes.add(sec, k, c, transparent)
	a.hours.add(sec, k, c, transparent)
	if c != counterAllowed {
		a.keep(r, k.action)
	}
	return nil
}
