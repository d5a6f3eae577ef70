package main

import (
	"bytes"
	"math"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestJudge(t *testing.T) {
	// medians builds results with one round per contender.
	medians := func(metric string, vs map[string]float64) results {
		res := results{}
		for c, v := range vs {
			res.add(metric, c, v)
		}
		return res
	}
	withSquid := []string{"direct", "feedgate", "squid"}
	noSquid := []string{"direct", "feedgate"}
	tests := []struct {
		name   string
		goal   int // index in goals
		res    results
		names  []string
		figure float64 // NaN: none
		status string
	}{
		{"keep-alive met", 0, medians("keepalive_rps", map[string]float64{"feedgate": 1400, "squid": 1000}), withSquid, 1.4, goalMet},
		{"keep-alive exactly the goal", 0, medians("keepalive_rps", map[string]float64{"feedgate": 1300, "squid": 1000}), withSquid, 1.3, goalMet},
		{"keep-alive not met", 0, medians("keepalive_rps", map[string]float64{"feedgate": 1210, "squid": 1000}), withSquid, 1.21, goalNotMet},
		{"keep-alive a hair short is not met", 0, medians("keepalive_rps", map[string]float64{"feedgate": 1299.9, "squid": 1000}), withSquid, 1.2999, goalNotMet},
		{"p99 lower is better, met", 1, medians("keepalive_p99_ms", map[string]float64{"feedgate": 8, "squid": 10}), withSquid, 0.8, goalMet},
		{"p99 not met", 1, medians("keepalive_p99_ms", map[string]float64{"feedgate": 10.5, "squid": 10}), withSquid, 1.05, goalNotMet},
		{"new connections met", 2, medians("newconn_rps", map[string]float64{"feedgate": 1600, "squid": 1000}), withSquid, 1.6, goalMet},
		{"TLS download over Squid's ratio met", 3, medians("connect_tls_mbps", map[string]float64{"direct": 1000, "feedgate": 900, "squid": 800}), withSquid, 1.125, goalMet},
		{"TLS download over Squid's ratio not met", 3, medians("connect_tls_mbps", map[string]float64{"direct": 1000, "feedgate": 760, "squid": 820}), withSquid, 760.0 / 820, goalNotMet},
		{"TLS download without direct", 3, medians("connect_tls_mbps", map[string]float64{"feedgate": 760, "squid": 820}), withSquid, math.NaN(), goalNoData},
		{"RSS met", 4, medians("tunnel_rss_kib", map[string]float64{"feedgate": 15.9}), noSquid, 15.9, goalMet},
		{"RSS not met", 4, medians("tunnel_rss_kib", map[string]float64{"feedgate": 28, "squid": 34.7}), withSquid, 28, goalNotMet},
		{"Squid missing", 0, medians("keepalive_rps", map[string]float64{"feedgate": 1400}), noSquid, math.NaN(), goalNoSquid},
		{"Squid left out of the names", 2, medians("newconn_rps", map[string]float64{"feedgate": 1400, "squid": 1000}), noSquid, math.NaN(), goalNoSquid},
		{"not measured", 0, results{}, withSquid, math.NaN(), goalNoData},
		{"measured for Squid only", 2, medians("newconn_rps", map[string]float64{"squid": 1000}), withSquid, math.NaN(), goalNoData},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := judge(goals[tt.goal], tt.res, tt.names)
			if v.status != tt.status {
				t.Errorf("status %q; want %q (figure %v, evidence %q)", v.status, tt.status, v.figure, v.evidence)
			}
			switch {
			case math.IsNaN(tt.figure) != math.IsNaN(v.figure):
				t.Errorf("figure %v; want %v", v.figure, tt.figure)
			case !math.IsNaN(tt.figure) && math.Abs(v.figure-tt.figure) > 1e-9:
				t.Errorf("figure %v; want %v", v.figure, tt.figure)
			}
		})
	}
}

func TestGoalWant(t *testing.T) {
	want := []string{"≥ 1.30x", "≤ 0.90x", "≥ 1.50x", "≥ 1.05x Squid's", "≤ 16 KiB"}
	for i, g := range goals {
		if got := g.want(); got != want[i] {
			t.Errorf("goal %q: want() = %q; want %q", g.label, got, want[i])
		}
	}
}

func TestPrintGoals(t *testing.T) {
	res := results{}
	res.add("keepalive_rps", "feedgate", 1210)
	res.add("keepalive_rps", "squid", 1000)
	res.add("tunnel_rss_kib", "feedgate", 14)
	var b bytes.Buffer
	printGoals(&b, judgeGoals(res, []string{"direct", "feedgate", "squid"}))
	// The columns: goal, feedgate's figure, the target, the status.
	var rows [][]string
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n")[2:] {
		rows = append(rows, regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(line), -1))
	}
	want := [][]string{
		{"keep-alive req/s vs Squid", "1.210x (feedgate 1210, Squid 1000)", "≥ 1.30x", goalNotMet},
		{"keep-alive p99 vs Squid", "-", "≤ 0.90x", goalNoData},
		{"new connections/s vs Squid", "-", "≥ 1.50x", goalNoData},
		{"CONNECT TLS download vs direct, over Squid's", "-", "≥ 1.05x Squid's", goalNoData},
		{"RSS per idle tunnel after a TLS handshake", "14.00 KiB", "≤ 16 KiB", goalMet},
	}
	if !slices.EqualFunc(rows, want, slices.Equal) {
		t.Errorf("printGoals:\n%s\nrows %q\nwant %q", b.String(), rows, want)
	}
}
