// Package metrics defines every Prometheus metric feedgate exports. All
// collectors live on a registry passed in by the caller; label values come
// only from closed sets (policy names and fixed enums), never from client
// addresses or host names.
//
// The request path does no label lookups: ForPolicy resolves the label
// children of a policy once, and the proxy then only does atomic adds.
package metrics

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/feedgate/feedgate/proxy/accesslog"
	"github.com/feedgate/feedgate/rules"
)

const namespace = "feedgate"

// Upstream error reasons, the values of the "reason" label of
// feedgate_upstream_errors_total.
const (
	ReasonDNS     = "dns"
	ReasonRefused = "refused"
	ReasonTimeout = "timeout"
	ReasonReset   = "reset"
	ReasonOther   = "other"
)

// UpstreamReasons lists every upstream error reason.
func UpstreamReasons() []string {
	return []string{ReasonDNS, ReasonRefused, ReasonTimeout, ReasonReset, ReasonOther}
}

// Refusal reasons, the values of the "reason" label of
// feedgate_rejected_total: requests refused by the access rules rather than
// by the policy.
const (
	RejectClient      = "client"       // the client is not in allowed_clients
	RejectPort        = "port"         // the port is not in connect_ports or http_ports
	RejectDestination = "destination"  // the address dialed is in a denied range
	RejectLimit       = "limit"        // max_connections or max_tunnels reached
	RejectClientLimit = "client_limit" // max_connections_per_client reached
	RejectInvalid     = "invalid"      // a host, path or userinfo the policy cannot read (400)
	RejectHostVerify  = "host_verify"  // a transparent connection's name is not its destination's (strict)
)

// RejectReasons lists every refusal reason.
func RejectReasons() []string {
	return []string{RejectClient, RejectPort, RejectDestination, RejectLimit, RejectClientLimit, RejectInvalid, RejectHostVerify}
}

// Host verification results, the values of the "result" label of
// feedgate_host_verify_total: whether the name a transparent connection
// sent resolves to the address it was redirected from.
const (
	VerifyMatch      = "match"
	VerifyMismatch   = "mismatch"
	VerifyUnverified = "unverified"
)

// VerifyResults lists every host verification result.
func VerifyResults() []string { return []string{VerifyMatch, VerifyMismatch, VerifyUnverified} }

// Tunnel close reasons, the values of the "reason" label of
// feedgate_tunnels_closed_total (tunnels closed by feedgate, not by a peer).
const (
	TunnelIdle         = "idle"          // no bytes either way for tunnel_idle_timeout
	TunnelShutdown     = "shutdown"      // feedgate was stopping
	TunnelPolicyChange = "policy_change" // a rule window opened or closed, or a reload, and the tunnel's decision became block
	TunnelLifetime     = "lifetime"      // open for max_tunnel_lifetime
)

// TunnelReasons lists every tunnel close reason.
func TunnelReasons() []string {
	return []string{TunnelIdle, TunnelShutdown, TunnelPolicyChange, TunnelLifetime}
}

// SNI check results, the values of the "result" label of
// feedgate_sni_checks_total.
const (
	SNIMatch    = "match"    // the ClientHello names the CONNECT host
	SNIMismatch = "mismatch" // it names another host
	SNINone     = "no_sni"   // a ClientHello without a usable server name
	SNINotTLS   = "not_tls"  // the client's first bytes are not a TLS ClientHello
	SNITimeout  = "timeout"  // no complete ClientHello within sni_timeout
)

// SNIResults lists every SNI check result.
func SNIResults() []string { return []string{SNIMatch, SNIMismatch, SNINone, SNINotTLS, SNITimeout} }

// Transfer directions, the values of the "direction" label.
const (
	DirSent     = "sent"     // client to upstream
	DirReceived = "received" // upstream to client
)

// durationBuckets span quick plain-HTTP requests and tunnels that stay open
// for an hour.
var durationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600}

// Options configure New.
type Options struct {
	// Version is reported by feedgate_build_info.
	Version string
	// Now is the policy clock for the policy gauges; nil means time.Now.
	Now func() time.Time
	// NoRuntimeCollectors leaves out the Go and process collectors (for
	// tests that compare the whole exposition).
	NoRuntimeCollectors bool
}

