package main

// End-to-end tests of catalog signatures (issue 14): Kaspersky update
// bases on a host that is not Kaspersky's, an internal mirror pointed at
// a local origin with -resolve, fetched with curl through the real binary.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// mirrorHost is an internal-looking update mirror: no catalog host pattern
// names it.
const mirrorHost = "kav-mirror.corp.example"

// Paths on the mirror: two Kaspersky update files under the prefix an
// Update Utility share publishes, and a file of its own.
const (
	mirrorBase   = "/KLSHARE/Updates/bases/av/kdb/i386/dailyc.kdc"
	mirrorIndex  = "/KLSHARE/Updates/index/u1313g.xml"
	mirrorReadme = "/KLSHARE/readme.txt"
)

// pathLog is an origin handler that remembers the paths it served.
type pathLog struct {
	mu    sync.Mutex
	paths []string
}

func (l *pathLog) handler(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	l.paths = append(l.paths, r.URL.Path)
	l.mu.Unlock()
	io.WriteString(w, originPayload)
}

func (l *pathLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.paths)
}

// checkMirror fetches the mirror's files with curl through feedgate (args
// are curl's proxy and trust arguments, base the URL prefix): after the
// updates cut-off both Kaspersky files get feedgate's 403, named by their
// signatures, the mirror's own file passes, and the origin served that one
// alone. It returns the records of the three requests of kind.
func checkMirror(t *testing.T, inst *instance, seen *pathLog, base, kind string, args ...string) []map[string]any {
	t.Helper()
	for _, tc := range []struct{ path, signature string }{
		{mirrorBase, "bases-tree"},
		{mirrorIndex, "update-index"},
	} {
		res := curl(t, nil, append(slices.Clone(args), base+tc.path)...)
		if res.status != "403" || !strings.Contains(res.headers, "X-Feedgate-Rule: updates-cutoff") ||
			!strings.Contains(res.headers, "X-Feedgate-Signature: "+tc.signature) {
			t.Errorf("%s%s: status %s headers %q stderr %q; want 403 from updates-cutoff, signature %s", base, tc.path, res.status, res.headers, res.stderr, tc.signature)
		}
		if !strings.Contains(res.body, "category: update") {
			t.Errorf("%s%s: body %q; want the block page of kaspersky/update", base, tc.path, res.body)
		}
	}
	if res := curl(t, nil, append(slices.Clone(args), base+mirrorReadme)...); res.status != "200" || res.body != originPayload {
		t.Errorf("%s%s: status %s body %q stderr %q; want 200 and the payload", base, mirrorReadme, res.status, res.body, res.stderr)
	}
	if got := seen.list(); !slices.Equal(got, []string{mirrorReadme}) {
		t.Errorf("the mirror served %q; want only %s: blocked requests never reach it", got, mirrorReadme)
	}

	// Through an intercepting proxy each request also has its tunnel's
	// record, written when the tunnel closes: wait for the three of kind.
	var recs []map[string]any
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs = recs[:0]
		for _, r := range inst.records() {
			if r["host"] == mirrorHost && r["kind"] == kind {
				recs = append(recs, r)
			}
		}
		if len(recs) >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	byPath := map[string]map[string]any{}
	for _, r := range recs {
		byPath[fmt.Sprint(r["path"])] = r
	}
	blocked := func(sig string) map[string]any {
		return map[string]any{"vendor": "kaspersky", "category": "update", "match": "signature", "signature": sig,
			"rule": "updates-cutoff", "action": "block", "status": 403, "method": "GET"}
	}
	for path, want := range map[string]map[string]any{
		mirrorBase:   blocked("bases-tree"),
		mirrorIndex:  blocked("update-index"),
		mirrorReadme: {"vendor": "none", "category": "none", "match": nil, "signature": nil, "action": "allow", "status": 200},
	} {
		r, ok := byPath[path]
		if !ok {
			t.Errorf("no %s record for %s%s in %v", kind, mirrorHost, path, recs)
			continue
		}
		wantFields(t, r, want)
	}
	return recs
}

