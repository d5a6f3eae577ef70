package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// rawProxyRequest sends one request line through the proxy as written,
// markup and all, and returns the status code. An empty host sends an
// HTTP/1.0 request without a Host header, whose target alone names the
// host.
func rawProxyRequest(t *testing.T, proxyAddr, target, host string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxyAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if host == "" {
		fmt.Fprintf(c, "GET %s HTTP/1.0\r\n\r\n", target)
	} else {
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target, host)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s through the proxy: %v", target, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// The markup the hostile requests carry: if any of it reached the page as
// markup, the browser would run an alert, which the test catches.
const (
	hostilePath = `/"><script>alert(1)</script><img/src=x/onerror=alert(2)>`
	hostileHost = `x<b>y<i>z.kaspersky.com`
)

// TestStatusPageInBrowser drives the status page in headless Chromium
// against the real binary, a few seconds before the updates cut-off, with
// traffic sent through it: the page renders without console errors or CSP
// violations, the countdown reaches zero and the category turns to block
// without a reload of feedgate, blocked requests (hostile ones included,
// escaped) appear in the latest decisions, the client drill-down shows
// the client, and a screenshot is written. The HTML report of the same
// decision log opens in the same browser without errors.
func TestStatusPageInBrowser(t *testing.T) {
	b := newBrowser(t, 1440, 1000)
	b.must("blank page", chromedp.Navigate("about:blank"))
	f := newFixture(t)

	// The policy clock starts this long before the updates cut-off; the
	// browser is already up, so the page loads well before it.
	const lead = 15 * time.Second
	cutoff := time.Date(2024, 9, 29, 0, 0, 0, 0, mustZone(t, "America/New_York"))
	inst := f.start(t, cutoff.Add(-lead).Format(time.RFC3339))
	client := f.goClient(inst)
	update := "http://dnl-01.geo.kaspersky.com/bases/av/kdb/i386/kdb-i386-0607g.xml"

	resp, err := client.Get(update)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("update before the cut-off: status %d, want 200 (flagged)", resp.StatusCode)
	}
	// The store is blocked since the sales cut-off: a hostile path there
	// is a blocked decision with markup in its path.
	if code := rawProxyRequest(t, inst.Proxy, "http://store.kaspersky.com"+hostilePath, "store.kaspersky.com"); code != http.StatusForbidden {
		t.Fatalf("store with a hostile path: status %d, want 403", code)
	}
	// A host with markup is no host name: refused as invalid, and listed.
	// (Go's URL parser lets < and > through in a host; a slash would end
	// it.)
	if code := rawProxyRequest(t, inst.Proxy, "http://"+hostileHost+"/", ""); code/100 != 4 {
		t.Fatalf("hostile host: status %d, want 4xx", code)
	}
	inst.waitRecords(3)

	home := "http://" + inst.Admin + "/"
	b.must("status page", chromedp.Navigate(home), chromedp.WaitVisible(chromedp.CSS("#categories")))
	before := eval[struct {
		Action  string  `json:"action"`
		Seconds float64 `json:"seconds"`
	}](b, `(function () {
		var row = document.getElementById("cat-kaspersky-update");
		return {action: row.dataset.action, seconds: parseFloat(row.querySelector("time.countdown").dataset.seconds)};
	})()`)
	if before.Action != "log" || before.Seconds <= 0 {
		t.Fatalf("before the cut-off the update category shows %+v; want action log with a countdown above zero", before)
	}
	t.Logf("countdown at first load: %.1fs", before.Seconds)
	shot := b.screenshot("status-page.png")
	b.noProblems("status page before the cut-off")

	// The script counts down and reloads the page once the instant has
	// passed; the server then shows the new action.
	wait := time.Duration(before.Seconds*float64(time.Second)) + 20*time.Second
	if err := b.run(wait, chromedp.WaitVisible(chromedp.CSS(`#cat-kaspersky-update[data-action="block"]`))); err != nil {
		t.Fatalf("the update category did not turn to block within %v of the first load: %v\n%s", wait, err, b.text("#categories"))
	}
	countdown := b.text(`#cat-kaspersky-update td.now`)
	if !strings.Contains(countdown, "BLOCK") {
		t.Errorf("update category after the cut-off reads %q; want the word BLOCK, not only a colour", countdown)
	}
	if inst.hasExited() {
		t.Fatal("feedgate exited")
	}
	for _, line := range inst.stderr.list() {
		if strings.Contains(line, "policy reloaded") {
			t.Errorf("the policy was reloaded; the page must follow the clock alone: %s", line)
		}
	}

	// After the cut-off the update is blocked, and listed.
	resp, err = client.Get(update)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("update after the cut-off: status %d, want 403", resp.StatusCode)
	}
	inst.waitRecords(4)
	const decisionRows = `Array.from(document.querySelectorAll("#decisions table.decisions tbody tr")).map(function (r) { return r.innerText; })`
	b.must("status page after the cut-off", chromedp.Navigate(home+"?refresh=off"), chromedp.WaitVisible(chromedp.CSS("#decisions")))
	rows := eval[[]string](b, decisionRows)
	found := map[string]bool{}
	for _, r := range rows {
		switch {
		case strings.Contains(r, "dnl-01.geo.kaspersky.com") && strings.Contains(r, "BLOCK") && strings.Contains(r, "updates-cutoff"):
			found["update"] = true
		case strings.Contains(r, "store.kaspersky.com") && strings.Contains(r, "<script>alert(1)</script>") && strings.Contains(r, "BLOCK"):
			found["hostile path"] = true
		case strings.Contains(r, hostileHost) && strings.Contains(r, "REJECTED"):
			found["hostile host"] = true
		}
	}
	for _, want := range []string{"update", "hostile path", "hostile host"} {
		if !found[want] {
			t.Errorf("latest decisions lack the %s request; rows:\n%s", want, strings.Join(rows, "\n"))
		}
	}
	// The markup is text: the page has its one script and no image.
	elems := eval[struct {
		Scripts int `json:"scripts"`
		Images  int `json:"images"`
		Bold    int `json:"bold"`
	}](b, `({scripts: document.scripts.length, images: document.images.length, bold: document.querySelectorAll("main b").length})`)
	if elems.Scripts != 1 || elems.Images != 0 || elems.Bold != 0 {
		t.Errorf("the page has %d scripts, %d images and %d <b> elements; want 1, 0 and 0 (request markup must stay text)", elems.Scripts, elems.Images, elems.Bold)
	}
	b.noProblems("status page after the cut-off")

	// Filtering by host keeps only that host's rows.
	b.must("filter by host", chromedp.Navigate(home+"?refresh=off&d_host=DNL-01"), chromedp.WaitVisible(chromedp.CSS("#decisions")))
	rows = eval[[]string](b, decisionRows)
	if len(rows) == 0 {
		t.Error("filtering the decisions by host DNL-01 lists nothing")
	}
	for _, r := range rows {
		if !strings.Contains(r, "dnl-01.geo.kaspersky.com") {
			t.Errorf("filtered by host DNL-01, the decisions list %q", r)
		}
	}
	b.screenshot("status-after-cutoff.png")

	// The drill-down, reached the way a person would: by the client's link.
	b.must("client drill-down", chromedp.Navigate(home+"?refresh=off"), chromedp.WaitVisible(chromedp.CSS("#clients")),
		chromedp.Click(chromedp.CSS(`#clients table.clients a[href="/clients/127.0.0.1"]`), chromedp.NodeVisible),
		chromedp.WaitVisible(chromedp.CSS("#client")))
	drill := eval[struct {
		Addr string `json:"addr"`
		Text string `json:"text"`
		URL  string `json:"url"`
	}](b, `({addr: document.querySelector(".client-addr").innerText, text: document.getElementById("client").innerText, url: location.pathname})`)
	if drill.Addr != "127.0.0.1" || drill.URL != "/clients/127.0.0.1" {
		t.Errorf("drill-down shows client %q at %s; want 127.0.0.1 at /clients/127.0.0.1", drill.Addr, drill.URL)
	}
	for _, want := range []string{"kaspersky/update", "kaspersky/store", "dnl-01.geo.kaspersky.com", "BLOCK"} {
		if !strings.Contains(drill.Text, want) {
			t.Errorf("drill-down lacks %q:\n%s", want, drill.Text)
		}
	}
	b.screenshot("status-client.png")
	b.noProblems("client drill-down")

	// Readable from a small laptop to a wall screen: the page never
	// scrolls sideways (wide tables scroll inside their panels), and the
	// text grows with the window.
	var fonts []float64
	for _, size := range []struct {
		name          string
		width, height int64
	}{{"laptop", 1280, 800}, {"wall", 2560, 1440}} {
		b.must("viewport "+size.name, chromedp.EmulateViewport(size.width, size.height),
			chromedp.Navigate(home+"?refresh=off"), chromedp.WaitVisible(chromedp.CSS("#categories")))
		fit := eval[struct {
			Page float64 `json:"page"`
			View float64 `json:"view"`
			Font float64 `json:"font"`
		}](b, `({page: document.documentElement.scrollWidth, view: window.innerWidth, font: parseFloat(getComputedStyle(document.documentElement).fontSize)})`)
		if fit.Page > fit.View {
			t.Errorf("at %dx%d the page is %v px wide in a %v px window: it scrolls sideways", size.width, size.height, fit.Page, fit.View)
		}
		fonts = append(fonts, fit.Font)
		b.screenshot("status-" + size.name + ".png")
	}
	if fonts[1] <= fonts[0] {
		t.Errorf("the wall screen's text is %vpx, the laptop's %vpx; want it larger on the wall", fonts[1], fonts[0])
	}
	b.must("viewport reset", chromedp.EmulateReset())
	b.noProblems("viewports")

	// Escaped in the HTML and in the JSON, as served.
	_, page := getAdmin(t, inst, "/?refresh=off")
	_, api := getAdmin(t, inst, "/api/v1/decisions")
	for _, raw := range []string{"<script>alert(1)", "<img/src=x", "<b>y<i>"} {
		if strings.Contains(page, raw) {
			t.Errorf("the status page HTML carries %q unescaped", raw)
		}
		if strings.Contains(api, raw) {
			t.Errorf("/api/v1/decisions carries %q unescaped", raw)
		}
	}
	var reply struct {
		Decisions []struct{ Host, Path, Action string }
	}
	if err := json.Unmarshal([]byte(api), &reply); err != nil {
		t.Fatalf("/api/v1/decisions: %v", err)
	}
	var sawPath, sawHost bool
	for _, d := range reply.Decisions {
		sawPath = sawPath || strings.Contains(d.Path, "<script>alert(1)</script>")
		sawHost = sawHost || d.Host == hostileHost
	}
	if !sawPath || !sawHost {
		t.Errorf("/api/v1/decisions lacks the hostile path (%v) or host (%v): %s", sawPath, sawHost, api)
	}

	// The browser would have told: a violation put on purpose is caught.
	b.must("status page", chromedp.Navigate(home+"?refresh=off"), chromedp.WaitVisible(chromedp.CSS("#categories")))
	eval[bool](b, `(function () { var i = document.createElement("img"); i.src = "http://192.0.2.1/probe.png"; document.body.appendChild(i); return true; })()`)
	deadline := time.Now().Add(10 * time.Second)
	var caught []string
	for len(caught) == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		for _, p := range b.takeProblems() {
			if strings.Contains(p, "CSP violation") && strings.Contains(p, "img-src") {
				caught = append(caught, p)
			}
		}
	}
	if len(caught) == 0 {
		t.Error("an image from elsewhere put into the page raised no CSP violation: the policy or the watch does not work")
	}

	// The HTML report of this very decision log opens without errors.
	logFile := filepath.Join(t.TempDir(), "decisions.log")
	if err := os.WriteFile(logFile, []byte(inst.stdout.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	reportFile := filepath.Join(t.TempDir(), "report.html")
	if out, err := runBinary(t, "", "report", "-format", "html", "-o", reportFile, logFile); err != nil {
		t.Fatalf("feedgate report: %v\n%s", err, out)
	}
	b.must("HTML report", chromedp.Navigate("file://"+reportFile))
	if b.text("h1") == "" {
		t.Error("the HTML report has no heading")
	}
	reportText := b.text("body")
	if !strings.Contains(reportText, "dnl-01.geo.kaspersky.com") {
		t.Errorf("the HTML report does not name the blocked update host:\n%.2000s", reportText)
	}
	b.screenshot("report.png")
	b.noProblems("HTML report")
	t.Logf("status page screenshot: %s", shot)
}

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}
