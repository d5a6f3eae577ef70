package admin

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy/inventory"
)

func TestClientsHandler(t *testing.T) {
	clock := newFakeClock(t0)
	inv := mustNew(t, inventory.Options{Now: clock.Now, MaxEntries: 4})
	play(inv, clock, twoClients)
	// A fifth entry evicts twoLicensing, so that evictions shows up.
	clock.Advance(time.Hour)
	three := entry("10.0.0.3", "ksn", clock.Now(), clock.Now(), 1, "allow", "default")
	inv.Record(three.Client, three.Vendor, three.Category, three.LastAction, three.LastRule)
	now := clock.Now() // t3 + 1h
	h := clientsHandler(inv)

	for _, tc := range []struct {
		name  string
		query string
		want  []inventory.Entry
	}{
		{"all", "", []inventory.Entry{three, oneLicensing, twoUpdate, oneUpdate}},
		{"vendor", "?vendor=kaspersky", []inventory.Entry{three, oneLicensing, twoUpdate, oneUpdate}},
		{"other vendor", "?vendor=drweb", []inventory.Entry{}},
		{"category", "?category=update", []inventory.Entry{twoUpdate, oneUpdate}},
		{"vendor and category", "?vendor=kaspersky&category=licensing", []inventory.Entry{oneLicensing}},
		{"since duration", "?since=1h", []inventory.Entry{three, oneLicensing, twoUpdate}},
		{"since duration excludes", "?since=59m", []inventory.Entry{three}},
		{"since duration with minutes", "?since=1h1m", []inventory.Entry{three, oneLicensing, twoUpdate, oneUpdate}},
		{"since RFC 3339", "?since=" + t2.Format(time.RFC3339), []inventory.Entry{three, oneLicensing, twoUpdate, oneUpdate}},
		{"since RFC 3339 with offset", "?since=2024-09-01T08:02:01-04:00", []inventory.Entry{three, oneLicensing, twoUpdate}},
		{"since and category", "?since=2h&category=update", []inventory.Entry{twoUpdate, oneUpdate}},
		{"empty parameters", "?vendor=&category=&since=", []inventory.Entry{three, oneLicensing, twoUpdate, oneUpdate}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rr := httptest.NewRecorder()
			h.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/api/v1/clients"+tc.query, nil))
			if rr.Code != http.StatusOK {
				t.Fatalf("status %d; want 200; body %s", rr.Code, rr.Body)
			}
			if ct := rr.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			var body struct {
				Clients     []inventory.Entry `json:"clients"`
				Count       *int              `json:"count"`
				Evictions   *uint64           `json:"evictions"`
				GeneratedAt time.Time         `json:"generated_at"`
			}
			if err := json.Unmarshal(rr.Body.Bytes(), &body); err != nil {
				t.Fatalf("decoding %s: %v", rr.Body, err)
			}
			if d := sameEntries(body.Clients, tc.want); d != "" {
				t.Error(d)
			}
			if body.Count == nil || *body.Count != len(tc.want) {
				t.Errorf("count = %v; want %d", body.Count, len(tc.want))
			}
			if body.Evictions == nil || *body.Evictions != 1 {
				t.Errorf("evictions = %v; want 1", body.Evictions)
			}
			if !body.GeneratedAt.Equal(now) {
				t.Errorf("generated_at = %s; want %s", body.GeneratedAt, now)
			}
		})
	}
}