// TestSignatureBlocksMirrorAfterCutoff: through the explicit proxy port,
// an update base on an internal mirror is blocked after the updates
// cut-off, named by its signature, and the inventory lists the mirror.
func TestSignatureBlocksMirrorAfterCutoff(t *testing.T) {
	seen := &pathLog{}
	o := newOrigin(t, nil, seen.handler)
	inst := start(t, "-at", afterUpdates, "-resolve", mirrorHost+":80:127.0.0.1:"+o.port())
	checkMirror(t, inst, seen, "http://"+mirrorHost, "http", "-x", "http://"+inst.Proxy)

	// The client inventory finds the mirror and its client.
	resp, err := http.Get("http://" + inst.Admin + "/api/v1/clients?match=signature")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var reply struct {
		Clients []map[string]any `json:"clients"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&reply); err != nil {
		t.Fatal(err)
	}
	if len(reply.Clients) != 1 {
		t.Fatalf("inventory of signature matches = %v; want one entry, the mirror's", reply.Clients)
	}
	wantFields(t, reply.Clients[0], map[string]any{"client": "127.0.0.1", "vendor": "kaspersky", "category": "update",
		"match": "signature", "host": mirrorHost, "requests": 2, "last_action": "block"})
	if got := inst.metric("feedgate_signature_hosts", map[string]string{"vendor": "kaspersky", "category": "update"}); got != 1 {
		t.Errorf("feedgate_signature_hosts{kaspersky,update} = %v; want 1", got)
	}
	block := map[string]string{"vendor": "kaspersky", "category": "update", "action": "block", "rule": "updates-cutoff"}
	if got := inst.metric("feedgate_requests_total", block); got != 2 {
		t.Errorf("feedgate_requests_total%v = %v; want 2", block, got)
	}
}

// TestSignatureBeforeCutoffFlagsMirror: between the cut-offs the same
// update base passes, flagged, as Kaspersky's own update hosts are.
func TestSignatureBeforeCutoffFlagsMirror(t *testing.T) {
	seen := &pathLog{}
	o := newOrigin(t, nil, seen.handler)
	inst := start(t, "-at", betweenCuts, "-resolve", mirrorHost+":80:127.0.0.1:"+o.port())
	if res := curl(t, nil, "-x", "http://"+inst.Proxy, "http://"+mirrorHost+mirrorBase); res.status != "200" || res.body != originPayload {
		t.Fatalf("update base between the cut-offs: status %s body %q; want 200 and the payload", res.status, res.body)
	}
	r := findRecord(t, inst.waitRecords(1), mirrorHost, "http")
	wantFields(t, r, map[string]any{"level": "WARN", "flagged": true, "action": "log", "rule": "sales-cutoff-flag",
		"category": "update", "match": "signature", "signature": "bases-tree"})
}

// TestSignatureBlocksMirrorIntercepted: the same through an intercepted
// HTTPS tunnel ([tls.intercept] on the mirror), where feedgate sees the
// path of each request inside the tunnel.
func TestSignatureBlocksMirrorIntercepted(t *testing.T) {
	leaf, originCA := testCA(t, mirrorHost)
	seen := &pathLog{}
	o := newOrigin(t, &leaf, seen.handler)
	dir := t.TempDir()
	if out, err := exec.Command(binary, "ca", "init", "-dir", filepath.Join(dir, "ca")).CombinedOutput(); err != nil {
		t.Fatalf("feedgate ca init: %v\n%s", err, out)
	}
	policy := filepath.Join(dir, "intercept.toml")
	text := fmt.Sprintf(`name = "signature-intercept"
timezone = "America/New_York"
catalogs = ["builtin:catalog/kaspersky.toml"]

[[rule]]
name = "updates-cutoff"
vendor = "kaspersky"
action = "block"
from = 2024-09-29T00:00:00

[tls.intercept]
hosts = [%q]
ca_cert = "ca/ca.crt"
ca_key = "ca/ca.key"
upstream_ca = [%q]
`, mirrorHost, originCA)
	if err := os.WriteFile(policy, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	inst := start(t, "-at", afterUpdates, "-config", policy, "-resolve", mirrorHost+":443:127.0.0.1:"+o.port())
	checkMirror(t, inst, seen, "https://"+mirrorHost, "mitm", "-x", "http://"+inst.Proxy, "--cacert", filepath.Join(dir, "ca", "ca.crt"))
}
