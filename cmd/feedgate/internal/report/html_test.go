package report

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the typical report is in America/New_York on any machine

	"golang.org/x/net/html"
)

func init() {
	// The package's other tests may define -update too, and a flag
	// defined twice panics; package variables are initialised before
	// init runs, so whichever file defines it first wins.
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite the golden files in testdata")
	}
}

func htmlUpdate() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

func htmlTypical() *Result {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		panic(err)
	}
	at := func(day, hour, minute int) time.Time { return time.Date(2024, 9, day, hour, minute, 0, 0, ny) }
	day := func(date, vendor, category, action string, requests int64) Day {
		return Day{Date: date, Vendor: vendor, Category: category, Action: action, Requests: requests, BytesSent: requests * 512, BytesReceived: requests * 40960}
	}
	return &Result{
		Policy:    "/etc/feedgate/feedgate.toml",
		Timezone:  "America/New_York",
		From:      at(27, 0, 0),
		Until:     time.Date(2024, 10, 1, 0, 0, 0, 0, ny),
		Records:   1_254_320,
		Skipped:   3_112,
		Malformed: Malformed{Count: 4, First: []string{"gw1.log:17: not a JSON object", "access.log.gz:3: 4 fields; want 10"}},
		Inputs: []InputInfo{
			{Name: "gw1.log", Format: "feedgate", Lines: 700_010, Records: 700_000, Instances: []string{"gw1"}},
			{Name: "gw2.log.gz", Format: "feedgate", Lines: 540_500, Records: 540_500, Instances: []string{"gw2"}},
			{Name: "access.log.gz", Format: "squid", Lines: 16_935, Records: 16_932},
		},
		Days: []Day{
			day("2024-09-27", "kaspersky", "ksn", "log", 1_200),
			day("2024-09-27", "kaspersky", "updates", "allow", 24_000),
			day("2024-09-27", "none", "none", "allow", 310_000),
			day("2024-09-28", "kaspersky", "ksn", "log", 1_150),
			day("2024-09-28", "kaspersky", "updates", "allow", 21_500),
			day("2024-09-28", "none", "none", "allow", 295_000),
			day("2024-09-29", "kaspersky", "ksn", "block", 1_800),
			day("2024-09-29", "kaspersky", "updates", "allow", 40),
			day("2024-09-29", "kaspersky", "updates", "block", 9_870),
			day("2024-09-29", "none", "none", "allow", 280_000),
			day("2024-09-30", "kaspersky", "ksn", "block", 1_500),
			day("2024-09-30", "kaspersky", "updates", "allow", 5),
			day("2024-09-30", "kaspersky", "updates", "block", 6_255),
			day("2024-09-30", "none", "none", "allow", 302_000),
		},
		Clients: []Client{
			{Client: "10.1.4.22", Vendor: "kaspersky", Category: "updates", FirstSeen: at(27, 0, 3), LastSeen: at(30, 23, 58), Requests: 4_210, LastAction: "block", LastRule: "kaspersky-updates"},
			{Client: "10.1.4.22", Vendor: "kaspersky", Category: "ksn", FirstSeen: at(27, 0, 1), LastSeen: at(30, 23, 40), Requests: 1_032, LastAction: "block", LastRule: "kaspersky-updates"},
			{Client: "10.2.0.7", Vendor: "kaspersky", Category: "updates", FirstSeen: at(27, 8, 15), LastSeen: at(30, 17, 2), Requests: 45, LastAction: "allow", LastRule: "lab-exception"},
		},
		Hosts: []Host{
			{Host: "dnl-01.geo.kaspersky.com", Vendor: "kaspersky", Category: "updates", Requests: 38_400, Allowed: 30_020, Clients: 212},
			{Host: "ksn-a.kaspersky-labs.com", Vendor: "kaspersky", Category: "ksn", Requests: 5_650, Allowed: 2_350, Clients: 198},
		},
		SignatureHosts: []Host{
			{Host: "ksc.corp.example", Vendor: "kaspersky", Category: "updates", Signature: "kaspersky-update-index", Requests: 23_270, Allowed: 15_520, Clients: 14},
		},
		Cutoffs: []Cutoff{
			{
				Rule: "kaspersky-sales", Reason: "Final Determination: sales end 2024-07-20", At: time.Date(2024, 7, 20, 0, 0, 0, 0, ny),
				Vendor: "kaspersky", Category: []string{"sales"}, Covered: true,
				Statement: "From 2024-07-20 00:00 EDT to the end of the records, no kaspersky sales request was let through.",
			},
			{
				Rule: "kaspersky-updates", Reason: "Final Determination: no updates after 2024-09-29", At: at(29, 0, 0),
				Vendor: "kaspersky", Category: []string{"updates", "ksn"},
				Requests: 19_470, Blocked: 19_425, Allowed: 45, AllowedBy: map[string]int64{"lab-exception": 40, "ksn-grace": 5},
				Covered:   true,
				Statement: "From 2024-09-29 00:00 EDT to the end of the records, 45 of 19,470 kaspersky updates and ksn requests were let through, by lab-exception (40) and ksn-grace (5).",
			},
		},
		Verification: Verification{
			Checked: true, OK: true,
			Chains: []ChainInfo{
				{Instance: "gw1", Records: 700_000, Signed: 699_872, SignedAt: at(30, 23, 59), Root: "3Jx0dFf1m0ZQy9a5hKf2b8M7Yw5hXo1tq6m0v8yQ3pE=", Where: "gw1.log:699993"},
				{Instance: "gw2", Records: 540_500, Signed: 540_500, SignedAt: at(30, 23, 59), Root: "q1T0aU8y2d3O9cHq8o6m2rj3m1G5x0s2yQ8mJx7bQ0c=", Where: "gw2.log.gz:540500"},
			},
		},
	}
}

