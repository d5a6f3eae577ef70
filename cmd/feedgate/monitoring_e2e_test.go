package main

// Tests for the monitoring files in configs/: the Grafana dashboard, the
// Prometheus alert rules and the example scrape config. Besides checking
// their structure, they run a real Prometheus (Debian's prometheus package:
// /usr/bin/prometheus and /usr/bin/promtool) against a real feedgate, and
// evaluate every expression of the dashboard and of the alert rules.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/feedgate/feedgate/configs"
)

// The files under test.
const (
	dashboardFile  = repoRoot + "/configs/grafana/feedgate-dashboard.json"
	alertsFile     = repoRoot + "/configs/prometheus/feedgate-alerts.yml"
	scrapeFile     = repoRoot + "/configs/prometheus/scrape.yml"
	alertUnitTests = repoRoot + "/configs/testdata/monitoring/alerts_test.yml"
)

// bounded is how long any wait in these tests may take.
const bounded = 30 * time.Second

// ---------------------------------------------------------------------------
// The dashboard

type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type dashTarget struct {
	RefID      string `json:"refId"`
	Expr       string `json:"expr"`
	Datasource *dsRef `json:"datasource"`
}

type dashPanel struct {
	ID         int          `json:"id"`
	Type       string       `json:"type"`
	Title      string       `json:"title"`
	Datasource *dsRef       `json:"datasource"`
	Targets    []dashTarget `json:"targets"`
	Panels     []dashPanel  `json:"panels"` // a row's panels, when it is collapsed
}

type dashVariable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"` // a string, or an object for Prometheus query variables
	Definition string          `json:"definition"`
	Datasource *dsRef          `json:"datasource"`
	Multi      bool            `json:"multi"`
	IncludeAll bool            `json:"includeAll"`
}

type dashAnnotation struct {
	Name       string `json:"name"`
	BuiltIn    int    `json:"builtIn"`
	Expr       string `json:"expr"`
	Datasource *dsRef `json:"datasource"`
}

