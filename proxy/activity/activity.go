// Package activity keeps what the status page shows of recent traffic:
// requests per vendor, category and action over the last hour and day, and
// how much of it came through the transparent listener.
//
// It exists so that the page can answer "what is feedgate doing right now"
// from feedgate's own records, without a Prometheus server to query and
// without reading the decision log back. An Activity is an
// accesslog.Sink: the proxy hands it every finished record, on the
// request path, so Write only bumps counters in fixed rings (a minute ring
// of an hour and an hour ring of a day), without allocating once the rings
// are warm. Everything is in memory and starts empty at each start.
package activity

import (
	"cmp"
	"sync"

	"github.com/feedgate/feedgate/proxy/accesslog"
	"github.com/feedgate/feedgate/rules"
)

// ActionRejected is the action of a record an access rule or limit
// refused (accesslog.Record.Rejected), beside the policy's actions.
const ActionRejected = "rejected"

// Options configures an Activity.
type Options struct{}

// Activity counts finished records. It is safe for concurrent use.
type Activity struct {
	mu      sync.Mutex
	minutes ring
	hours   ring
}

// New returns an empty Activity.
func New(opts Options) *Activity {
	return &Activity{
		minutes: newRing(60, 60),
		hours:   newRing(3600, 24),
	}
}

// Write implements accesslog.Sink. It counts the record in the bucket of
// its Time. A record that is neither decided nor refused (a malformed
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
	return nil
}