// The hostile strings stand for host names, client names and rule
// reasons that an attacker wrote into a log or a policy.
var htmlHostile = []string{
	`<script>alert(1)</script>`,
	`"><svg onload=alert(2)>`,
	`' onmouseover='alert(3)`,
	`</title><img src=x onerror=alert(4)>`,
}

func htmlHostileResult() *Result {
	h := func(i int) string { return htmlHostile[i%len(htmlHostile)] }
	return &Result{
		Policy:    h(0),
		Timezone:  "UTC",
		Records:   3,
		Malformed: Malformed{Count: 1, First: []string{h(1) + ":1: " + h(2)}},
		Inputs:    []InputInfo{{Name: h(3), Format: "feedgate", Lines: 3, Records: 3, Instances: []string{h(0)}}},
		Days: []Day{
			{Date: "2024-10-01", Vendor: h(0), Category: h(1), Action: "allow", Requests: 2},
			{Date: "2024-10-01", Vendor: h(2), Category: h(3), Action: h(1), Requests: 1},
		},
		Clients:        []Client{{Client: h(1), Vendor: h(0), Category: h(3), Requests: 3, LastAction: h(2), LastRule: h(0)}},
		Hosts:          []Host{{Host: h(0), Vendor: h(1), Category: h(2), Requests: 2, Allowed: 2, Clients: 1}},
		SignatureHosts: []Host{{Host: h(1), Vendor: h(0), Category: h(2), Signature: h(3), Requests: 1, Clients: 1}},
		Cutoffs: []Cutoff{{
			Rule: h(0), Reason: h(1), At: time.Date(2024, 10, 2, 0, 0, 0, 0, time.UTC), Vendor: h(2), Category: []string{h(3)},
			AllowedBy: map[string]int64{h(1): 1}, Statement: "The records end before " + h(0) + " took effect.",
		}},
		Verification: Verification{
			Checked: true, Problem: h(3) + ":2: " + h(1),
			Chains: []ChainInfo{{Instance: h(0), Records: 3, Signed: 1, Root: h(2), Where: h(1)}},
		},
	}
}

