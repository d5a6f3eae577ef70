package admin

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/configs"
	"github.com/feedgate/feedgate/proxy/activity"
	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/config"
)

// fakeActivity serves fixed recent traffic, and keeps the filter it was
// asked for.
type fakeActivity struct {
	hour, day activity.Traffic
	decisions []activity.Decision
	asked     []activity.Filter
}

func (f *fakeActivity) Hour(time.Time) activity.Traffic { return f.hour }
func (f *fakeActivity) Day(time.Time) activity.Traffic  { return f.day }
func (f *fakeActivity) Latest(filter activity.Filter, limit int) []activity.Decision {
	f.asked = append(f.asked, filter)
	if limit > 0 && limit < len(f.decisions) {
		return f.decisions[:limit]
	}
	return f.decisions
}

// defaultPolicyDeps are testDeps with the built-in policy, at now on the
// policy clock.
func defaultPolicyDeps(t *testing.T, now time.Time) Deps {
	t.Helper()
	d := testDeps(t)
	builtin := rules.FS{FS: configs.Files()}
	c, _, err := config.Load(builtin, configs.DefaultPolicy, rules.Options{Builtin: builtin})
	if err != nil {
		t.Fatal(err)
	}
	d.Config = func() *config.Config { return c }
	d.Now = func() time.Time { return now }
	d.Wall = func() time.Time { return now }
	return d
}

// TestCategoryStates reads the built-in policy's update category at the
// instants around its cut-offs, to the nanosecond.
func TestCategoryStates(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	sales := time.Date(2024, 7, 20, 0, 0, 0, 0, ny)
	updates := time.Date(2024, 9, 29, 0, 0, 0, 0, ny)
	for _, tc := range []struct {
		name       string
		at         time.Time
		action     string
		since      time.Time // zero: always
		nextAction string    // "": no next change
		next       time.Time
	}{
		{"long before", sales.AddDate(-1, 0, 0), "allow", time.Time{}, "log", sales},
		{"just before the sales cut-off", sales.Add(-time.Nanosecond), "allow", time.Time{}, "log", sales},
		{"at the sales cut-off", sales, "log", sales, "block", updates},
		{"just before the updates cut-off", updates.Add(-time.Nanosecond), "log", sales, "block", updates},
		{"at the updates cut-off", updates, "block", updates, "", time.Time{}},
		{"years after", updates.AddDate(2, 0, 0), "block", updates, "", time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := defaultPolicyDeps(t, tc.at)
			var st *CategoryState
			for _, c := range d.status().Categories {
				if c.Vendor == "kaspersky" && c.Category == "update" {
					st = &c
				}
			}
			if st == nil {
				t.Fatal("no kaspersky/update category")
			}
			if st.Action != tc.action {
				t.Errorf("action %s; want %s", st.Action, tc.action)
			}
			if (st.Since == nil) != tc.since.IsZero() || st.Since != nil && !st.Since.Equal(tc.since) {
				t.Errorf("since %v; want %v", st.Since, tc.since)
			}
			switch {
			case tc.nextAction == "" && st.Next != nil:
				t.Errorf("next %+v; want none", st.Next)
			case tc.nextAction != "" && st.Next == nil:
				t.Errorf("no next change; want %s at %v", tc.nextAction, tc.next)
			case st.Next != nil:
				if st.Next.Action != tc.nextAction || !st.Next.At.Equal(tc.next) {
					t.Errorf("next %s at %v; want %s at %v", st.Next.Action, st.Next.At, tc.nextAction, tc.next)
				}
				if want := tc.next.Sub(tc.at).Seconds(); st.Next.InSeconds != want {
					t.Errorf("in %v s; want %v", st.Next.InSeconds, want)
				}
			}
		})
	}
}