// TestClientsHandlerShape pins the JSON field names the CLI reads.
func TestClientsHandlerShape(t *testing.T) {
	clock := newFakeClock(t0)
	inv := mustNew(t, inventory.Options{Now: clock.Now})
	h := clientsHandler(inv)
	get := func() map[string]any {
		t.Helper()
		rr := httptest.NewRecorder()
		h.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/api/v1/clients", nil))
		var m map[string]any
		if err := json.Unmarshal(rr.Body.Bytes(), &m); err != nil {
			t.Fatalf("decoding %s: %v", rr.Body, err)
		}
		return m
	}

	// An empty inventory is an empty list, not null.
	if got := strings.TrimSpace(string(mustJSON(t, get()["clients"]))); got != "[]" {
		t.Errorf("clients of an empty inventory = %s; want []", got)
	}

	inv.Record(addr("2001:db8::1"), "kaspersky", "update", "block", "updates-cutoff")
	m := get()
	for _, k := range []string{"clients", "count", "evictions", "generated_at"} {
		if _, ok := m[k]; !ok {
			t.Errorf("response has no %q: %v", k, m)
		}
	}
	want := map[string]any{
		"client":      "2001:db8::1",
		"vendor":      "kaspersky",
		"category":    "update",
		"first_seen":  "2024-09-01T12:00:00Z",
		"last_seen":   "2024-09-01T12:00:00Z",
		"requests":    1.0,
		"last_action": "block",
		"last_rule":   "updates-cutoff",
	}
	got := m["clients"].([]any)[0].(map[string]any)
	if len(got) != len(want) {
		t.Errorf("entry = %v; want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("entry[%q] = %#v; want %#v", k, got[k], v)
		}
	}
	if m["generated_at"] != "2024-09-01T12:00:00Z" {
		t.Errorf("generated_at = %v", m["generated_at"])
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestClientsHandlerErrors(t *testing.T) {
	inv := mustNew(t, inventory.Options{})
	h := clientsHandler(inv)
	for _, tc := range []struct {
		name, method, target string
		status               int
		errorHas             string
	}{
		{"bad since", http.MethodGet, "/api/v1/clients?since=yesterday", http.StatusBadRequest, `since "yesterday"`},
		{"since in days", http.MethodGet, "/api/v1/clients?since=7d", http.StatusBadRequest, "duration such as 24h"},
		{"negative since", http.MethodGet, "/api/v1/clients?since=-1h", http.StatusBadRequest, "negative"},
		{"date without time", http.MethodGet, "/api/v1/clients?since=2024-09-01", http.StatusBadRequest, "RFC 3339"},
		{"malformed query", http.MethodGet, "/api/v1/clients?vendor=%zz", http.StatusBadRequest, "query"},
		{"POST", http.MethodPost, "/api/v1/clients", http.StatusMethodNotAllowed, "POST not allowed"},
		{"DELETE", http.MethodDelete, "/api/v1/clients", http.StatusMethodNotAllowed, "DELETE not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rr := httptest.NewRecorder()
			h.ServeHTTP(rr, httptest.NewRequest(tc.method, tc.target, nil))
			if rr.Code != tc.status {
				t.Errorf("status %d; want %d", rr.Code, tc.status)
			}
			var body map[string]string
			if err := json.Unmarshal(rr.Body.Bytes(), &body); err != nil {
				t.Fatalf("decoding %q: %v", rr.Body, err)
			}
			if !strings.Contains(body["error"], tc.errorHas) {
				t.Errorf("error = %q; want it to contain %q", body["error"], tc.errorHas)
			}
			if allow := rr.Header().Get("Allow"); (tc.status == http.StatusMethodNotAllowed) != (allow == "GET, HEAD") {
				t.Errorf("Allow = %q", allow)
			}
		})
	}
}

// TestClientsHandlerHead checks that HEAD sends GET's headers and no body.
func TestClientsHandlerHead(t *testing.T) {
	// A fixed clock: generated_at of the wall clock can differ in length.
	inv := mustNew(t, inventory.Options{Now: newFakeClock(t0).Now})
	inv.Record(one, "kaspersky", "update", "allow", "default")
	h := clientsHandler(inv)
	get, head := httptest.NewRecorder(), httptest.NewRecorder()
	h.ServeHTTP(get, httptest.NewRequest(http.MethodGet, "/api/v1/clients", nil))
	h.ServeHTTP(head, httptest.NewRequest(http.MethodHead, "/api/v1/clients", nil))
	if head.Code != http.StatusOK || head.Body.Len() != 0 {
		t.Errorf("HEAD: status %d, %d body bytes; want 200 and none", head.Code, head.Body.Len())
	}
	if cl := head.Header().Get("Content-Length"); cl != strconv.Itoa(get.Body.Len()) {
		t.Errorf("HEAD Content-Length = %s; GET body is %d bytes", cl, get.Body.Len())
	}
}