func TestWriteHTML(t *testing.T) {
	typical := htmlTypical()
	cases := []struct {
		name string
		r    *Result
		// svgs is the number of charts; text must appear in the page's
		// text, and each hostile string must appear as text and in no
		// attribute or element.
		svgs    int
		text    []string
		hostile bool
	}{
		{
			name: "typical", r: typical, svgs: 2,
			text: []string{
				typical.Cutoffs[0].Statement, typical.Cutoffs[1].Statement,
				"1,254,320 in the period", "Held: no vendor request was let through after the cut-off",
				"Not held: 45 vendor requests were let through after the cut-off",
				"2024-07-20 00:00:00 EDT", "2024-09-30 23:58:00 EDT", "lab-exception", "ksn-grace",
				"Verified: every feedgate input", "3Jx0dFf1m0ZQy9a5hKf2b8M7Yw5hXo1tq6m0v8yQ3pE=", "128 unsigned after the last checkpoint",
				"access.log.gz: a Squid access.log carries no evidence chain",
				"gw1.log:17: not a JSON object", "and 2 more", "ksc.corp.example",
			},
		},
		{
			name: "empty", r: &Result{Timezone: "UTC", Inputs: []InputInfo{{Name: "-", Format: "empty"}}}, svgs: 0,
			text: []string{
				"all records", "0 in the period — there are no records to report on",
				"there is no compliance statement to make", "Not checked: no verifier key was given",
				"nothing to chart per day", "nothing to chart per category", "No records in the period.",
				"No client contacted a vendor in the period.", "No vendor host was asked for in the period.",
				"No malformed lines.",
			},
		},
		{
			name: "nothing at all", r: &Result{}, svgs: 0,
			text: []string{"No input was read.", "every time is in UTC"},
		},
		{
			name: "hostile", r: htmlHostileResult(), svgs: 2, hostile: true,
			text: []string{
				"No evidence: the records end before the cut-off", "Verification FAILED", "2 unsigned after the last checkpoint",
				"other action",
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := WriteHTML(&out, c.r); err != nil {
				t.Fatalf("WriteHTML: %v", err)
			}
			raw := out.String()
			var again bytes.Buffer
			if err := WriteHTML(&again, c.r); err != nil || again.String() != raw {
				t.Errorf("a second WriteHTML of the same Result wrote other bytes (error %v)", err)
			}
			if !strings.HasPrefix(raw, "<!DOCTYPE html>\n<html lang=\"en\">") {
				t.Errorf("the page starts with %.40q; want the HTML5 doctype and <html lang=\"en\">", raw)
			}
			doc, err := html.Parse(strings.NewReader(raw))
			if err != nil {
				t.Fatalf("html.Parse: %v", err)
			}
			htmlCheckSelfContained(t, doc)
			text := htmlTextOf(doc)
			for _, want := range c.text {
				if !strings.Contains(text, want) {
					t.Errorf("the page's text lacks %q", want)
				}
			}
			for _, s := range c.r.Cutoffs {
				if !strings.Contains(text, s.Statement) {
					t.Errorf("the page's text lacks the statement %q", s.Statement)
				}
			}
			if got := len(htmlFind(doc, "svg")); got != c.svgs {
				t.Errorf("%d <svg> elements; want %d", got, c.svgs)
			}
			if c.svgs > 0 {
				htmlCheckDayChart(t, doc, c.r)
			}
			if c.hostile {
				for _, s := range htmlHostile {
					if !strings.Contains(text, s) {
						t.Errorf("the hostile string %q is not in the page's text", s)
					}
				}
				htmlWalk(doc, func(n *html.Node) {
					for _, a := range n.Attr {
						if strings.ContainsAny(a.Val, `<>"'`) || strings.Contains(a.Val, "alert") {
							t.Errorf("<%s %s=%q>: a value from the records reached an attribute", n.Data, a.Key, a.Val)
						}
					}
				})
				if strings.Contains(raw, "<script") || strings.Contains(raw, "<img") || strings.Contains(raw, "<svg onload") {
					t.Errorf("the page holds a hostile string as markup")
				}
			}
		})
	}
}