func TestStatusAPI(t *testing.T) {
	at := time.Date(2024, 8, 15, 12, 0, 0, 0, time.UTC)
	d := defaultPolicyDeps(t, at)
	d.Reloads = func() ReloadStatus {
		return ReloadStatus{At: at, Trigger: "SIGHUP", Error: "policy.toml:3: unknown action", LastSuccess: at.Add(-time.Hour)}
	}
	resp, body := serve(t, d, "GET", "/api/v1/status")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("/api/v1/status: %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var got StatusReply
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if got.Policy.Name != "us-bis-kaspersky-2024" || got.Policy.Mode != "enforce" || got.Policy.Timezone != "America/New_York" ||
		len(got.Policy.Catalogs) != 1 || got.Policy.Catalogs[0].Version == "" {
		t.Errorf("policy %+v", got.Policy)
	}
	if got.Reload.Success || got.Reload.Trigger != "SIGHUP" || !strings.Contains(got.Reload.Error, "policy.toml:3") {
		t.Errorf("reload %+v", got.Reload)
	}
	if len(got.Categories) == 0 || len(got.Links) == 0 {
		t.Errorf("categories %v, links %v", got.Categories, got.Links)
	}
	for _, l := range got.Links {
		if resp, _ := serve(t, d, "GET", l.URL); resp.StatusCode != 200 {
			t.Errorf("link %s (%s): %d", l.Name, l.URL, resp.StatusCode)
		}
	}
}

// hostileDecision carries markup wherever a request puts text on the page.
var hostileDecision = activity.Decision{
	Time: time.Date(2024, 10, 1, 12, 0, 0, 0, time.UTC), Client: netip.MustParseAddr("192.0.2.7"),
	Kind: "http", Method: `GET<svg onload=alert(1)>`, Host: `a<b>c.kaspersky.com`, Port: 80,
	Path: `/"><script>alert(1)</script>`, Vendor: "kaspersky", Category: "update", Rule: "updates-cutoff", Action: "block",
}

func TestDecisionsAPI(t *testing.T) {
	d := defaultPolicyDeps(t, time.Date(2024, 10, 1, 12, 0, 0, 0, time.UTC))
	fa := &fakeActivity{decisions: []activity.Decision{hostileDecision, hostileDecision, hostileDecision}}
	d.Activity = fa
	for _, tc := range []struct {
		target string
		status int
		count  int
		filter activity.Filter
	}{
		{"/api/v1/decisions", 200, 3, activity.Filter{}},
		{"/api/v1/decisions?limit=2", 200, 2, activity.Filter{}},
		{"/api/v1/decisions?client=::ffff:192.0.2.7&host=Kaspersky&action=block", 200, 3,
			activity.Filter{Client: netip.MustParseAddr("192.0.2.7"), Host: "Kaspersky", Action: "block"}},
		{"/api/v1/decisions?client=nope", 400, 0, activity.Filter{}},
		{"/api/v1/decisions?action=allow", 400, 0, activity.Filter{}},
		{"/api/v1/decisions?limit=-1", 400, 0, activity.Filter{}},
		{"/api/v1/decisions?host=%zz", 400, 0, activity.Filter{}},
	} {
		fa.asked = nil
		resp, body := serve(t, d, "GET", tc.target)
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %d; want %d\n%s", tc.target, resp.StatusCode, tc.status, body)
			continue
		}
		if tc.status != 200 {
			if !strings.Contains(body, `"error"`) {
				t.Errorf("%s: %s; want a JSON error", tc.target, body)
			}
			continue
		}
		var got DecisionsReply
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatal(err)
		}
		if got.Count != tc.count || len(got.Decisions) != tc.count {
			t.Errorf("%s: count %d, %d decisions; want %d", tc.target, got.Count, len(got.Decisions), tc.count)
		}
		if len(fa.asked) != 1 || fa.asked[0] != tc.filter {
			t.Errorf("%s: asked %+v; want %+v", tc.target, fa.asked, tc.filter)
		}
		// encoding/json escapes <, > and & in strings: the JSON is safe to
		// paste into HTML too.
		if strings.ContainsAny(body, "<>") {
			t.Errorf("%s: raw markup in the JSON:\n%s", tc.target, body)
		}
		if got.Decisions[0] != hostileDecision {
			t.Errorf("%s: decoded %+v; want %+v", tc.target, got.Decisions[0], hostileDecision)
		}
	}
}

