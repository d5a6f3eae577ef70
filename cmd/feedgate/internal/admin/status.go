package admin

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/feedgate/feedgate/proxy/activity"
	"github.com/feedgate/feedgate/proxy/inventory"
	"github.com/feedgate/feedgate/rules"
)

// Activity is what the status page reads of recent traffic: the counts of
// the last hour and day, and the latest blocked, flagged and rejected
// requests (proxy/activity keeps them).
type Activity interface {
	Hour(now time.Time) activity.Traffic
	Day(now time.Time) activity.Traffic
	Latest(f activity.Filter, limit int) []activity.Decision
}

// ReloadStatus is the last load or reload of the policy.
type ReloadStatus struct {
	// At is when it happened (wall clock), Trigger what asked for it
	// ("start", "SIGHUP", "http").
	At      time.Time `json:"at"`
	Trigger string    `json:"trigger"`
	Success bool      `json:"success"`
	// Error is why it failed, with FILE:LINE; the policy loaded at
	// LastSuccess stays in force.
	Error       string    `json:"error,omitempty"`
	LastSuccess time.Time `json:"last_success"`
}

// StatusReply is the body of GET /api/v1/status: the policy in force and,
// per vendor category, the action now and the next change.
type StatusReply struct {
	// GeneratedAt is the wall clock; PolicyTime the policy clock, which
	// feedgate run -at sets apart from it.
	GeneratedAt time.Time       `json:"generated_at"`
	PolicyTime  time.Time       `json:"policy_time"`
	Policy      PolicyInfo      `json:"policy"`
	Reload      ReloadStatus    `json:"reload"`
	Categories  []CategoryState `json:"categories"`
	Links       []Link          `json:"links"`
}

// PolicyInfo describes the policy in force.
type PolicyInfo struct {
	Name string `json:"name"`
	// File is the policy file, "" for the built-in policy.
	File             string        `json:"file"`
	Mode             string        `json:"mode"`
	Timezone         string        `json:"timezone"`
	DefaultAction    string        `json:"default_action"`
	TunnelWithoutSNI string        `json:"tunnel_without_sni"`
	Catalogs         []CatalogInfo `json:"catalogs"`
}

// CatalogInfo is one catalog of the policy.
type CatalogInfo struct {
	Vendor  string `json:"vendor"`
	Version string `json:"version"`
	File    string `json:"file"`
}

// CategoryState is what one vendor category gets now, for a client in no
// client group (rules limited to some clients or hosts can differ).
type CategoryState struct {
	Vendor   string `json:"vendor"`
	Category string `json:"category"`
	Action   string `json:"action"`
	Rule     string `json:"rule"`
	Reason   string `json:"reason,omitempty"`
	// Since is when the action took effect; nil if it always held.
	Since *time.Time `json:"since,omitempty"`
	// Next is the next change; nil if the action never changes again.
	Next *NextChange `json:"next,omitempty"`
}

// NextChange is a category's next change of action.
type NextChange struct {
	At     time.Time `json:"at"`
	Action string    `json:"action"`
	Rule   string    `json:"rule"`
	// InSeconds is how long until then on the policy clock.
	InSeconds float64 `json:"in_seconds"`
}

// Link is one of the admin listener's other pages.
type Link struct {
	Name string `json:"name"`
	URL  string `json:"url"`
}

// status builds the status reply at the policy clock's now.
func (d Deps) status() StatusReply {
	c := d.Config()
	p := c.Policy
	now := d.Now()
	r := StatusReply{
		GeneratedAt: d.wall(),
		PolicyTime:  now.In(p.Location),
		Policy: PolicyInfo{
			Name: p.Name, File: p.File, Mode: p.Mode.String(), Timezone: p.Location.String(),
			DefaultAction:    p.Effective(p.DefaultAction).String(),
			TunnelWithoutSNI: p.Effective(p.TunnelWithoutSNI).String(),
			Catalogs:         []CatalogInfo{},
		},
		Categories: categoryStates(p, now),
		Links:      d.links(),
	}
	for _, ci := range p.Catalogs {
		r.Policy.Catalogs = append(r.Policy.Catalogs, CatalogInfo{Vendor: ci.Vendor, Version: ci.Version, File: ci.File})
	}
	r.Reload = ReloadStatus{Success: true} // nothing to say without a reloader
	if d.Reloads != nil {
		r.Reload = d.Reloads()
	}
	return r
}

