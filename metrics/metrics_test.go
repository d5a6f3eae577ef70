package metrics_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/feedgate/feedgate/configs"
	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/rules"
)

func defaultPolicy(t *testing.T) *rules.Policy {
	t.Helper()
	p, _, err := rules.Load(rules.FS{FS: configs.Files()}, configs.DefaultPolicy, rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func newMetrics(t *testing.T, now time.Time) (*prometheus.Registry, *metrics.Metrics) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m := metrics.New(reg, metrics.Options{Version: "test", Now: func() time.Time { return now }})
	return reg, m
}

// TestExpositionLints checks every metric against the Prometheus naming
// and help conventions (promlint), runtime collectors included.
func TestExpositionLints(t *testing.T) {
	reg, m := newMetrics(t, mustTime(t, "2024-08-01T00:00:00Z"))
	m.ForPolicy(defaultPolicy(t))
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// TestPolicyGauges compares the policy gauges at instants around the
// cut-offs with golden expositions in testdata/.
func TestPolicyGauges(t *testing.T) {
	for _, tc := range []struct{ at, golden string }{
		{"2024-07-20T03:59:59Z", "testdata/policy-before.txt"},
		{"2024-07-20T04:00:00Z", "testdata/policy-between.txt"},
		{"2024-09-29T04:00:00Z", "testdata/policy-after.txt"},
	} {
		t.Run(tc.at, func(t *testing.T) {
			reg, m := newMetrics(t, mustTime(t, tc.at))
			m.ForPolicy(defaultPolicy(t))
			f, err := os.Open(tc.golden)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := testutil.GatherAndCompare(reg, f, "feedgate_policy_action", "feedgate_policy_next_change_timestamp_seconds"); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestRequestCounters(t *testing.T) {
	at := mustTime(t, "2024-10-01T00:00:00Z")
	reg, m := newMetrics(t, at)
	p := defaultPolicy(t)
	pc := m.ForPolicy(p)
	for _, host := range []string{"s01.upd.kaspersky.com", "dnl-02.geo.kaspersky.com", "example.org", "opentip.kaspersky.com"} {
		pc.Request(p.Decide(rules.Request{Host: host, Port: 443, Time: at}))
	}
	d := p.Decide(rules.Request{Host: "s01.upd.kaspersky.com", Port: 443, Time: at})
	pc.Sent(d.Class, 100)
	pc.Received(d.Class, 2048)
	m.UpstreamError(metrics.ReasonTimeout)
	m.UpstreamError("no-such-reason")

	want := `
# HELP feedgate_upstream_errors_total Failures to reach or read from the upstream, by reason (dns, refused, timeout, reset, other).
# TYPE feedgate_upstream_errors_total counter
feedgate_upstream_errors_total{reason="dns"} 0
feedgate_upstream_errors_total{reason="other"} 1
feedgate_upstream_errors_total{reason="refused"} 0
feedgate_upstream_errors_total{reason="reset"} 0
feedgate_upstream_errors_total{reason="timeout"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "feedgate_upstream_errors_total"); err != nil {
		t.Error(err)
	}
	for _, tc := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"kaspersky", "update", "block", "updates-cutoff"}, 2},
		{[]string{"none", "none", "allow", "default"}, 1},
		// A host rule selects a class no rule predicted: created on first use.
		{[]string{"kaspersky", "web", "allow", "threat-intel-exempt"}, 1},
		// Pre-created at zero so that rate() sees the first request.
		{[]string{"kaspersky", "ksn", "block", "updates-cutoff"}, 0},
	} {
		got := counterValue(t, reg, "feedgate_requests_total", tc.labels)
		if got != tc.want {
			t.Errorf("feedgate_requests_total%v = %v; want %v", tc.labels, got, tc.want)
		}
	}
	if got := counterValue(t, reg, "feedgate_transferred_bytes_total", []string{"kaspersky", "update", "sent"}); got != 100 {
		t.Errorf("sent bytes = %v; want 100", got)
	}
	if got := counterValue(t, reg, "feedgate_transferred_bytes_total", []string{"kaspersky", "update", "received"}); got != 2048 {
		t.Errorf("received bytes = %v; want 2048", got)
	}
}

// TestReportModeSeries: in report mode a block rule is counted as log.
func TestReportModeSeries(t *testing.T) {
	p, _, err := rules.Load(rules.Dir{}, "testdata/report.toml", rules.Options{Builtin: rules.FS{FS: configs.Files()}})
	if err != nil {
		t.Fatal(err)
	}
	at := mustTime(t, "2024-10-01T00:00:00Z")
	reg, m := newMetrics(t, at)
	pc := m.ForPolicy(p)
	pc.Request(p.Decide(rules.Request{Host: "s01.upd.kaspersky.com", Port: 443, Time: at}))
	if got := counterValue(t, reg, "feedgate_requests_total", []string{"kaspersky", "update", "log", "updates-cutoff"}); got != 1 {
		t.Errorf("report-mode block counted as log = %v; want 1", got)
	}
	if got := counterValue(t, reg, "feedgate_requests_total", []string{"kaspersky", "update", "block", "updates-cutoff"}); got != -1 {
		t.Errorf("a block series exists in report mode (value %v); want none", got)
	}
}

// TestCountingDoesNotAllocate guards the request path: counting is an index
// and an atomic add.
func TestCountingDoesNotAllocate(t *testing.T) {
	at := mustTime(t, "2024-10-01T00:00:00Z")
	_, m := newMetrics(t, at)
	p := defaultPolicy(t)
	pc := m.ForPolicy(p)
	d := p.Decide(rules.Request{Host: "s01.upd.kaspersky.com", Port: 443, Time: at})
	allocs := testing.AllocsPerRun(1000, func() {
		pc.Request(d)
		pc.Sent(d.Class, 1)
		pc.Received(d.Class, 1)
		m.ActiveConnect.Inc()
		m.ActiveConnect.Dec()
		m.DurationConnect.Observe(0.5)
	})
	if allocs != 0 {
		t.Errorf("counting a request allocates %v times; want 0", allocs)
	}
}

// counterValue returns the value of name with exactly these label values
// (in label-name order of the metric), or -1 if there is no such series.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, values []string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	order := map[string][]string{
		"feedgate_requests_total":          {"vendor", "category", "action", "rule"},
		"feedgate_transferred_bytes_total": {"vendor", "category", "direction"},
	}[name]
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.Metric {
			have := map[string]string{}
			for _, lp := range m.Label {
				have[lp.GetName()] = lp.GetValue()
			}
			for i, l := range order {
				if have[l] != values[i] {
					continue next
				}
			}
			return m.Counter.GetValue()
		}
	}
	return -1
}

// TestReloadAndCatalogInfo: the reload series follow success and failure,
// and feedgate_catalog_info names the enforced policy's catalogs only.
func TestReloadAndCatalogInfo(t *testing.T) {
	reg, m := newMetrics(t, mustTime(t, "2024-08-01T00:00:00Z"))
	p := defaultPolicy(t)
	m.ForPolicy(p)
	start := mustTime(t, "2026-01-02T03:04:05Z")
	m.ConfigLoaded(start)
	// want compares the one series of name whose label values are
	// labels (in label-name order).
	want := func(name string, labels []string, v float64) {
		t.Helper()
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := -1.0
		for _, f := range fams {
			for _, s := range f.GetMetric() {
				var vals []string
				for _, lp := range s.GetLabel() {
					vals = append(vals, lp.GetValue())
				}
				if f.GetName() == name && strings.Join(vals, ",") == strings.Join(labels, ",") {
					got = s.GetCounter().GetValue() + s.GetGauge().GetValue()
				}
			}
		}
		if got != v {
			t.Errorf("%s%v = %v; want %v", name, labels, got, v)
		}
	}
	want("feedgate_config_reloads_total", []string{"success"}, 0)
	want("feedgate_config_last_reload_successful", nil, 1)
	want("feedgate_config_last_reload_success_timestamp_seconds", nil, float64(start.Unix()))
	want("feedgate_catalog_info", []string{"kaspersky", p.Catalogs[0].Version}, 1)
	want("feedgate_policy_info", []string{"enforce", p.Name}, 1)

	m.ConfigReload(false, start.Add(time.Minute))
	want("feedgate_config_reloads_total", []string{"failure"}, 1)
	want("feedgate_config_last_reload_successful", nil, 0)
	want("feedgate_config_last_reload_success_timestamp_seconds", nil, float64(start.Unix()))

	m.ConfigReload(true, start.Add(2*time.Minute))
	want("feedgate_config_reloads_total", []string{"success"}, 1)
	want("feedgate_config_last_reload_successful", nil, 1)
	want("feedgate_config_last_reload_success_timestamp_seconds", nil, float64(start.Add(2*time.Minute).Unix()))
}

// TestHostRuleSeriesPreCreated: a rule that selects hosts has its series
// from the start, under the class of its hosts, so that rate() and
// increase() see its first request.
func TestHostRuleSeriesPreCreated(t *testing.T) {
	reg, m := newMetrics(t, mustTime(t, "2024-10-01T00:00:00Z"))
	m.ForPolicy(defaultPolicy(t))
	if got := counterValue(t, reg, "feedgate_requests_total", []string{"kaspersky", "web", "allow", "threat-intel-exempt"}); got != 0 {
		t.Errorf("requests_total{kaspersky,web,allow,threat-intel-exempt} = %v before any request; want a series at 0", got)
	}
}

// TestRequestSeriesAtLoad pins the feedgate_requests_total series that
// exist at zero once the default policy is loaded: one for each outcome
// that Policy.Outcomes lists. Besides the default action and the rules
// under the classes they select, these are threat-intel-exempt under
// kaspersky/web (its hosts' class) and kaspersky/update (its hosts are
// only the fallback's, so a signature on the path classifies them), and
// tunnel_without_sni (log) under every class whose action can be allow.
func TestRequestSeriesAtLoad(t *testing.T) {
	reg, m := newMetrics(t, mustTime(t, "2024-08-01T00:00:00Z"))
	m.ForPolicy(defaultPolicy(t))
	f, err := os.Open("testdata/requests-default.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := testutil.GatherAndCompare(reg, f, "feedgate_requests_total"); err != nil {
		t.Error(err)
	}
}