// TestPageEscapes renders every page with markup in every field a request
// fills, and finds it escaped.
func TestPageEscapes(t *testing.T) {
	d := defaultPolicyDeps(t, time.Date(2024, 10, 1, 12, 0, 0, 0, time.UTC))
	d.Activity = &fakeActivity{decisions: []activity.Decision{hostileDecision}}
	d.Inventory.RecordDecision(hostileDecision.Client, `x<b>y</b>.example`, &rules.Decision{Vendor: "kaspersky", Category: "update", Action: rules.Block, RuleName: "r<i>"})
	for _, target := range []string{"/", "/?d_host=%3Cb%3E", "/clients/192.0.2.7"} {
		resp, body := serve(t, d, "GET", target)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Errorf("%s: %d %s", target, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		for _, raw := range []string{"<script>alert", "<svg onload", "<b>", "<i>"} {
			if strings.Contains(body, raw) {
				t.Errorf("%s carries %q unescaped", target, raw)
			}
		}
		if !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") && target != "/clients/192.0.2.7" {
			t.Errorf("%s lacks the escaped path", target)
		}
		if strings.Count(body, "<script") != 1 || !strings.Contains(body, `<script src="/static/status.js" defer></script>`) {
			t.Errorf("%s: want exactly one script element, the page's own", target)
		}
		if strings.Contains(body, " style=") || strings.Contains(body, "<style") {
			t.Errorf("%s has inline style, which the Content-Security-Policy refuses", target)
		}
	}
}

func TestPageFilters(t *testing.T) {
	d := defaultPolicyDeps(t, time.Date(2024, 10, 1, 12, 0, 0, 0, time.UTC))
	fa := &fakeActivity{}
	d.Activity = fa
	two := netip.MustParseAddr("192.0.2.2")
	d.Inventory.RecordDecision(netip.MustParseAddr("192.0.2.1"), "s01.upd.kaspersky.com", &rules.Decision{Vendor: "kaspersky", Category: "update", Action: rules.Block, RuleName: "updates-cutoff"})
	d.Inventory.RecordDecision(two, "activation-v2.kaspersky.com", &rules.Decision{Vendor: "kaspersky", Category: "licensing", Action: rules.Log, RuleName: "r"})
	for _, tc := range []struct {
		target       string
		status       int
		has, hasNot  []string
		wantDecision activity.Filter
	}{
		{"/", 200, []string{`href="/clients/192.0.2.1"`, `href="/clients/192.0.2.2"`}, nil, activity.Filter{}},
		{"/?c_category=kaspersky/licensing", 200, []string{`href="/clients/192.0.2.2"`}, []string{`href="/clients/192.0.2.1"`}, activity.Filter{}},
		{"/?c_action=block", 200, []string{`href="/clients/192.0.2.1"`}, []string{`href="/clients/192.0.2.2"`}, activity.Filter{}},
		{"/?c_since=1h", 200, []string{`href="/clients/192.0.2.1"`}, nil, activity.Filter{}},
		{"/?d_client=192.0.2.2&d_host=upd&d_action=log", 200, nil, nil, activity.Filter{Client: two, Host: "upd", Action: "log"}},
		{"/?c_category=licensing", 400, []string{"want vendor/category"}, nil, activity.Filter{}},
		{"/?c_since=soon", 400, []string{"since"}, nil, activity.Filter{}},
		{"/?d_client=me", 400, []string{"want an IP address"}, nil, activity.Filter{}},
	} {
		fa.asked = nil
		resp, body := serve(t, d, "GET", tc.target)
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %d; want %d", tc.target, resp.StatusCode, tc.status)
		}
		for _, s := range tc.has {
			if !strings.Contains(body, s) {
				t.Errorf("%s lacks %q", tc.target, s)
			}
		}
		for _, s := range tc.hasNot {
			if strings.Contains(body, s) {
				t.Errorf("%s has %q", tc.target, s)
			}
		}
		if tc.status == 200 && (len(fa.asked) != 1 || fa.asked[0] != tc.wantDecision) {
			t.Errorf("%s: decisions asked with %+v; want %+v", tc.target, fa.asked, tc.wantDecision)
		}
	}
	if resp, _ := serve(t, d, "GET", "/clients/nope"); resp.StatusCode != 400 {
		t.Errorf("/clients/nope: %d; want 400", resp.StatusCode)
	}
}

