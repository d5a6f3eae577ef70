package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy/inventory"
)

func TestClientsHandler(t *testing.T) {
	now := time.Date(2024, 9, 1, 12, 0, 0, 0, time.UTC)
	inv, err := inventory.New(inventory.Options{Now: func() time.Time { return now }, MaxEntries: 4})
	if err != nil {
		t.Fatal(err)
	}
	// Two clients use two Kaspersky categories, ending at 12:03 with a tie
	// on LastSeen; an hour later a fifth entry evicts 127.0.0.2's
	// licensing, so that evictions shows up.
	for _, r := range []struct {
		advance                        time.Duration // before recording
		client, category, action, rule string
	}{
		{0, "127.0.0.1", "update", "allow", "kaspersky-updates"},
		{time.Minute, "127.0.0.2", "licensing", "log", "flag-licensing"},
		{time.Minute, "127.0.0.1", "update", "block", "updates-cutoff"},
		{time.Minute, "127.0.0.2", "update", "block", "updates-cutoff"},
		{0, "127.0.0.1", "licensing", "allow", "default"},
		{time.Hour, "10.0.0.3", "ksn", "allow", "default"},
	} {
		now = now.Add(r.advance)
		inv.Record(netip.MustParseAddr(r.client), "kaspersky", r.category, r.action, r.rule)
	}
	h := clientsHandler(inv)

	// The entries left, each as the handler writes it.
	const (
		three        = `{"client": "10.0.0.3",  "vendor": "kaspersky", "category": "ksn",       "first_seen": "2024-09-01T13:03:00Z", "last_seen": "2024-09-01T13:03:00Z", "requests": 1, "last_action": "allow", "last_rule": "default", "match": "host"}`
		oneLicensing = `{"client": "127.0.0.1", "vendor": "kaspersky", "category": "licensing", "first_seen": "2024-09-01T12:03:00Z", "last_seen": "2024-09-01T12:03:00Z", "requests": 1, "last_action": "allow", "last_rule": "default", "match": "host"}`
		twoUpdate    = `{"client": "127.0.0.2", "vendor": "kaspersky", "category": "update",    "first_seen": "2024-09-01T12:03:00Z", "last_seen": "2024-09-01T12:03:00Z", "requests": 1, "last_action": "block", "last_rule": "updates-cutoff", "match": "host"}`
		oneUpdate    = `{"client": "127.0.0.1", "vendor": "kaspersky", "category": "update",    "first_seen": "2024-09-01T12:00:00Z", "last_seen": "2024-09-01T12:02:00Z", "requests": 2, "last_action": "block", "last_rule": "updates-cutoff", "match": "host"}`
	)
	for _, tc := range []struct {
		name  string
		query string
		want  []string
	}{
		{"all", "", []string{three, oneLicensing, twoUpdate, oneUpdate}},
		{"vendor", "?vendor=kaspersky", []string{three, oneLicensing, twoUpdate, oneUpdate}},
		{"other vendor", "?vendor=drweb", []string{}},
		{"category", "?category=update", []string{twoUpdate, oneUpdate}},
		{"vendor and category", "?vendor=kaspersky&category=licensing", []string{oneLicensing}},
		{"since duration", "?since=1h", []string{three, oneLicensing, twoUpdate}},
		{"since duration excludes", "?since=59m", []string{three}},
		{"since duration with minutes", "?since=1h1m", []string{three, oneLicensing, twoUpdate, oneUpdate}},
		{"since RFC 3339", "?since=2024-09-01T12:02:00Z", []string{three, oneLicensing, twoUpdate, oneUpdate}},
		{"since RFC 3339 with offset", "?since=2024-09-01T08:02:01-04:00", []string{three, oneLicensing, twoUpdate}},
		{"since and category", "?since=2h&category=update", []string{twoUpdate, oneUpdate}},
		{"empty parameters", "?vendor=&category=&since=", []string{three, oneLicensing, twoUpdate, oneUpdate}},
		{"match host", "?match=host", []string{three, oneLicensing, twoUpdate, oneUpdate}},
		{"match signature", "?match=signature", []string{}},
		{"last action", "?action=block", []string{twoUpdate, oneUpdate}},
		{"client", "?client=127.0.0.1", []string{oneLicensing, oneUpdate}},
		{"client mapped", "?client=::ffff:127.0.0.1", []string{oneLicensing, oneUpdate}},
		{"client and last action", "?client=127.0.0.1&action=allow", []string{oneLicensing}},
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
			want := fmt.Sprintf(`{"clients": [%s], "count": %d, "evictions": 1, "generated_at": "2024-09-01T13:03:00Z"}`,
				strings.Join(tc.want, ", "), len(tc.want))
			checkJSON(t, rr.Body.Bytes(), want)
		})
	}
}

// checkJSON compares a JSON body with the JSON text want as values, so
// that neither the order of an object's fields nor white space matters; a
// difference shows both with their fields in the same order.
func checkJSON(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("decoding %s: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("decoding the expected %s: %v", want, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("body\n %s\nwant\n %s", mustJSON(t, g), mustJSON(t, w))
	}
}

// TestClientsHandlerShape pins the JSON field names the CLI reads.
func TestClientsHandlerShape(t *testing.T) {
	t0 := time.Date(2024, 9, 1, 12, 0, 0, 0, time.UTC)
	inv, err := inventory.New(inventory.Options{Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
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

	inv.Record(netip.MustParseAddr("2001:db8::1"), "kaspersky", "update", "block", "updates-cutoff")
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
		"match":       "host",
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
	inv, err := inventory.New(inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := clientsHandler(inv)
	for _, tc := range []struct {
		name, method, target string
		status               int
		errorHas             string
	}{
		{"bad since", http.MethodGet, "/api/v1/clients?since=yesterday", http.StatusBadRequest, `since "yesterday"`},
		{"bad action", http.MethodGet, "/api/v1/clients?action=deny", http.StatusBadRequest, `action "deny"`},
		{"bad client", http.MethodGet, "/api/v1/clients?client=me", http.StatusBadRequest, `client "me"`},
		{"since in days", http.MethodGet, "/api/v1/clients?since=7d", http.StatusBadRequest, "duration such as 24h"},
		{"negative since", http.MethodGet, "/api/v1/clients?since=-1h", http.StatusBadRequest, "negative"},
		{"date without time", http.MethodGet, "/api/v1/clients?since=2024-09-01", http.StatusBadRequest, "RFC 3339"},
		{"malformed query", http.MethodGet, "/api/v1/clients?vendor=%zz", http.StatusBadRequest, "query"},
		{"unknown match", http.MethodGet, "/api/v1/clients?match=path", http.StatusBadRequest, `match "path": want "host" or "signature"`},
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
	t0 := time.Date(2024, 9, 1, 12, 0, 0, 0, time.UTC)
	inv, err := inventory.New(inventory.Options{Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	inv.Record(netip.MustParseAddr("127.0.0.1"), "kaspersky", "update", "allow", "default")
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