// categoryStates reads every vendor class's timeline at now.
func categoryStates(p *rules.Policy, now time.Time) []CategoryState {
	out := []CategoryState{}
	for class, cl := range p.Classes {
		if class == 0 {
			continue // unclassified traffic
		}
		segs := p.ClassTimeline(class)
		i := slices.IndexFunc(segs, func(s rules.Segment) bool { return s.Until.IsZero() || now.Before(s.Until) })
		if i < 0 {
			i = len(segs) - 1
		}
		cur := segs[i]
		st := CategoryState{Vendor: cl.Vendor, Category: cl.Category, Action: cur.Action.String(), Rule: cur.RuleName}
		if cur.Rule >= 0 && cur.Rule < len(p.Rules) {
			st.Reason = p.Rules[cur.Rule].Reason
		}
		if !cur.From.IsZero() {
			since := cur.From
			st.Since = &since
		}
		if i+1 < len(segs) {
			n := segs[i+1]
			st.Next = &NextChange{At: n.From, Action: n.Action.String(), Rule: n.RuleName, InSeconds: n.From.Sub(now).Seconds()}
		}
		out = append(out, st)
	}
	return out
}

// links are the admin listener's other pages, as the status page lists
// them.
func (d Deps) links() []Link {
	out := []Link{{"Prometheus metrics", "/metrics"}}
	seen := map[string]bool{}
	for _, ci := range d.policy().Catalogs {
		if seen[ci.Vendor] {
			continue
		}
		seen[ci.Vendor] = true
		for _, a := range []rules.Action{rules.Block, rules.Log, rules.Allow} {
			out = append(out, Link{fmt.Sprintf("%s %s list (EDL)", ci.Vendor, a), "/feeds/" + url.PathEscape(ci.Vendor) + "/" + a.String() + ".txt"})
		}
	}
	return append(out,
		Link{"Proxy auto-config (PAC)", "/proxy.pac"},
		Link{"Status (JSON)", "/api/v1/status"},
		Link{"Traffic (JSON)", "/api/v1/traffic"},
		Link{"Latest decisions (JSON)", "/api/v1/decisions"},
		Link{"Clients (JSON)", "/api/v1/clients"},
		Link{"Health", "/healthz"},
		Link{"Readiness", "/readyz"},
	)
}

// wall is the wall clock, which records, the inventory and the traffic
// counts are stamped with.
func (d Deps) wall() time.Time {
	if d.Wall != nil {
		return d.Wall()
	}
	return time.Now()
}

// TrafficReply is the body of GET /api/v1/traffic.
type TrafficReply struct {
	GeneratedAt time.Time        `json:"generated_at"`
	Hour        activity.Traffic `json:"hour"`
	Day         activity.Traffic `json:"day"`
}

func (d Deps) traffic() TrafficReply {
	now := d.wall()
	return TrafficReply{GeneratedAt: now, Hour: d.Activity.Hour(now), Day: d.Activity.Day(now)}
}

// DecisionsReply is the body of GET /api/v1/decisions.
type DecisionsReply struct {
	Decisions   []activity.Decision `json:"decisions"`
	Count       int                 `json:"count"`
	GeneratedAt time.Time           `json:"generated_at"`
}

// defaultDecisions is how many decisions a page or an API call lists
// unless asked for another number.
const defaultDecisions = 100

// decisionsQuery reads the decisions filter from q: client (an IP
// address), host (part of a host name), action (block, log or rejected)
// and limit; prefix is the parameters' prefix on the HTML page.
func decisionsQuery(q url.Values, prefix string) (activity.Filter, int, error) {
	var f activity.Filter
	if s := strings.TrimSpace(q.Get(prefix + "client")); s != "" {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return f, 0, fmt.Errorf("%sclient %q: want an IP address", prefix, s)
		}
		f.Client = a.Unmap()
	}
	f.Host = strings.TrimSpace(q.Get(prefix + "host"))
	switch f.Action = q.Get(prefix + "action"); f.Action {
	case "", "block", "log", "rejected":
	default:
		return f, 0, fmt.Errorf("%saction %q: want block, log or rejected", prefix, f.Action)
	}
	limit := defaultDecisions
	if s := q.Get(prefix + "limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return f, 0, fmt.Errorf("%slimit %q: want a count (0: all kept)", prefix, s)
		}
		limit = n
	}
	return f, limit, nil
}