// htmlCheckSelfContained checks that the page is one HTML document with
// a title, and that it runs nothing and loads nothing.
func htmlCheckSelfContained(t *testing.T, doc *html.Node) {
	t.Helper()
	if doc.FirstChild == nil || doc.FirstChild.Type != html.DoctypeNode || doc.FirstChild.Data != "html" {
		t.Errorf("the page does not start with <!DOCTYPE html>")
	}
	if n := len(htmlFind(doc, "html")); n != 1 {
		t.Errorf("%d <html> elements; want 1", n)
	}
	var titles, charsets int
	htmlWalk(doc, func(n *html.Node) {
		if n.Type != html.ElementNode {
			return
		}
		switch n.Data {
		case "title":
			if n.Namespace == "" {
				titles++
				if n.Parent == nil || n.Parent.Data != "head" || strings.TrimSpace(htmlTextOf(n)) == "" {
					t.Errorf("a <title> outside <head>, or an empty one")
				}
			}
		case "meta":
			if htmlAttr(n, "charset") == "utf-8" {
				charsets++
			}
		case "script", "iframe", "img", "link", "object", "embed", "base", "foreignObject", "image", "use", "form":
			t.Errorf("a <%s> element", n.Data)
		case "style":
			if css := htmlTextOf(n); strings.Contains(css, "@import") || strings.Count(css, "url(") != strings.Count(css, "url(#") {
				t.Errorf("the style sheet loads something")
			}
		}
		for _, a := range n.Attr {
			key := strings.ToLower(a.Key)
			switch {
			case strings.HasPrefix(key, "on"):
				t.Errorf("<%s %s=%q>: an event handler", n.Data, a.Key, a.Val)
			case key == "href" || key == "src" || key == "srcset" || key == "action" || key == "formaction" || key == "poster":
				if !strings.HasPrefix(a.Val, "#") {
					t.Errorf("<%s %s=%q>: a reference out of the page", n.Data, a.Key, a.Val)
				}
			case key == "style":
				t.Errorf("<%s style=%q>: the page styles through its style sheet only", n.Data, a.Val)
			}
		}
	})
	if titles != 1 || charsets != 1 {
		t.Errorf("%d <title> and %d <meta charset=\"utf-8\">; want one of each", titles, charsets)
	}
}

// htmlCheckDayChart checks the per-day chart against the Result: a bar
// per day, a rectangle per day and action with vendor requests, and the
// rectangles' counts summing to the vendor requests.
func htmlCheckDayChart(t *testing.T, doc *html.Node, r *Result) {
	t.Helper()
	dates := map[string]bool{}
	segs := map[[2]string]bool{}
	var vendor int64
	for _, d := range r.Days {
		dates[d.Date] = true
		if d.Vendor != "none" && d.Requests > 0 {
			segs[[2]string{d.Date, htmlSeriesKey(htmlSeriesIndex(d.Action))}] = true
			vendor += d.Requests
		}
	}
	var chart *html.Node
	for _, f := range htmlFind(doc, "figure") {
		if htmlAttr(f, "id") == "chart-days" {
			chart = f
		}
	}
	if chart == nil {
		t.Fatal("no figure chart-days")
	}
	var bars, rects int
	var sum int64
	for _, g := range htmlFind(chart, "g") {
		if htmlAttr(g, "class") != "bar" {
			continue
		}
		bars++
		for _, rect := range htmlFind(g, "rect") {
			rects++
			n, err := strconv.ParseInt(htmlAttr(rect, "data-requests"), 10, 64)
			if err != nil {
				t.Errorf("a bar's rect without its requests: %v", err)
			}
			sum += n
		}
	}
	if bars != len(dates) || rects != len(segs) || sum != vendor {
		t.Errorf("the day chart has %d bars of %d rects for %d requests; want %d, %d and %d", bars, rects, sum, len(dates), len(segs), vendor)
	}
	for _, svg := range htmlFind(doc, "svg") {
		if len(htmlFind(svg, "text")) < 4 {
			t.Errorf("an <svg> with fewer than four labels: no axis or legend")
		}
	}
}