// Metrics holds feedgate's collectors.
type Metrics struct {
	requests       *prometheus.CounterVec
	transferred    *prometheus.CounterVec
	upstreamErrors map[string]prometheus.Counter
	rejected       map[string]prometheus.Counter
	tunnelsClosed  map[string]prometheus.Counter
	sniChecks      map[string]prometheus.Counter
	hostVerify     map[string]prometheus.Counter
	reloads        map[string]prometheus.Counter
	reloadOK       prometheus.Gauge
	reloadTime     prometheus.Gauge
	catalogInfo    *prometheus.GaugeVec
	policyInfo     *prometheus.GaugeVec

	// ActiveHTTP, ActiveConnect and ActiveTransparent count requests and
	// tunnels in flight.
	ActiveHTTP, ActiveConnect, ActiveTransparent prometheus.Gauge
	// DurationHTTP, DurationConnect and DurationTransparent observe
	// request and tunnel durations.
	DurationHTTP, DurationConnect, DurationTransparent prometheus.Observer

	policy *policyCollector
}

// New creates every collector and registers it on reg.
func New(reg prometheus.Registerer, opts Options) *Metrics {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "requests_total",
			Help: "Requests decided, by vendor, category, action taken and deciding rule (\"default\" when no rule matched).",
		}, []string{"vendor", "category", "action", "rule"}),
		transferred: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "transferred_bytes_total",
			Help: "Bytes relayed, by vendor, category and direction (sent: client to upstream; received: upstream to client).",
		}, []string{"vendor", "category", "direction"}),
	}
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "rejected_total",
		Help: "Requests refused by the access rules or limits, by reason (client, port, destination, limit, client_limit, invalid, host_verify).",
	}, []string{"reason"})
	m.rejected = byReason(rejected, RejectReasons())
	tunnelsClosed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "tunnels_closed_total",
		Help: "Tunnels closed by feedgate rather than by a peer, by reason (idle, shutdown, policy_change).",
	}, []string{"reason"})
	m.tunnelsClosed = byReason(tunnelsClosed, TunnelReasons())
	sniChecks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "sni_checks_total",
		Help: "CONNECT tunnels whose TLS ClientHello was checked, by result (match, mismatch, no_sni, not_tls, timeout).",
	}, []string{"result"})
	m.sniChecks = byReason(sniChecks, SNIResults())
	hostVerify := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "host_verify_total",
		Help: "Names sent on transparent connections (SNI or Host) checked against the original destination, by result (match, mismatch, unverified).",
	}, []string{"result"})
	m.hostVerify = byReason(hostVerify, VerifyResults())
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "config_reloads_total",
		Help: "Policy reloads (SIGHUP or POST /-/reload), by result (success, failure).",
	}, []string{"result"})
	m.reloads = byReason(reloads, []string{ReloadSuccess, ReloadFailure})
	m.reloadOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "config_last_reload_successful",
		Help: "1 if the last policy load or reload succeeded, 0 if it failed (the previous policy is still enforced).",
	})
	m.reloadTime = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "config_last_reload_success_timestamp_seconds",
		Help: "Unix time of the last successful policy load or reload.",
	})
	m.catalogInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "catalog_info",
		Help: "Always 1 for each catalog of the enforced policy; labels carry its vendor and version.",
	}, []string{"vendor", "version"})
	m.policyInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "policy_info",
		Help: "Always 1 for the enforced policy; labels carry its name and mode (enforce, or report: blocks are only logged).",
	}, []string{"policy", "mode"})
	// The "kind" label takes the decision record's kinds
	// (proxy/accesslog), so that a record and its series name a kind the
	// same way: http (plain and intercepted requests) and connect
	// (tunnels).
	active := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "active_connections",
		Help: "Requests and tunnels in flight, by kind (http, connect, or transparent for tunnels of the transparent listener).",
	}, []string{"kind"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "request_duration_seconds",
		Help:    "Time from request to the end of the response (http) or to the close of the tunnel (connect, transparent).",
		Buckets: durationBuckets,
	}, []string{"kind"})
	upstream := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "upstream_errors_total",
		Help: "Failures to reach or read from the upstream, by reason (dns, refused, timeout, reset, other).",
	}, []string{"reason"})
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help: "Always 1; labels carry the feedgate version and the Go version it was built with.",
	}, []string{"version", "goversion"})
	build.WithLabelValues(opts.Version, runtime.Version()).Set(1)

	m.ActiveHTTP = active.WithLabelValues(accesslog.KindHTTP)
	m.ActiveConnect = active.WithLabelValues(accesslog.KindConnect)
	m.DurationHTTP = duration.WithLabelValues(accesslog.KindHTTP)
	m.DurationConnect = duration.WithLabelValues(accesslog.KindConnect)
	m.ActiveTransparent = active.WithLabelValues(accesslog.KindTransparent)
	m.DurationTransparent = duration.WithLabelValues(accesslog.KindTransparent)
	m.upstreamErrors = byReason(upstream, UpstreamReasons())
	m.policy = &policyCollector{
		now: opts.Now,
		action: prometheus.NewDesc(namespace+"_policy_action",
			"1 for the action in force now for each vendor and category, 0 for the others.",
			[]string{"vendor", "category", "action"}, nil),
		next: prometheus.NewDesc(namespace+"_policy_next_change_timestamp_seconds",
			"Unix time at which the action for this vendor and category next changes; absent if it never changes again.",
			[]string{"vendor", "category"}, nil),
	}

	reg.MustRegister(m.requests, m.transferred, active, duration, upstream, rejected, tunnelsClosed, sniChecks, hostVerify,
		reloads, m.reloadOK, m.reloadTime, m.catalogInfo, m.policyInfo, build, m.policy)
	if !opts.NoRuntimeCollectors {
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	return m
}