// query parses a request's query strictly: a filter typed wrong must not
// widen the answer.
func query(r *http.Request) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	return q, nil
}

// ClientReply is the body of GET /api/v1/clients/{client}: one client's
// inventory entries and its latest blocked, flagged and rejected requests.
type ClientReply struct {
	Client     netip.Addr          `json:"client"`
	FirstSeen  time.Time           `json:"first_seen"`
	LastSeen   time.Time           `json:"last_seen"`
	LastAction string              `json:"last_action"`
	Requests   uint64              `json:"requests"`
	Categories []string            `json:"categories"` // vendor/category
	Hosts      []string            `json:"hosts"`
	Entries    []inventory.Entry   `json:"entries"`
	Decisions  []activity.Decision `json:"decisions"`
	// Known is false when the inventory has no entry for the client.
	Known       bool      `json:"known"`
	GeneratedAt time.Time `json:"generated_at"`
}

// client builds one client's drill-down.
func (d Deps) client(addr netip.Addr) ClientReply {
	addr = addr.Unmap()
	r := ClientReply{Client: addr, Categories: []string{}, Hosts: []string{}, GeneratedAt: d.Inventory.Now()}
	r.Entries = d.Inventory.Snapshot(inventory.Filter{Client: addr})
	for i, e := range r.Entries {
		if i == 0 {
			// Entries come newest first.
			r.LastSeen, r.LastAction = e.LastSeen, e.LastAction
		}
		if r.FirstSeen.IsZero() || e.FirstSeen.Before(r.FirstSeen) {
			r.FirstSeen = e.FirstSeen
		}
		r.Requests += e.Requests
		if c := e.Vendor + "/" + e.Category; !slices.Contains(r.Categories, c) {
			r.Categories = append(r.Categories, c)
		}
		for _, h := range e.Hosts {
			if !slices.Contains(r.Hosts, h) {
				r.Hosts = append(r.Hosts, h)
			}
		}
	}
	r.Known = len(r.Entries) > 0
	slices.Sort(r.Categories)
	slices.Sort(r.Hosts)
	r.Decisions = d.Activity.Latest(activity.Filter{Client: addr}, defaultDecisions)
	return r
}

// statusHandler serves GET /api/v1/status.
func statusHandler(d Deps) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { writeJSON(w, r, http.StatusOK, d.status()) }
}

// trafficHandler serves GET /api/v1/traffic: the counts of the last hour
// (minutes) and day (hours).
func trafficHandler(d Deps) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { writeJSON(w, r, http.StatusOK, d.traffic()) }
}

// decisionsHandler serves GET /api/v1/decisions: the latest blocked,
// flagged and rejected requests, newest first, filtered by client, host
// and action, at most limit (default 100; 0: every one kept).
func decisionsHandler(d Deps) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, err := query(r)
		var f activity.Filter
		var limit int
		if err == nil {
			f, limit, err = decisionsQuery(q, "")
		}
		if err != nil {
			writeJSON(w, r, http.StatusBadRequest, errorReply{err.Error()})
			return
		}
		ds := d.Activity.Latest(f, limit)
		writeJSON(w, r, http.StatusOK, DecisionsReply{Decisions: ds, Count: len(ds), GeneratedAt: d.wall()})
	}
}

// clientHandler serves GET /api/v1/clients/{client}: one client's
// drill-down.
func clientHandler(d Deps) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		addr, err := netip.ParseAddr(r.PathValue("client"))
		if err != nil {
			writeJSON(w, r, http.StatusBadRequest, errorReply{fmt.Sprintf("client %q: want an IP address", r.PathValue("client"))})
			return
		}
		writeJSON(w, r, http.StatusOK, d.client(addr))
	}
}