func TestClientAPI(t *testing.T) {
	d := defaultPolicyDeps(t, time.Date(2024, 10, 1, 12, 0, 0, 0, time.UTC))
	d.Activity = &fakeActivity{decisions: []activity.Decision{hostileDecision}}
	c := netip.MustParseAddr("192.0.2.7")
	d.Inventory.RecordDecision(c, "s01.upd.kaspersky.com", &rules.Decision{Vendor: "kaspersky", Category: "update", Action: rules.Log, RuleName: "flag"})
	d.Inventory.RecordDecision(c, "s01.upd.kaspersky.com", &rules.Decision{Vendor: "kaspersky", Category: "update", Action: rules.Block, RuleName: "updates-cutoff"})
	d.Inventory.RecordDecision(c, "activation-v2.kaspersky.com", &rules.Decision{Vendor: "kaspersky", Category: "licensing", Action: rules.Block, RuleName: "updates-cutoff"})
	d.Inventory.RecordDecision(netip.MustParseAddr("192.0.2.8"), "s01.upd.kaspersky.com", &rules.Decision{Vendor: "kaspersky", Category: "update", Action: rules.Block, RuleName: "updates-cutoff"})

	_, body := serve(t, d, "GET", "/api/v1/clients/::ffff:192.0.2.7")
	var got ClientReply
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if got.Client != c || !got.Known || got.Requests != 3 || got.LastAction != "block" ||
		strings.Join(got.Categories, ",") != "kaspersky/licensing,kaspersky/update" || len(got.Entries) != 2 || len(got.Decisions) != 1 {
		t.Errorf("client reply %+v", got)
	}
	if strings.Join(got.Hosts, ",") != "activation-v2.kaspersky.com,s01.upd.kaspersky.com" {
		t.Errorf("hosts %q", got.Hosts)
	}
	_, body = serve(t, d, "GET", "/api/v1/clients/192.0.2.99")
	if err := json.Unmarshal([]byte(body), &got); err != nil || got.Known || got.Entries == nil || got.Categories == nil {
		t.Errorf("unknown client: %s", body)
	}
	if resp, _ := serve(t, d, "GET", "/api/v1/clients/x"); resp.StatusCode != 400 {
		t.Errorf("/api/v1/clients/x: %d; want 400", resp.StatusCode)
	}
}

