package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/feedgate/feedgate/cmd/feedgate/internal/admin"
)

// reloadPolicy is a policy whose updates cut-off is a parameter.
func reloadPolicy(cutoff string) string {
	return fmt.Sprintf(`name = "reload-test"
timezone = "America/New_York"
catalogs = ["builtin:catalog/kaspersky.toml"]

[[rule]]
name = "updates-cutoff"
vendor = "kaspersky"
categories = ["update"]
action = "block"
from = %s
`, cutoff)
}

// TestReloadUnderLoad: while clients keep requests going and a tunnel
// open, SIGHUP swaps in a policy whose cut-off has passed: the next request
// follows it, the tunnel survives and nothing in flight fails. A broken file
// then leaves the running policy in force, counts a failure, and its error
// names the line.
func TestReloadUnderLoad(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.toml")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(policy+".tmp", []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(policy+".tmp", policy); err != nil {
			t.Fatal(err)
		}
	}
	write(reloadPolicy("2030-01-01T00:00:00"))
	inst := f.start(t, betweenCuts, "-config", policy, "-admin.enable-reload")
	c := f.goClient(inst)

	if resp, err := c.Get("http://s01.upd.kaspersky.com/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("before the reload: %v %v; want 200", resp, err)
	}

	// A tunnel held open across the reloads.
	conn, err := net.Dial("tcp", inst.Proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "CONNECT www.example.test:443 HTTP/1.1\r\nHost: www.example.test:443\r\n\r\n")
	br := bufio.NewReader(conn)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	tc := tls.Client(&bufConn{Conn: conn, r: br}, &tls.Config{RootCAs: f.pool, ServerName: "www.example.test"})
	tr := bufio.NewReader(tc)
	tunnelGet := func(when string) {
		t.Helper()
		fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: www.example.test\r\n\r\n")
		resp, err := http.ReadResponse(tr, nil)
		if err != nil {
			t.Fatalf("request through the open tunnel %s: %v", when, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != originPayload {
			t.Fatalf("request through the open tunnel %s: %d %q", when, resp.StatusCode, b)
		}
	}
	tunnelGet("before the reload")

	// Background load: every request must succeed throughout.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var sent, failed atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				resp, err := c.Get("http://www.example.test/")
				sent.Add(1)
				if err != nil || resp.StatusCode != 200 {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}

	write(reloadPolicy("2024-08-01T00:00:00"))
	if err := inst.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, inst, "feedgate_config_reloads_total", map[string]string{"result": "success"}, 1)
	if resp, err := c.Get("http://s01.upd.kaspersky.com/"); err != nil || resp.StatusCode != 403 || resp.Header.Get("X-Feedgate-Rule") != "updates-cutoff" {
		t.Fatalf("after the reload: %v %v; want 403 from updates-cutoff", resp, err)
	}
	tunnelGet("after the reload")

	// A broken file: the old policy stays.
	write(strings.Replace(reloadPolicy("2024-08-01T00:00:00"), `action = "block"`, `action = "blok"`, 1))
	resp, err := http.Post("http://"+inst.Admin+"/-/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 500 || !regexp.MustCompile(`policy\.toml:9: unknown action "blok"`).Match(body) {
		t.Errorf("POST /-/reload of a broken file: %d %q; want 500 naming policy.toml:9", resp.StatusCode, body)
	}
	if got := inst.metric("feedgate_config_reloads_total", map[string]string{"result": "failure"}); got != 1 {
		t.Errorf("failed reloads = %v; want 1", got)
	}
	if got := inst.metric("feedgate_config_last_reload_successful", nil); got != 0 {
		t.Errorf("feedgate_config_last_reload_successful = %v; want 0", got)
	}
	if !strings.Contains(inst.stderr.String(), `policy.toml:9: unknown action \"blok\"`) {
		t.Errorf("the reload failure in the log does not name the line:\n%s", inst.stderr)
	}
	if resp, err := c.Get("http://s01.upd.kaspersky.com/"); err != nil || resp.StatusCode != 403 {
		t.Fatalf("after the failed reload: %v %v; want the running policy's 403", resp, err)
	}
	tunnelGet("after the failed reload")

	cancel()
	wg.Wait()
	if failed.Load() != 0 || sent.Load() == 0 {
		t.Errorf("%d of %d background requests failed during the reloads; want none", failed.Load(), sent.Load())
	}
}

// TestReloadEndpointNeedsFlag: POST /-/reload is refused without
// -admin.enable-reload, like Prometheus's lifecycle API.
func TestReloadEndpointNeedsFlag(t *testing.T) {
	inst := start(t)
	resp, err := http.Post("http://"+inst.Admin+"/-/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("POST /-/reload without the flag: %d; want 403", resp.StatusCode)
	}
	if resp, _ := http.Get("http://" + inst.Admin + "/-/reload"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /-/reload: %d; want 405", resp.StatusCode)
	}
}

