package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/proxy/accesslog"
)

// TestMetricsExactDeltas: every request moves feedgate_requests_total by
// exactly one for its label set, the duration histogram by one for its
// kind, and the active gauges return to zero.
func TestMetricsExactDeltas(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	to := newTLSOrigin(t)
	e := newEnv(t, envConfig{now: afterCutoffs, resolve: []string{
		resolveTo("www.example.test", 80, hostPort(t, o.URL)),
		resolveTo("dnl-01.geo.kaspersky.com", 80, hostPort(t, o.URL)),
		"www.example.test:443:" + hostPort(t, to.URL),
		"s01.upd.kaspersky.com:443:" + hostPort(t, to.URL),
	}})
	c, tr := e.client(t, to.roots)

	allowed := requestsSeries("none", "none", "allow", "default")
	blocked := requestsSeries("kaspersky", "update", "block", "updates-cutoff")
	untouched := []series{
		requestsSeries("kaspersky", "update", "allow", "default"),
		requestsSeries("kaspersky", "update", "log", "sales-cutoff-flag"),
		requestsSeries("kaspersky", "store", "block", "sales-cutoff-store"),
	}
	durHTTP, durConnect := durationSeries(accesslog.KindHTTP), durationSeries(accesslog.KindConnect)
	watched := append([]series{allowed, blocked, durHTTP, durConnect}, untouched...)
	for _, r := range metrics.UpstreamReasons() {
		watched = append(watched, upstreamErrSeries(r))
	}
	before := e.snapshot(t, watched...)
	totalBefore := sumFamily(t, e, "feedgate_requests_total")

	// 3 allowed plain HTTP, 2 blocked plain HTTP, 1 allowed CONNECT and
	// 1 blocked CONNECT.
	for i := 0; i < 3; i++ {
		if resp, _ := get(t, c, fmt.Sprintf("http://www.example.test/allowed/%d", i)); resp.StatusCode != 200 {
			t.Fatalf("allowed request %d: status %d; want 200", i, resp.StatusCode)
		}
	}
	for i := 0; i < 2; i++ {
		if resp, _ := get(t, c, fmt.Sprintf("http://dnl-01.geo.kaspersky.com/blocked/%d", i)); resp.StatusCode != 403 {
			t.Fatalf("blocked request %d: status %d; want 403", i, resp.StatusCode)
		}
	}
	if resp, _ := get(t, c, "https://www.example.test/hello"); resp.StatusCode != 200 {
		t.Fatalf("allowed CONNECT: status %d; want 200", resp.StatusCode)
	}
	if _, err := c.Get("https://s01.upd.kaspersky.com/"); err == nil {
		t.Fatalf("blocked CONNECT succeeded; want an error")
	}
	tr.CloseIdleConnections()
	e.waitRecords(t, 7, map[string]any{"msg": "request"})
	e.waitIdle(t)

	t.Run("requests_total", func(t *testing.T) {
		var deltas []delta
		deltas = append(deltas, delta{allowed, 4}, delta{blocked, 3})
		for _, s := range untouched {
			deltas = append(deltas, delta{s, 0})
		}
		e.checkDeltas(t, before, deltas...)
		if got := sumFamily(t, e, "feedgate_requests_total") - totalBefore; got != 7 {
			t.Errorf("feedgate_requests_total moved by %v over all series; want 7", got)
		}
	})
	t.Run("upstream_errors_total", func(t *testing.T) {
		var deltas []delta
		for _, r := range metrics.UpstreamReasons() {
			deltas = append(deltas, delta{upstreamErrSeries(r), 0})
		}
		e.checkDeltas(t, before, deltas...)
	})
	t.Run("active_connections", func(t *testing.T) {
		for _, k := range []string{accesslog.KindHTTP, accesslog.KindConnect} {
			if got := e.value(t, activeSeries(k)); got != 0 {
				t.Errorf("active_connections{kind=%q} = %v; want 0", k, got)
			}
		}
	})
	t.Run("request_duration_count", func(t *testing.T) {
		// Every request, blocked or not, ends with a response (or a
		// closed tunnel) and is observed once for its kind.
		e.checkDeltas(t, before, delta{durHTTP, 5}, delta{durConnect, 2})
	})
	t.Run("lint", func(t *testing.T) {
		// What testutil.GatherAndLint does; testutil itself needs a module
		// (kylelemons/godebug) that go.sum does not list.
		mfs, err := e.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
		if err != nil {
			t.Fatalf("promlint: %v", err)
		}
		for _, p := range problems {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	})
	t.Run("no-host-labels", func(t *testing.T) {
		// Label values come from closed sets, never from request hosts.
		mfs, err := e.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					for _, h := range []string{"example.test", "kaspersky.com", "127.0.0.1"} {
						if strings.Contains(lp.GetValue(), h) {
							t.Errorf("%s has label %s=%q; metrics must not be labelled by host or address", mf.GetName(), lp.GetName(), lp.GetValue())
						}
					}
				}
			}
		}
	})
}