type dashboard struct {
	UID           string      `json:"uid"`
	Title         string      `json:"title"`
	SchemaVersion int         `json:"schemaVersion"`
	Panels        []dashPanel `json:"panels"`
	Templating    struct {
		List []dashVariable `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []dashAnnotation `json:"list"`
	} `json:"annotations"`
}

func loadDashboard(t *testing.T) *dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return &d
}

// allPanels returns every panel, rows' nested panels included.
func allPanels(ps []dashPanel) []dashPanel {
	var out []dashPanel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// query is a PromQL expression and where it comes from.
type query struct {
	where string
	expr  string
}

// dashboardQueries returns every expression of the dashboard: panel targets
// and annotations.
func dashboardQueries(d *dashboard) []query {
	var qs []query
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			qs = append(qs, query{fmt.Sprintf("panel %q target %s", p.Title, tg.RefID), tg.Expr})
		}
	}
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			qs = append(qs, query{fmt.Sprintf("annotation %q", a.Name), a.Expr})
		}
	}
	return qs
}

// grafanaVars stands in for Grafana's variables, to run a dashboard
// expression as a plain instant query.
var grafanaVars = strings.NewReplacer(
	"${instance}", ".*", "$instance", ".*",
	"$__rate_interval", "1m", "$__range", "1h", "$__interval", "15s",
)

func expandGrafana(t *testing.T, expr string) string {
	t.Helper()
	out := grafanaVars.Replace(expr)
	if strings.Contains(out, "$") {
		t.Fatalf("expression %q uses a Grafana variable this test does not expand", expr)
	}
	return out
}

// feedgateSelector matches a feedgate metric and its label matchers.
var feedgateSelector = regexp.MustCompile(`\bfeedgate_[a-z_]+(\{[^}]*\})?`)

const instanceFilter = `instance=~"$instance"`

func TestDashboardStructure(t *testing.T) {
	d := loadDashboard(t)
	if d.UID != "feedgate" || d.Title != "feedgate" {
		t.Errorf("uid %q title %q; want both feedgate", d.UID, d.Title)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d; want a current one (39)", d.SchemaVersion)
	}

	vars := map[string]dashVariable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if v, ok := vars["datasource"]; !ok || v.Type != "datasource" || string(v.Query) != `"prometheus"` {
		t.Errorf("variable datasource = %+v; want type datasource, query prometheus", v)
	}
	const instanceQuery = "label_values(feedgate_build_info, instance)"
	v, ok := vars["instance"]
	switch {
	case !ok:
		t.Errorf("no variable instance")
	case v.Type != "query" || !v.Multi || !v.IncludeAll:
		t.Errorf("variable instance: type %q multi %v includeAll %v; want query, multi and includeAll", v.Type, v.Multi, v.IncludeAll)
	case !strings.Contains(string(v.Query), instanceQuery) || v.Definition != instanceQuery:
		t.Errorf("variable instance: query %s definition %q; want %s", v.Query, v.Definition, instanceQuery)
	case v.Datasource == nil || v.Datasource.UID != "${datasource}":
		t.Errorf("variable instance: datasource %+v; want ${datasource}", v.Datasource)
	}

	promDS := func(ds *dsRef) bool { return ds != nil && ds.Type == "prometheus" && ds.UID == "${datasource}" }
	ids := map[int]string{}
	var panels int
	for _, p := range allPanels(d.Panels) {
		if p.Title == "" {
			t.Errorf("panel %d (%s) has no title", p.ID, p.Type)
		}
		if other, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		panels++
		if !promDS(p.Datasource) {
			t.Errorf("panel %q: datasource %+v; want {prometheus ${datasource}}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no target", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q target %s has no expr", p.Title, tg.RefID)
			}
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: target refId %q is empty or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource != nil && !promDS(tg.Datasource) {
				t.Errorf("panel %q target %s: datasource %+v; want {prometheus ${datasource}}", p.Title, tg.RefID, tg.Datasource)
			}
		}
	}
	if panels < 13 {
		t.Errorf("%d panels; want at least the 13 of the brief", panels)
	}
	for _, a := range d.Annotations.List {
		if a.BuiltIn == 0 && !promDS(a.Datasource) {
			t.Errorf("annotation %q: datasource %+v; want {prometheus ${datasource}}", a.Name, a.Datasource)
		}
	}

	// Every feedgate metric is filtered by the instance variable, and the
	// expressions use only the variables the integration test expands.
	for _, q := range dashboardQueries(d) {
		for _, m := range feedgateSelector.FindAllStringSubmatch(q.expr, -1) {
			if !strings.Contains(m[1], instanceFilter) {
				t.Errorf("%s: %s is not filtered by %s", q.where, m[0], instanceFilter)
			}
		}
		expandGrafana(t, q.expr)
	}
}

// ---------------------------------------------------------------------------
// The alert rules and the scrape config

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

func loadRules(t *testing.T) []rule {
	t.Helper()
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	if len(f.Groups) != 1 || f.Groups[0].Name != "feedgate" {
		t.Fatalf("%s: want one group, feedgate", alertsFile)
	}
	return f.Groups[0].Rules
}

// runTool runs a program of Debian's prometheus package: prometheus or
// promtool.
func runTool(t *testing.T, stdin io.Reader, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(tool(t, name, "prometheus"), args...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestAlertRulesPromtool(t *testing.T) {
	rules := loadRules(t)
	want := []string{
		"FeedgateClientsNearCutoff", "FeedgateComplianceBreach", "FeedgateBlockRateSpike",
		"FeedgateConfigReloadFailing", "FeedgateDown", "FeedgateAbsent", "FeedgateUpstreamErrorRatio",
	}
	have := map[string]bool{}
	for _, r := range rules {
		if r.Alert == "" {
			t.Errorf("rule %q is not an alert", r.Record)
			continue
		}
		have[r.Alert] = true
		if s := r.Labels["severity"]; s != "critical" && s != "warning" && s != "info" {
			t.Errorf("%s: severity %q; want critical, warning or info", r.Alert, s)
		}
		for _, a := range []string{"summary", "description", "runbook"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("%s: no %s annotation", r.Alert, a)
			}
		}
		if n := strings.Count(strings.TrimSpace(r.Annotations["runbook"]), "\n"); n < 2 {
			t.Errorf("%s: the runbook has %d lines; want steps an operator can follow", r.Alert, n+1)
		}
	}
	for _, a := range want {
		if !have[a] {
			t.Errorf("no alert %s", a)
		}
	}

	if out, err := runTool(t, nil, "promtool", "check", "rules", alertsFile); err != nil {
		t.Errorf("promtool check rules %s: %v\n%s", alertsFile, err, out)
	}
	// The unit tests name the rule file relative to themselves.
	if out, err := runTool(t, nil, "promtool", "test", "rules", alertUnitTests); err != nil {
		t.Errorf("promtool test rules %s: %v\n%s", alertUnitTests, err, out)
	}

	// The scrape config, with its rule_files pointed at the alerts file.
	b, err := os.ReadFile(scrapeFile)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("%s: %v", scrapeFile, err)
	}
	jobs, _ := cfg["scrape_configs"].([]any)
	var feedgateJob bool
	for _, j := range jobs {
		if j, _ := j.(map[string]any); j["job_name"] == "feedgate" {
			feedgateJob = true
			if s := fmt.Sprint(j["static_configs"]); !strings.Contains(s, "gw1:9128") || !strings.Contains(s, "gw2:9128") {
				t.Errorf("%s: job feedgate targets %s; want gw1:9128 and gw2:9128", scrapeFile, s)
			}
		}
	}
	if !feedgateJob {
		t.Errorf("%s has no job feedgate, which FeedgateDown and FeedgateAbsent select", scrapeFile)
	}
	if rf := fmt.Sprint(cfg["rule_files"]); !strings.Contains(rf, filepath.Base(alertsFile)) {
		t.Errorf("%s: rule_files %s; want %s", scrapeFile, rf, filepath.Base(alertsFile))
	}
	abs, err := filepath.Abs(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg["rule_files"] = []string{abs}
	b, err = yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	copyFile := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(copyFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runTool(t, nil, "promtool", "check", "config", copyFile)
	if err != nil || !strings.Contains(out, "1 rule files found") {
		t.Errorf("promtool check config on %s with rule_files [%s]: %v\n%s", scrapeFile, abs, err, out)
	}
}

// ---------------------------------------------------------------------------
// Processes: feedgate, Prometheus, origins

// client returns an http.Client that uses i as its proxy.
func (i *instance) client() *http.Client {
	pu := &url.URL{Scheme: "http", Host: i.Proxy}
	return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}, Timeout: 20 * time.Second}
}

// direct is an http.Client that ignores proxy settings from the environment.
var direct = &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 10 * time.Second}

// textOrigin starts a plain HTTP server standing in for some hosts; every
// path answers body.
func textOrigin(t *testing.T, body string) *origin {
	return newOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Origin", "test")
		io.WriteString(w, body)
	})
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// promServer is a running Prometheus.
type promServer struct {
	*process
	t    *testing.T
	base string // http://127.0.0.1:PORT
}

// startPrometheus runs Prometheus with a config that scrapes the admin
// listeners as job "feedgate" every second, and evaluates a copy of the
// alert rules every second. It waits until Prometheus is ready.
func startPrometheus(t *testing.T, targets ...string) *promServer {
	t.Helper()
	bin := tool(t, "prometheus", "prometheus")
	dir := t.TempDir()
	rules, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	rulesCopy := filepath.Join(dir, "feedgate-alerts.yml")
	if err := os.WriteFile(rulesCopy, rules, 0o600); err != nil {
		t.Fatal(err)
	}
	quoted := make([]string, len(targets))
	for i, tg := range targets {
		quoted[i] = strconv.Quote(tg)
	}
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %s
scrape_configs:
  - job_name: feedgate
    static_configs:
      - targets: [%s]
`, strconv.Quote(rulesCopy), strings.Join(quoted, ", "))
	configFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	// The port is picked free and then given to Prometheus, so another
	// process may take it in between: try again a few times.
	for attempt := 1; ; attempt++ {
		addr := "127.0.0.1:" + freePort(t)
		p := startProcess(t, "prometheus", bin, nil,
			"--config.file="+configFile,
			"--storage.tsdb.path="+filepath.Join(dir, fmt.Sprintf("data%d", attempt)),
			"--web.listen-address="+addr,
			"--log.level=warn")
		prom := &promServer{process: p, t: t, base: "http://" + addr}
		deadline := time.Now().Add(bounded)
		for {
			if resp, err := direct.Get(prom.base + "/-/ready"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return prom
				}
			}
			if p.hasExited() {
				if attempt < 3 && strings.Contains(p.stderr.String(), "address already in use") {
					break
				}
				t.Fatalf("prometheus exited: %v\nstderr:\n%s", p.err, p.stderr)
			}
			if time.Now().After(deadline) {
				t.Fatalf("prometheus not ready in %v\nstderr:\n%s", bounded, p.stderr)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// sample is one element of an instant vector.
type sample struct {
	Metric map[string]string
	Value  float64
}

func (s sample) String() string { return fmt.Sprintf("%v %v", s.Metric, s.Value) }

// query runs an instant query at the current time, whose result must be an
// instant vector. It returns an error for a failed query, with Prometheus's
// error text.
func (p *promServer) query(expr string) ([]sample, error) {
	resp, err := direct.Get(p.base + "/api/v1/query?" + url.Values{"query": {expr}}.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
		Data      struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("HTTP %d: %v", resp.StatusCode, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("status %q: %s: %s", r.Status, r.ErrorType, r.Error)
	}
	if r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("result type %q; want an instant vector", r.Data.ResultType)
	}
	var raw []struct {
		Metric map[string]string `json:"metric"`
		Value  [2]any            `json:"value"` // [time, "value"]
	}
	if err := json.Unmarshal(r.Data.Result, &raw); err != nil {
		return nil, err
	}
	out := make([]sample, len(raw))
	for i, s := range raw {
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return nil, fmt.Errorf("value %v: %v", s.Value, err)
		}
		out[i] = sample{Metric: s.Metric, Value: v}
	}
	return out, nil
}

// mustQuery is query that fails the test on an error.
func (p *promServer) mustQuery(expr string) []sample {
	p.t.Helper()
	v, err := p.query(expr)
	if err != nil {
		p.t.Fatalf("query %s: %v", expr, err)
	}
	return v
}

// waitFor polls cond until it is true, for at most bounded.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(bounded)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s; last: %s", bounded, what, detail)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitValue waits until expr is a one-element vector whose value is want.
func (p *promServer) waitValue(what, expr string, want float64) {
	p.t.Helper()
	waitFor(p.t, what, func() (bool, string) {
		v, err := p.query(expr)
		if err != nil {
			return false, err.Error()
		}
		return len(v) == 1 && v[0].Value == want, fmt.Sprint(v)
	})
}

// waitRulesEvaluatedAfter waits until every rule has been evaluated after
// t0, and fails if a rule's evaluation failed.
func (p *promServer) waitRulesEvaluatedAfter(t0 time.Time) {
	p.t.Helper()
	waitFor(p.t, "a rule evaluation after the traffic was scraped", func() (bool, string) {
		resp, err := direct.Get(p.base + "/api/v1/rules")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		var r struct {
			Data struct {
				Groups []struct {
					Rules []struct {
						Name           string    `json:"name"`
						Health         string    `json:"health"`
						LastError      string    `json:"lastError"`
						LastEvaluation time.Time `json:"lastEvaluation"`
					} `json:"rules"`
				} `json:"groups"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return false, err.Error()
		}
		var n int
		for _, g := range r.Data.Groups {
			for _, rl := range g.Rules {
				n++
				if rl.Health == "err" {
					p.t.Fatalf("rule %s failed to evaluate: %s", rl.Name, rl.LastError)
				}
				if rl.Health != "ok" || !rl.LastEvaluation.After(t0) {
					return false, fmt.Sprintf("rule %s: health %q, last evaluated %v", rl.Name, rl.Health, rl.LastEvaluation)
				}
			}
		}
		return n > 0, "no rules loaded"
	})
}

// alerts returns the alerts in state ("firing" or "pending"), by name.
func (p *promServer) alerts(state string) []string {
	p.t.Helper()
	var names []string
	for _, s := range p.mustQuery(fmt.Sprintf(`ALERTS{alertstate=%q}`, state)) {
		names = append(names, s.Metric["alertname"])
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// ---------------------------------------------------------------------------
// The integration test

// stack is a feedgate scraped by its own Prometheus, with origins standing
// in for the hosts it reaches.
type stack struct {
	fg   *instance
	prom *promServer
	sent int // requests sent through feedgate
}

// Hosts the traffic goes to. The Kaspersky ones are real catalog names;
// every name is resolved by feedgate's -resolve to a local origin.
const (
	updateHost  = "s01.upd.kaspersky.com" // kaspersky/update: blocked after the updates cut-off
	tiHost      = "opentip.kaspersky.com" // kaspersky/web, allowed by threat-intel-exempt
	otherHost   = "www.example.test"      // no vendor
	refusedHost = "down.example.test"     // resolved to a closed port
)

// reportPolicy writes the built-in policy with mode = "report", and
// returns its path.
func reportPolicy(t *testing.T) string {
	t.Helper()
	b, err := configs.Files().ReadFile(configs.DefaultPolicy)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, r := range [][2]string{
		{`mode = "enforce"`, `mode = "report"`},
		{`catalogs = ["catalog/kaspersky.toml"]`, `catalogs = ["builtin:catalog/kaspersky.toml"]`},
	} {
		if strings.Count(text, r[0]) != 1 {
			t.Fatalf("the built-in policy does not have exactly one line %s; this test rewrites it", r[0])
		}
		text = strings.Replace(text, r[0], r[1], 1)
	}
	path := filepath.Join(t.TempDir(), "report.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startStack starts the origins, a feedgate at afterCutoffs in mode
// (enforce with the built-in policy, or report) and a Prometheus scraping
// it, and waits for the first scrape.
func startStack(t *testing.T, mode string) *stack {
	t.Helper()
	vendor := textOrigin(t, "kaspersky origin\n")
	other := textOrigin(t, "other origin\n")
	vendorAddr, otherAddr := vendor.Listener.Addr().String(), other.Listener.Addr().String()
	args := []string{"-at", afterUpdates,
		"-resolve", updateHost + ":80:" + vendorAddr,
		"-resolve", tiHost + ":80:" + vendorAddr,
		"-resolve", otherHost + ":80:" + otherAddr,
		"-resolve", otherHost + ":443:" + otherAddr,
		"-resolve", refusedHost + ":80:127.0.0.1:" + freePort(t),
	}
	if mode == "report" {
		args = append(args, "-config", reportPolicy(t))
	}
	fg := start(t, args...)
	if fg.Mode != mode {
		t.Fatalf("feedgate started in mode %q; want %q", fg.Mode, mode)
	}
	prom := startPrometheus(t, fg.Admin)
	// A first scrape before any traffic, so that rate() and increase() see
	// the counters go up from zero.
	waitFor(t, "Prometheus's first scrape of feedgate", func() (bool, string) {
		v, err := prom.query(`count(feedgate_requests_total{job="feedgate"}) > 0 and on () count(up{job="feedgate"} == 1) > 0`)
		if err != nil {
			return false, err.Error()
		}
		return len(v) == 1, fmt.Sprint(v)
	})
	return &stack{fg: fg, prom: prom}
}

// get sends a GET through feedgate and checks the status.
func (s *stack) get(t *testing.T, rawURL string, want int) {
	t.Helper()
	resp, err := s.fg.client().Get(rawURL)
	if err != nil {
		t.Fatalf("GET %s through feedgate: %v", rawURL, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	s.sent++
	if resp.StatusCode != want {
		t.Fatalf("GET %s through feedgate: status %d; want %d (X-Feedgate-Rule %q, X-Feedgate-Error %q)",
			rawURL, resp.StatusCode, want, resp.Header.Get("X-Feedgate-Rule"), resp.Header.Get("X-Feedgate-Error"))
	}
}

// connect opens a CONNECT tunnel to hostport and speaks plain HTTP in it:
// feedgate's SNI check finds no TLS, and the CONNECT host decides.
func (s *stack) connect(t *testing.T, hostport string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.fg.Proxy, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", hostport, hostport)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT %s: %v %v; want 200", hostport, resp, err)
	}
	host, _, _ := net.SplitHostPort(hostport)
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host)
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("GET in the tunnel to %s: %v", hostport, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	s.sent++
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET in the tunnel to %s: status %d; want 200", hostport, resp.StatusCode)
	}
}

// drive sends the test traffic: Kaspersky updates (403 in enforce mode, 200
// in report mode), Threat Intelligence, non-vendor requests, a tunnel and a
// request whose upstream refuses the connection. It then waits until
// Prometheus has scraped all of it.
func (s *stack) drive(t *testing.T, updateStatus int) {
	t.Helper()
	// feedgate creates the series of a host rule (threat-intel-exempt) at
	// its first request, not in advance, so increase() cannot count that
	// request. Have it scraped on its own: the next one is an increase, which
	// FeedgateComplianceBreach must tell from a breach.
	s.get(t, "http://"+tiHost+"/api/v1/search/hash", http.StatusOK)
	s.prom.waitValue("a scrape with the first Threat Intelligence request",
		`sum(feedgate_requests_total{job="feedgate",rule="threat-intel-exempt"})`, 1)
	s.get(t, "http://"+tiHost+"/", http.StatusOK)
	for i := range 3 {
		s.get(t, fmt.Sprintf("http://%s/bases/av/kdb/i386/base%d.kdc", updateHost, i), updateStatus)
	}
	s.get(t, "http://"+otherHost+"/", http.StatusOK)
	s.get(t, "http://"+otherHost+"/index.html", http.StatusOK)
	s.connect(t, otherHost+":443")
	s.get(t, "http://"+refusedHost+"/", http.StatusBadGateway)
	s.prom.waitValue("a scrape with every request sent", `sum(feedgate_requests_total{job="feedgate"})`, float64(s.sent))
}

// complianceBreach returns the expression of FeedgateComplianceBreach.
func complianceBreach(t *testing.T) string {
	t.Helper()
	for _, r := range loadRules(t) {
		if r.Alert == "FeedgateComplianceBreach" {
			return r.Expr
		}
	}
	t.Fatal("no alert FeedgateComplianceBreach")
	return ""
}

// TestMonitoringAgainstRealPrometheus runs feedgate after both cut-offs,
// once enforcing the built-in policy and once in report mode, each scraped
// by a real Prometheus that evaluates the alert rules, and checks the
// dashboard and alert expressions against what Prometheus stored.
func TestMonitoringAgainstRealPrometheus(t *testing.T) {
	tool(t, "prometheus", "prometheus")
	d := loadDashboard(t)
	rules := loadRules(t)
	breach := complianceBreach(t)

	t.Run("enforce", func(t *testing.T) {
		t.Parallel()
		s := startStack(t, "enforce")
		s.drive(t, http.StatusForbidden)
		scraped := time.Now()
		p := s.prom

		// (a) The counters, as Prometheus stored them.
		for _, c := range []struct{ expr, what string }{
			{`feedgate_requests_total{vendor="kaspersky",category="update",action="block",rule="updates-cutoff"}`, "blocked updates"},
			{`feedgate_requests_total{vendor="kaspersky",category="web",action="allow",rule="threat-intel-exempt"}`, "Threat Intelligence, exempt"},
			{`sum(feedgate_requests_total{vendor="none",category="none",action="allow",rule="default"})`, "non-vendor traffic"},
			{`feedgate_upstream_errors_total{reason="refused"}`, "the refused upstream"},
			{`feedgate_sni_checks_total{result="not_tls"}`, "the tunnel's SNI check"},
			{`feedgate_clients{vendor="kaspersky",category="update"}`, "clients of kaspersky/update"},
		} {
			v := p.mustQuery(c.expr)
			if len(v) != 1 || v[0].Value <= 0 {
				t.Errorf("%s: %s = %v; want one series > 0", c.what, c.expr, v)
			}
		}

		// (b) Every expression evaluates; the dashboard's return data, but
		// for those that cannot after both cut-offs.
		mayBeEmpty := map[string]bool{
			// No change is scheduled after the updates cut-off.
			"feedgate_policy_next_change_timestamp_seconds{" + instanceFilter + "} - time()": true,
			// No policy change or reload happened.
			`changes(feedgate_policy_action{` + instanceFilter + `, action="block"}[2m]) > 0`:                true,
			`changes(feedgate_config_last_reload_success_timestamp_seconds{` + instanceFilter + `}[2m]) > 0`: true,
		}
		for _, q := range dashboardQueries(d) {
			v, err := p.query(expandGrafana(t, q.expr))
			switch {
			case err != nil:
				t.Errorf("%s: %s: %v", q.where, q.expr, err)
			case len(v) == 0 && !mayBeEmpty[q.expr]:
				t.Errorf("%s: %s returned no data", q.where, q.expr)
			}
		}
		for _, r := range rules {
			if _, err := p.query(r.Expr); err != nil {
				t.Errorf("alert %s: %s: %v", r.Alert, r.Expr, err)
			}
		}
		// The request-rate panels show the blocked updates.
		v := p.mustQuery(`sum by (vendor, category, action) (rate(feedgate_requests_total{instance=~".*"}[1m]))`)
		if !slices.ContainsFunc(v, func(s sample) bool {
			return s.Metric["category"] == "update" && s.Metric["action"] == "block" && s.Value > 0
		}) {
			t.Errorf("requests per second by category and action: %v; want kaspersky/update block > 0", v)
		}

		// (c) No breach: the only Kaspersky traffic let through is the
		// Threat Intelligence exemption.
		if v := p.mustQuery(breach); len(v) != 0 {
			t.Errorf("FeedgateComplianceBreach in enforce mode = %v; want no series", v)
		}
		p.waitRulesEvaluatedAfter(scraped)
		if firing := p.alerts("firing"); len(firing) != 0 {
			t.Errorf("alerts firing in enforce mode: %v; want none", firing)
		}
	})

	t.Run("report", func(t *testing.T) {
		t.Parallel()
		s := startStack(t, "report")
		// Before any traffic there is nothing to report.
		if v := s.prom.mustQuery(breach); len(v) != 0 {
			t.Errorf("FeedgateComplianceBreach before any traffic = %v; want no series", v)
		}
		s.drive(t, http.StatusOK)
		scraped := time.Now()
		p := s.prom

		// feedgate_policy_action reports the action applied: log, not block,
		// in report mode. That is why FeedgateComplianceBreach selects the
		// blocking rules by name as well.
		if v := p.mustQuery(`feedgate_policy_action{vendor="kaspersky",category="update",action="log"} == 1`); len(v) != 1 {
			t.Errorf("policy action of kaspersky/update in report mode: log = %v; want 1", v)
		}
		v := p.mustQuery(breach)
		if len(v) != 1 || v[0].Metric["category"] != "update" || v[0].Metric["action"] != "log" ||
			v[0].Metric["rule"] != "updates-cutoff" || v[0].Value <= 0 {
			t.Errorf("FeedgateComplianceBreach in report mode = %v; want kaspersky/update logged by updates-cutoff, > 0", v)
		}
		for _, r := range rules {
			if _, err := p.query(r.Expr); err != nil {
				t.Errorf("alert %s: %s: %v", r.Alert, r.Expr, err)
			}
		}
		p.waitRulesEvaluatedAfter(scraped)
		waitFor(t, "FeedgateComplianceBreach to fire", func() (bool, string) {
			firing := p.alerts("firing")
			return slices.Equal(firing, []string{"FeedgateComplianceBreach"}), fmt.Sprint(firing)
		})
	})
}

// ---------------------------------------------------------------------------
// feedgate's exposition

// TestFeedgateMetricsPromtool lints feedgate's /metrics with promtool, and
// checks that the dashboard and the alert rules use only metrics feedgate
// exports, and that the dashboard shows every one of them. feedgate runs
// between the cut-offs, where every metric has a series: a next policy
// change is scheduled, and a client has used a vendor category.
func TestFeedgateMetricsPromtool(t *testing.T) {
	tool(t, "promtool", "prometheus")
	origin := textOrigin(t, "kaspersky origin\n")
	fg := start(t, "-at", betweenCuts, "-resolve", updateHost+":80:"+origin.Listener.Addr().String())
	resp, err := fg.client().Get("http://" + updateHost + "/bases/av/kdb/i386/base.kdc")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Origin") != "test" {
		t.Fatalf("update between the cut-offs: status %d; want 200 from the origin", resp.StatusCode)
	}

	resp, err = direct.Get("http://" + fg.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	if out, err := runTool(t, bytes.NewReader(body), "promtool", "check", "metrics"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("promtool check metrics on feedgate's /metrics: %v\n%s", err, out)
	}

	samples := map[string]bool{}  // names of the samples
	families := map[string]bool{} // feedgate's metric families
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			if name, _, _ := strings.Cut(f, " "); strings.HasPrefix(name, "feedgate_") {
				families[name] = true
			}
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		samples[strings.FieldsFunc(line, func(r rune) bool { return r == '{' || r == ' ' })[0]] = true
	}

	used := map[string]bool{} // metric names the dashboard uses
	check := func(where, expr string, dashboard bool) {
		for _, m := range feedgateSelector.FindAllStringSubmatch(expr, -1) {
			name, _, _ := strings.Cut(m[0], "{")
			if !samples[name] {
				t.Errorf("%s uses %s, which feedgate does not export", where, name)
			}
			if dashboard {
				used[name] = true
			}
		}
	}
	for _, q := range dashboardQueries(loadDashboard(t)) {
		check("dashboard "+q.where, q.expr, true)
	}
	for _, r := range loadRules(t) {
		check("alert "+r.Alert, r.Expr, false)
	}
	for f := range families {
		if !used[f] && !used[f+"_bucket"] && !used[f+"_count"] && !used[f+"_sum"] {
			t.Errorf("feedgate exports %s, but no dashboard panel shows it; add one to %s", f, dashboardFile)
		}
	}
}