// byReason resolves the children of a one-label counter for every value of
// its closed set, so that they exist at zero and counting is a map lookup.
func byReason(vec *prometheus.CounterVec, reasons []string) map[string]prometheus.Counter {
	m := make(map[string]prometheus.Counter, len(reasons))
	for _, r := range reasons {
		m[r] = vec.WithLabelValues(r)
	}
	return m
}

// UpstreamError counts one upstream failure; an unknown reason counts as
// "other".
func (m *Metrics) UpstreamError(reason string) {
	c, ok := m.upstreamErrors[reason]
	if !ok {
		c = m.upstreamErrors[ReasonOther]
	}
	c.Inc()
}

// Rejected counts one refused request; reason is one of RejectReasons.
func (m *Metrics) Rejected(reason string) {
	if c, ok := m.rejected[reason]; ok {
		c.Inc()
	}
}

// Reload results, the values of the "result" label of
// feedgate_config_reloads_total.
const (
	ReloadSuccess = "success"
	ReloadFailure = "failure"
)

// ConfigLoaded records the policy loaded at start: the reload gauges say
// success at that instant, and no reload is counted.
func (m *Metrics) ConfigLoaded(at time.Time) {
	m.reloadOK.Set(1)
	m.reloadTime.Set(float64(at.UnixNano()) / 1e9)
}

// ConfigReload records one reload attempt.
func (m *Metrics) ConfigReload(ok bool, at time.Time) {
	if !ok {
		m.reloads[ReloadFailure].Inc()
		m.reloadOK.Set(0)
		return
	}
	m.reloads[ReloadSuccess].Inc()
	m.ConfigLoaded(at)
}

// SNICheck counts one ClientHello check; result is one of SNIResults.
func (m *Metrics) SNICheck(result string) {
	if c, ok := m.sniChecks[result]; ok {
		c.Inc()
	}
}

// HostVerify counts one host verification; result is one of
// VerifyResults.
func (m *Metrics) HostVerify(result string) {
	if c, ok := m.hostVerify[result]; ok {
		c.Inc()
	}
}

// TunnelClosed counts a tunnel feedgate closed; reason is one of
// TunnelReasons.
func (m *Metrics) TunnelClosed(reason string) {
	if c, ok := m.tunnelsClosed[reason]; ok {
		c.Inc()
	}
}

// PolicyCounters are the label children of one policy, resolved once so that
// counting a request is an index and an atomic add.
type PolicyCounters struct {
	m        *Metrics
	p        *rules.Policy
	nRules   int
	requests []atomic.Pointer[prometheus.Counter] // [class][rule+1][action]
	sent     []prometheus.Counter                 // [class]
	received []prometheus.Counter                 // [class]
	mu       sync.Mutex
}