// sumFamily adds up every series of a counter family.
func sumFamily(t *testing.T, e *env, name string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestPolicyGauges: feedgate_policy_action and
// feedgate_policy_next_change_timestamp_seconds follow the policy clock.
func TestPolicyGauges(t *testing.T) {
	t.Parallel()
	categories := []string{"update", "licensing", "ksn", "telemetry", "portal", "store", "web"}
	tests := []struct {
		name string
		now  time.Time
		// action in force per category (none/none is always allow).
		actions map[string]string
		// next change per category; missing: no next change.
		next map[string]float64
	}{
		{
			name:    "before-cutoffs",
			now:     beforeCutoffs,
			actions: map[string]string{"update": "allow", "licensing": "allow", "ksn": "allow", "telemetry": "allow", "portal": "allow", "store": "allow", "web": "allow"},
			next:    map[string]float64{"update": 1721448000, "licensing": 1721448000, "ksn": 1721448000, "telemetry": 1721448000, "portal": 1721448000, "store": 1721448000, "web": 1721448000},
		},
		{
			name:    "between-cutoffs",
			now:     betweenCutoffs,
			actions: map[string]string{"update": "log", "licensing": "log", "ksn": "log", "telemetry": "log", "portal": "log", "store": "block", "web": "log"},
			next:    map[string]float64{"update": 1727582400, "licensing": 1727582400, "ksn": 1727582400, "telemetry": 1727582400, "portal": 1727582400, "web": 1727582400},
		},
		{
			name:    "at-updates-cutoff",
			now:     updatesCutoff,
			actions: map[string]string{"update": "block", "licensing": "block", "ksn": "block", "telemetry": "block", "portal": "block", "store": "block", "web": "block"},
		},
		{
			name:    "after-cutoffs",
			now:     afterCutoffs,
			actions: map[string]string{"update": "block", "licensing": "block", "ksn": "block", "telemetry": "block", "portal": "block", "store": "block", "web": "block"},
		},
	}
	if salesCutoff.Unix() != 1721448000 || updatesCutoff.Unix() != 1727582400 {
		t.Fatalf("cut-off constants are off: %d, %d", salesCutoff.Unix(), updatesCutoff.Unix())
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envConfig{now: tt.now})

			// The brief's headline series, read directly.
			for _, a := range []string{"allow", "log", "block"} {
				want := 0.0
				if a == tt.actions["update"] {
					want = 1
				}
				if got := metricValue(t, e.reg, "feedgate_policy_action", "vendor", "kaspersky", "category", "update", "action", a); got != want {
					t.Errorf("feedgate_policy_action{kaspersky,update,%s} = %v; want %v", a, got, want)
				}
			}

			// The whole families, series by series, with nothing extra.
			wantAction := map[string]float64{}
			for _, class := range append([][2]string{{"none", "none"}}, kasperskyClasses(categories)...) {
				inForce := "allow"
				if class[0] == "kaspersky" {
					inForce = tt.actions[class[1]]
				}
				for _, a := range []string{"allow", "log", "block"} {
					v := 0.0
					if a == inForce {
						v = 1
					}
					wantAction[seriesKey("action", a, "category", class[1], "vendor", class[0])] = v
				}
			}
			compareFamily(t, e, "feedgate_policy_action", wantAction)
			wantNext := map[string]float64{}
			for c, v := range tt.next {
				wantNext[seriesKey("category", c, "vendor", "kaspersky")] = v
			}
			compareFamily(t, e, "feedgate_policy_next_change_timestamp_seconds", wantNext)
			if v := metricValue(t, e.reg, "feedgate_policy_next_change_timestamp_seconds", "vendor", "kaspersky", "category", "update"); tt.name == "between-cutoffs" && v != 1727582400 {
				t.Errorf("next change for kaspersky/update = %v; want 1727582400 (2024-09-29T04:00:00Z)", v)
			}
		})
	}
}

func kasperskyClasses(categories []string) [][2]string {
	var out [][2]string
	for _, c := range categories {
		out = append(out, [2]string{"kaspersky", c})
	}
	return out
}

// seriesKey renders label pairs (given in name order) as {a="x",b="y"}.
func seriesKey(pairs ...string) string {
	var parts []string
	for i := 0; i < len(pairs); i += 2 {
		parts = append(parts, fmt.Sprintf("%s=%q", pairs[i], pairs[i+1]))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// compareFamily asserts that the gauge or counter family name has exactly
// the series in want, with those values.
func compareFamily(t *testing.T, e *env, name string, want map[string]float64) {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var pairs []string
			for _, lp := range m.GetLabel() { // sorted by name
				pairs = append(pairs, lp.GetName(), lp.GetValue())
			}
			v := m.GetGauge().GetValue()
			if m.Counter != nil {
				v = m.GetCounter().GetValue()
			}
			got[seriesKey(pairs...)] = v
		}
	}
	for k, w := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("%s%s missing; want %v", name, k, w)
		} else if g != w {
			t.Errorf("%s%s = %v; want %v", name, k, g, w)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s%s = %v present; want no such series", name, k, g)
		}
	}
}

// TestPolicyGaugesFollowClock: the gauges are computed at scrape time, so
// moving the policy clock moves them without any request.
func TestPolicyGaugesFollowClock(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{now: updatesCutoff.Add(-time.Nanosecond)})
	read := func() float64 {
		return metricValue(t, e.reg, "feedgate_policy_action", "vendor", "kaspersky", "category", "update", "action", "block")
	}
	if got := read(); got != 0 {
		t.Errorf("1ns before the updates cut-off: block gauge = %v; want 0", got)
	}
	e.clock.Set(updatesCutoff)
	if got := read(); got != 1 {
		t.Errorf("at the updates cut-off: block gauge = %v; want 1", got)
	}
	// The proxy decides with the same clock.
	conn := e.dial(t)
	if _, err := io.WriteString(conn, connectRequest("s01.upd.kaspersky.com:443")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("CONNECT at the cut-off: status %d; want 403", resp.StatusCode)
	}
}