func waitMetric(t *testing.T, inst *instance, name string, labels map[string]string, want float64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for inst.metric(name, labels) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s%v never reached %v\nstderr:\n%s", name, labels, want, inst.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// bufConn reads through the bufio.Reader that read the CONNECT reply.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// TestSquidLogFileRotation: with [log] format = "squid" and a file, records
// go to the file as Squid lines; after logrotate moves it and sends
// SIGUSR1, new records go to a new file and none is lost, at shutdown
// either.
func TestSquidLogFileRotation(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.toml")
	text := reloadPolicy("2024-08-01T00:00:00") + "\n[log]\nformat = \"squid\"\nfile = \"access.log\"\n"
	if err := os.WriteFile(policy, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	inst := f.start(t, betweenCuts, "-config", policy)
	c := f.goClient(inst)
	get := func(u string) {
		t.Helper()
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	logPath := filepath.Join(dir, "access.log")
	get("http://www.example.test/first")
	waitFile(t, logPath, 1)
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	get("http://s01.upd.kaspersky.com/second")
	if err := inst.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitFile(t, logPath, 0) // the new file exists
	get("http://www.example.test/third")
	if err := inst.stop(); err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(logPath + ".1")
	cur, _ := os.ReadFile(logPath)
	all := strings.Split(strings.TrimSpace(string(old)+string(cur)), "\n")
	if len(all) != 3 {
		t.Fatalf("%d log lines across both files; want 3:\nold %q\nnew %q", len(all), old, cur)
	}
	for i, want := range []string{"TCP_MISS/200 .* GET http://www.example.test/first", "TCP_DENIED/403 .* GET http://s01.upd.kaspersky.com/second", "TCP_MISS/200 .* GET http://www.example.test/third"} {
		if !regexp.MustCompile(want).MatchString(all[i]) {
			t.Errorf("line %d %q does not match %q", i+1, all[i], want)
		}
	}
	if !strings.Contains(string(cur), "/third") {
		t.Errorf("the record after SIGUSR1 is not in the new file: %q", cur)
	}
	if inst.stdout.String() != "" {
		t.Errorf("records went to stdout too: %q", inst.stdout)
	}
}

// waitFile waits until path exists with at least n lines.
func waitFile(t *testing.T, path string, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil && strings.Count(string(b), "\n") >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d lines, %v; want at least %d", path, strings.Count(string(b), "\n"), err, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// clientFrom is an HTTP client through the proxy whose connections come
// from the loopback address local (127.0.0.1, 127.0.0.2, ...).
func clientFrom(inst *instance, local string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		Proxy:       http.ProxyURL(&url.URL{Scheme: "http", Host: inst.Proxy}),
		DialContext: d.DialContext,
	}}
}

// TestInventoryAcrossRestart: requests from two loopback clients appear in
// the inventory with their counts (API, CLI and metric), and a restart
// with the same state file still has them.
func TestInventoryAcrossRestart(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.toml")
	text := reloadPolicy("2024-08-01T00:00:00") + "\n[inventory]\nstate_file = \"inventory.json\"\nsave_interval = \"1h\"\n"
	if err := os.WriteFile(policy, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	inst := f.start(t, betweenCuts, "-config", policy)
	one, two := clientFrom(inst, "127.0.0.1"), clientFrom(inst, "127.0.0.2")
	for c, urls := range map[*http.Client][]string{
		one: {"http://s01.upd.kaspersky.com/a", "http://s01.upd.kaspersky.com/b", "http://s01.upd.kaspersky.com/c", "https://activation-v2.kaspersky.com/"},
		two: {"http://dnl-01.geo.kaspersky.com/x", "http://www.example.test/"},
	} {
		for _, u := range urls {
			c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: f.pool}
			resp, err := c.Get(u)
			if err != nil {
				t.Fatalf("GET %s: %v", u, err)
			}
			resp.Body.Close()
		}
		c.CloseIdleConnections() // tunnels are counted after their check
	}
	want := map[string]string{
		"127.0.0.1 kaspersky update":    "3 block",
		"127.0.0.1 kaspersky licensing": "1 allow",
		"127.0.0.2 kaspersky update":    "1 block",
	}
	check := func(when string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			got := inventoryRows(t, inst)
			if fmt.Sprint(got) == fmt.Sprint(want) || time.Now().After(deadline) {
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("inventory %s = %v; want %v", when, got, want)
				}
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	check("before the restart")
	if got := inst.metric("feedgate_clients", map[string]string{"vendor": "kaspersky", "category": "update"}); got != 2 {
		t.Errorf("feedgate_clients{kaspersky,update} = %v; want 2", got)
	}
	var out, errOut strings.Builder
	if code := run([]string{"clients", "-admin", inst.Admin, "-category", "update"}, &out, &errOut); code != 0 {
		t.Fatalf("feedgate clients: exit %d: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "LAST SEEN") || !strings.Contains(out.String(), "127.0.0.2") || strings.Contains(out.String(), "licensing") {
		t.Errorf("feedgate clients -category update:\n%s", out.String())
	}

	if err := inst.stop(); err != nil {
		t.Fatal(err)
	}
	inst = f.start(t, betweenCuts, "-config", policy)
	check("after the restart")
}

// inventoryRows reads GET /api/v1/clients as "client vendor category" →
// "requests last_action".
func inventoryRows(t *testing.T, inst *instance) map[string]string {
	t.Helper()
	resp, err := http.Get("http://" + inst.Admin + "/api/v1/clients")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var reply admin.ClientsReply
	if err := json.NewDecoder(resp.Body).Decode(&reply); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range reply.Clients {
		out[e.Client.String()+" "+e.Vendor+" "+e.Category] = fmt.Sprintf("%d %s", e.Requests, e.LastAction)
	}
	return out
}