// ForPolicy resolves the counters of policy p and makes p the policy whose
// actions the policy gauges report. Every series a decision can produce
// (Policy.Outcomes) starts at zero, so that rate() and increase() see its
// first request.
func (m *Metrics) ForPolicy(p *rules.Policy) *PolicyCounters {
	nActions := len(rules.AllActions())
	pc := &PolicyCounters{
		m: m, p: p, nRules: len(p.Rules),
		requests: make([]atomic.Pointer[prometheus.Counter], len(p.Classes)*(len(p.Rules)+2)*nActions),
		sent:     make([]prometheus.Counter, len(p.Classes)),
		received: make([]prometheus.Counter, len(p.Classes)),
	}
	for c, cl := range p.Classes {
		pc.sent[c] = m.transferred.WithLabelValues(cl.Vendor, cl.Category, DirSent)
		pc.received[c] = m.transferred.WithLabelValues(cl.Vendor, cl.Category, DirReceived)
	}
	for _, o := range p.Outcomes() {
		pc.counter(o.Class, o.Rule, o.Action)
	}
	m.policyInfo.Reset()
	m.policyInfo.WithLabelValues(p.Name, p.Mode.String()).Set(1)
	m.catalogInfo.Reset()
	for _, c := range p.Catalogs {
		m.catalogInfo.WithLabelValues(c.Vendor, c.Version).Set(1)
	}
	m.policy.current.Store(p)
	return pc
}

// counter returns the child for a class, a rule (its index, -1 for the
// default action, or rules.NoSNIRule) and an action.
func (pc *PolicyCounters) counter(class, rule int, a rules.Action) prometheus.Counter {
	slot := rule + 1 // the default action, then the rules, then the pseudo-rule
	if rule == rules.NoSNIRule {
		slot = pc.nRules + 1
	}
	i := (class*(pc.nRules+2)+slot)*len(rules.AllActions()) + int(a)
	if c := pc.requests[i].Load(); c != nil {
		return *c
	}
	// First request of a combination Outcomes did not list: create the
	// child once.
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if c := pc.requests[i].Load(); c != nil {
		return *c
	}
	name := rules.DefaultRule
	switch {
	case rule == rules.NoSNIRule:
		name = rules.NoSNIRuleName
	case rule >= 0:
		name = pc.p.Rules[rule].Name
	}
	cl := pc.p.Classes[class]
	c := pc.m.requests.WithLabelValues(cl.Vendor, cl.Category, a.String(), name)
	pc.requests[i].Store(&c)
	return c
}

// Request counts one decided request.
func (pc *PolicyCounters) Request(d rules.Decision) {
	pc.counter(d.Class, d.Rule, d.Action).Inc()
}

// Sent counts n bytes from the client to the upstream for class.
func (pc *PolicyCounters) Sent(class int, n int64) {
	if n > 0 {
		pc.sent[class].Add(float64(n))
	}
}

// Received counts n bytes from the upstream to the client for class.
func (pc *PolicyCounters) Received(class int, n int64) {
	if n > 0 {
		pc.received[class].Add(float64(n))
	}
}

// policyCollector reports the action in force and the next change for every
// class of the current policy, computed at scrape time from the policy clock,
// so the gauges flip at the exact cut-off without any timer.
type policyCollector struct {
	now          func() time.Time
	current      atomic.Pointer[rules.Policy]
	action, next *prometheus.Desc
}

func (c *policyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.action
	ch <- c.next
}

func (c *policyCollector) Collect(ch chan<- prometheus.Metric) {
	p := c.current.Load()
	if p == nil {
		return
	}
	for _, st := range p.ClassStates(c.now()) {
		for _, a := range rules.AllActions() {
			v := 0.0
			if a == st.Action {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.action, prometheus.GaugeValue, v, st.Class.Vendor, st.Class.Category, a.String())
		}
		if !st.Next.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.next, prometheus.GaugeValue, float64(st.Next.UnixNano())/1e9, st.Class.Vendor, st.Class.Category)
		}
	}
}