func htmlWalk(n *html.Node, f func(*html.Node)) {
	f(n)
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		htmlWalk(c, f)
	}
}

func htmlFind(n *html.Node, element string) []*html.Node {
	var found []*html.Node
	htmlWalk(n, func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == element {
			found = append(found, n)
		}
	})
	return found
}

func htmlAttr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// htmlTextOf is the text of n as a reader sees it: runs of white space
// made one space, and block elements apart.
func htmlTextOf(n *html.Node) string {
	var b strings.Builder
	var text func(*html.Node)
	text = func(n *html.Node) {
		switch {
		case n.Type == html.TextNode:
			b.WriteString(n.Data)
			return
		case n.Type == html.ElementNode && !htmlInline(n.Data):
			b.WriteByte(' ')
			defer b.WriteByte(' ')
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			text(c)
		}
	}
	text(n)
	return strings.Join(strings.Fields(b.String()), " ")
}

func htmlInline(element string) bool {
	switch element {
	case "a", "code", "strong", "em", "span":
		return true
	}
	return false
}

// TestHTMLGolden keeps the typical page in testdata/html/typical.html,
// for a reviewer to open in a browser; go test -update rewrites it.
func TestHTMLGolden(t *testing.T) {
	var out bytes.Buffer
	if err := WriteHTML(&out, htmlTypical()); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join("testdata", "html", "typical.html")
	if htmlUpdate() {
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Errorf("the page differs from %s (run go test -update if the change is right)", file)
	}
}

func TestHTMLCount(t *testing.T) {
	for _, c := range []struct {
		v    any
		want string
	}{
		{int64(0), "0"},
		{int64(999), "999"},
		{int64(1000), "1,000"},
		{int64(-1000), "-1,000"},
		{int64(123456), "123,456"},
		{int64(1234567), "1,234,567"},
		{int64(math.MinInt64), "-9,223,372,036,854,775,808"},
		{uint64(math.MaxUint64), "18,446,744,073,709,551,615"},
		{12345, "12,345"},
	} {
		if got := htmlCount(c.v); got != c.want {
			t.Errorf("htmlCount(%v) = %q; want %q", c.v, got, c.want)
		}
	}
}

func TestHTMLNiceStep(t *testing.T) {
	for _, c := range []struct{ top, want int64 }{
		{1, 1}, {5, 1}, {6, 2}, {10, 2}, {11, 5}, {25, 5}, {26, 10}, {33_745, 10_000}, {1_171_000, 500_000},
	} {
		if got := htmlNiceStep(c.top, 5); got != c.want {
			t.Errorf("htmlNiceStep(%d, 5) = %d; want %d", c.top, got, c.want)
		}
	}
}

func TestHTMLTick(t *testing.T) {
	for _, c := range []struct {
		v    int64
		want string
	}{
		{0, "0"}, {500_000, "500,000"}, {1_000_000, "1M"}, {1_500_000, "1.5M"}, {1_200_000, "1.2M"}, {2_000_000_000, "2,000M"},
	} {
		if got := htmlTick(c.v); got != c.want {
			t.Errorf("htmlTick(%d) = %q; want %q", c.v, got, c.want)
		}
	}
}

type htmlFailingWriter struct{}

func (htmlFailingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestHTMLWriteError(t *testing.T) {
	if err := WriteHTML(htmlFailingWriter{}, htmlTypical()); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("WriteHTML to a failing writer = %v; want its error", err)
	}
	if err := WriteHTML(io.Discard, nil); err == nil {
		t.Errorf("WriteHTML(nil) = nil; want an error")
	}
}
