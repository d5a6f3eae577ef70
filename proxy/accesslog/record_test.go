package accesslog_test

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy/accesslog"
	"github.com/feedgate/feedgate/rules"
)

// jsonKeys returns the keys of a JSON object in the order they appear.
func jsonKeys(t *testing.T, line string) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("line %q is not a JSON object: %v", line, err)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// TestJSONFields: the JSON sink writes the fields that apply to a record,
// in the documented order (docs/decision-log.md), and a flagged record at
// warning level.
func TestJSONFields(t *testing.T) {
	t.Parallel()
	at := time.Date(2024, 9, 29, 4, 0, 0, 0, time.UTC)
	client := netip.MustParseAddr("192.0.2.7")
	tests := []struct {
		name  string
		rec   accesslog.Record
		level string
		keys  string
		// values are fields whose written value is checked too.
		values map[string]any
	}{
		{
			name: "allowed http request",
			rec: accesslog.Record{Time: at, Kind: accesslog.KindHTTP, Client: client, Method: "GET", Host: "www.example.test", Port: 80, Path: "/",
				Decided: true, Decision: rules.Decision{Vendor: "none", Category: "none", RuleName: "default"}, Status: 200, Policy: "p"},
			level: "INFO",
			keys:  "time level msg kind client method host port path vendor category rule action flagged status bytes_sent bytes_received duration_seconds policy",
		},
		{
			name: "flagged tunnel cut at a policy change, in report mode",
			rec: accesslog.Record{Time: at, Kind: accesslog.KindConnect, Client: client, Method: "CONNECT", Host: "ksn.kaspersky.com", Port: 443,
				Decided: true, Decision: rules.Decision{Vendor: "kaspersky", Category: "ksn", RuleName: "r", Action: rules.Log, Reported: true, ClientGroup: "lab"},
				Status: 200, Policy: "p", SNI: "ksn.kaspersky.com", SNIResult: "match", SNIRetry: "ksn.kaspersky.com",
				Closed: "policy_change", CutRule: "cutoff", Error: "reset"},
			level: "WARN",
			keys:  "time level msg kind client method host port vendor category rule action flagged report_only client_group status bytes_sent bytes_received duration_seconds policy sni sni_result sni_retry closed cut_rule error",
		},
		{
			name: "blocked update on a host a catalog pattern names",
			rec: accesslog.Record{Time: at, Kind: accesslog.KindHTTP, Client: client, Method: "GET", Host: "s07.upd.kaspersky.com", Port: 80, Path: "/index/u0607g.xml",
				Decided: true, Decision: rules.Decision{Vendor: "kaspersky", Category: "update", Pattern: "*.upd.kaspersky.com", RuleName: "updates-cutoff", Action: rules.Block},
				Status: 403, Policy: "p"},
			level:  "INFO",
			keys:   "time level msg kind client method host port path vendor category match rule action flagged status bytes_sent bytes_received duration_seconds policy",
			values: map[string]any{"match": "host"},
		},
		{
			name: "blocked update base on an internal mirror, found by a signature",
			rec: accesslog.Record{Time: at, Kind: accesslog.KindHTTP, Client: client, Method: "GET", Host: "kav-mirror.corp.example", Port: 80, Path: "/bases/av/kdb/i386/dailyc.kdc",
				Decided: true, Decision: rules.Decision{Vendor: "kaspersky", Category: "update", Signature: "bases-tree", RuleName: "updates-cutoff", Action: rules.Block},
				Status: 403, Policy: "p"},
			level:  "INFO",
			keys:   "time level msg kind client method host port path vendor category match signature rule action flagged status bytes_sent bytes_received duration_seconds policy",
			values: map[string]any{"match": "signature", "signature": "bases-tree"},
		},
		{
			name: "transparent tunnel with a forged name",
			rec: accesslog.Record{Time: at, Kind: accesslog.KindTransparent, Client: client, Host: "www.example.test", Port: 443,
				Decided: true, Decision: rules.Decision{Vendor: "none", Category: "none", RuleName: "default"}, Status: 200, Policy: "p",
				SNI: "www.example.test", SNIResult: "match", Mode: accesslog.ModeTransparent,
				OriginalDst: netip.MustParseAddrPort("[2001:db8:2::20]:443"), HostVerify: "mismatch"},
			level: "INFO",
			keys:  "time level msg kind client method host port vendor category rule action flagged status bytes_sent bytes_received duration_seconds policy sni sni_result mode original_dst host_verify",
		},
		{
			name: "transparent connection without an original destination",
			rec: accesslog.Record{Time: at, Kind: accesslog.KindTransparent, Client: client, Rejected: "invalid", Policy: "p",
				Mode: accesslog.ModeTransparent},
			level:  "WARN",
			keys:   "time level msg kind client method host port rejected status bytes_sent bytes_received duration_seconds policy mode original_dst",
			values: map[string]any{"original_dst": "", "host": "", "port": 0.0},
		},
		{
			name:  "refused before any decision",
			rec:   accesslog.Record{Time: at, Kind: accesslog.KindConnect, Method: "CONNECT", Host: "a.example.test", Port: 25, Rejected: "port", Status: 403, Policy: "p"},
			level: "WARN",
			keys:  "time level msg kind client method host port rejected status bytes_sent bytes_received duration_seconds policy",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := accesslog.NewJSON(&buf).Write(&tt.rec); err != nil {
				t.Fatal(err)
			}
			line := buf.String()
			if strings.Count(line, "\n") != 1 {
				t.Fatalf("not one line: %q", line)
			}
			if got := strings.Join(jsonKeys(t, line), " "); got != tt.keys {
				t.Errorf("keys\n got %s\nwant %s", got, tt.keys)
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatal(err)
			}
			if m["level"] != tt.level || m["msg"] != "request" || m["time"] != "2024-09-29T04:00:00Z" {
				t.Errorf("level %v, msg %v, time %v; want %s, request, 2024-09-29T04:00:00Z", m["level"], m["msg"], m["time"], tt.level)
			}
			for k, v := range tt.values {
				if m[k] != v {
					t.Errorf("%s = %#v; want %#v", k, m[k], v)
				}
			}
		})
	}
}

// TestNewFormats: every format New names gives a sink, and an unknown one
// is an error that lists them.
func TestNewFormats(t *testing.T) {
	t.Parallel()
	for _, f := range accesslog.Formats() {
		if s, err := accesslog.New(f, &bytes.Buffer{}); err != nil || s == nil {
			t.Errorf("New(%q) = %v, %v", f, s, err)
		}
	}
	if _, err := accesslog.New("common", &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "squid") {
		t.Errorf("New(common) error = %v; want one that lists the formats", err)
	}
}