func TestStatic(t *testing.T) {
	d := testDeps(t)
	for _, tc := range []struct{ path, ctype string }{
		{"/static/status.css", "text/css; charset=utf-8"},
		{"/static/status.js", "text/javascript; charset=utf-8"},
	} {
		resp, body := serve(t, d, "GET", tc.path)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != tc.ctype || body == "" {
			t.Errorf("%s: %d %q (%d bytes)", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
		}
	}
	if resp, _ := serve(t, d, "GET", "/static/"); resp.StatusCode != 404 && resp.StatusCode != 200 {
		t.Errorf("/static/: %d", resp.StatusCode)
	}
}

func TestCountdown(t *testing.T) {
	for _, tc := range []struct {
		s    float64
		want string
	}{
		{-3, "now"}, {0, "now"}, {0.2, "1s"}, {59, "59s"}, {60, "1m 0s"}, {61.5, "1m 2s"},
		{3600, "1h 0m 0s"}, {86399, "23h 59m 59s"}, {86400, "1d 0h 0m"}, {90061, "1d 1h 1m"},
	} {
		if got := countdown(tc.s); got != tc.want {
			t.Errorf("countdown(%v) = %q; want %q", tc.s, got, tc.want)
		}
	}
}

func TestChart(t *testing.T) {
	start := time.Date(2024, 10, 1, 11, 0, 0, 0, time.UTC)
	tr := activity.Traffic{Step: "1m"}
	for i := range 60 {
		tr.Buckets = append(tr.Buckets, activity.Bucket{Start: start.Add(time.Duration(i) * time.Minute)})
	}
	tr.Buckets[10] = activity.Bucket{Start: tr.Buckets[10].Start, Blocked: 1, Allowed: 999}
	tr.Buckets[59] = activity.Bucket{Start: tr.Buckets[59].Start, Flagged: 500, Rejected: 500}
	c := newChart("Last hour", "minute", tr, func(t time.Time) string { return t.Format("15:04") }, 15)
	if len(c.Bars) != 60 || c.Max != 1000 {
		t.Fatalf("%d bars, max %d; want 60 and 1000", len(c.Bars), c.Max)
	}
	// One blocked request among a thousand still shows.
	b := c.Bars[10].Segs
	if len(b) != 2 || b[0].Class != "block" || b[0].H < 1 || b[1].Class != "allow" {
		t.Errorf("bar 10: %+v", b)
	}
	for i, bar := range c.Bars {
		for _, s := range bar.Segs {
			if s.Y < chartTop-1 || s.Y+s.H > chartBase+0.001 || s.X+s.W > chartWidth {
				t.Errorf("bar %d segment %+v outside the chart", i, s)
			}
		}
	}
	if len(c.Labels) != 5 || c.Labels[0].Text != "11:00" || c.Labels[4].Text != "now" {
		t.Errorf("labels %+v", c.Labels)
	}
	if c.Summary != "1 blocked, 500 flagged, 500 rejected, 999 allowed" {
		t.Errorf("summary %q", c.Summary)
	}
	if empty := newChart("x", "minute", activity.Traffic{}, nil, 1); len(empty.Bars) != 0 {
		t.Errorf("an empty window has bars: %+v", empty.Bars)
	}
}

// TestPageBanners: report mode and a failed reload are said at the top of
// every page, in words.
func TestPageBanners(t *testing.T) {
	at := time.Date(2024, 10, 1, 12, 0, 0, 0, time.UTC)
	enforce := defaultPolicyDeps(t, at)
	report := defaultPolicyDeps(t, at)
	c := loadConfig(t, "mode = \"report\"\n"+kaspersky)
	report.Config = func() *config.Config { return c }
	failed := defaultPolicyDeps(t, at)
	failed.Reloads = func() ReloadStatus {
		return ReloadStatus{At: at, Trigger: "SIGHUP", Error: `policy.toml:3: unknown action "<blok>"`, LastSuccess: at.Add(-time.Hour)}
	}
	ok := defaultPolicyDeps(t, at)
	ok.Reloads = func() ReloadStatus { return ReloadStatus{At: at, Trigger: "start", Success: true, LastSuccess: at} }
	for _, tc := range []struct {
		name        string
		d           Deps
		has, hasNot []string
	}{
		{"enforce", ok, nil, []string{"Report mode", "reload failed"}},
		{"report mode", report, []string{"<strong>Report mode:</strong> nothing is blocked"}, nil},
		{"failed reload", failed, []string{"The last reload failed", "policy.toml:3: unknown action &#34;&lt;blok&gt;&#34;"}, []string{"Report mode"}},
		{"enforce without a reloader", enforce, nil, []string{"Report mode", "reload failed"}},
	} {
		for _, target := range []string{"/", "/clients/192.0.2.1"} {
			_, body := serve(t, tc.d, "GET", target)
			for _, s := range tc.has {
				if !strings.Contains(body, s) {
					t.Errorf("%s %s lacks %q", tc.name, target, s)
				}
			}
			for _, s := range tc.hasNot {
				if strings.Contains(body, s) {
					t.Errorf("%s %s has %q", tc.name, target, s)
				}
			}
		}
	}
}
