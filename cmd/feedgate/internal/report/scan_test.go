package report

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestScanJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		line string
		want map[string]string // field: value; sent and received as numbers
		err  bool
	}{
		{
			name: "a decision record",
			line: `{"time":"2024-09-29T04:00:00.123Z","level":"INFO","msg":"request","kind":"http","client":"10.1.2.3","method":"GET","host":"s01.upd.kaspersky.com","port":80,"path":"/bases/av.kdc","vendor":"kaspersky","category":"update","match":"host","rule":"updates-cutoff","action":"block","flagged":false,"status":403,"bytes_sent":12,"bytes_received":345,"duration_seconds":0.001,"policy":"p"}`,
			want: map[string]string{"time": "2024-09-29T04:00:00.123Z", "msg": "request", "client": "10.1.2.3", "host": "s01.upd.kaspersky.com",
				"vendor": "kaspersky", "category": "update", "match": "host", "rule": "updates-cutoff", "action": "block", "sent": "12", "received": "345"},
		},
		{
			name: "escapes are decoded in wanted values only, and an escaped quote does not end a string",
			line: `{"msg":"request","path":"/a\"b\\","host":"h\u00e9\"x","rule":"r\\\\","vendor":"none"}`,
			want: map[string]string{"msg": "request", "host": `hé"x`, "rule": `r\\`, "vendor": "none"},
		},
		{
			name: "white space, nested values and unknown keys are stepped over",
			line: " { \"a\" : [1, {\"b\": \"}\"}], \"msg\" : \"request\" , \"c\":{\"d\":[]},\"n\":null,\"bytes_sent\": 7 }\r",
			want: map[string]string{"msg": "request", "sent": "7"},
		},
		{name: "empty object", line: `{}`, want: map[string]string{}},
		{name: "a non-integer byte count reads as 0", line: `{"bytes_sent":1.5,"bytes_received":-3}`, want: map[string]string{}},
		{name: "cut mid-string", line: `{"msg":"requ`, err: true},
		{name: "cut after a value", line: `{"msg":"request"`, err: true},
		{name: "missing colon", line: `{"msg" "request"}`, err: true},
		{name: "trailing garbage", line: `{"msg":"request"} x`, err: true},
		{name: "not an object", line: `["msg"]`, err: true},
		{name: "an unclosed nested value", line: `{"a":[1,2}`, err: true},
		{name: "a bad escape in a wanted value", line: `{"host":"a\qb"}`, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l jsonLine
			err := scanJSON([]byte(tt.line), &l)
			if tt.err {
				if err == nil {
					t.Fatalf("scanJSON(%q) = nil; want an error", tt.line)
				}
				return
			}
			if err != nil {
				t.Fatalf("scanJSON(%q): %v", tt.line, err)
			}
			got := map[string]string{}
			for k, v := range map[string][]byte{"time": l.time, "msg": l.msg, "client": l.client, "host": l.host, "vendor": l.vendor,
				"category": l.category, "match": l.match, "signature": l.signature, "rule": l.rule, "action": l.action,
				"instance": l.instance, "rejected": l.rejected} {
				if v != nil {
					got[k] = string(v)
				}
			}
			if l.sent != 0 {
				got["sent"] = itoa(l.sent)
			}
			if l.received != 0 {
				got["received"] = itoa(l.received)
			}
			if len(got) != len(tt.want) {
				t.Errorf("got %q; want %q", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %q; want %q", k, got[k], v)
				}
			}
			// Whatever scanJSON accepts, encoding/json accepts too.
			if !json.Valid([]byte(tt.line)) {
				t.Errorf("scanJSON accepted %q, which is not valid JSON", tt.line)
			}
		})
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestScanJSONNoAllocs: a record without escapes costs no allocation.
func TestScanJSONNoAllocs(t *testing.T) {
	line := []byte(`{"time":"2024-09-29T04:00:00.123Z","level":"INFO","msg":"request","kind":"http","client":"10.1.2.3","method":"GET","host":"s01.upd.kaspersky.com","port":80,"path":"/bases/av.kdc","vendor":"kaspersky","category":"update","match":"host","rule":"updates-cutoff","action":"block","flagged":false,"status":403,"bytes_sent":12,"bytes_received":345,"duration_seconds":0.001,"policy":"p"}`)
	var l jsonLine
	if n := testing.AllocsPerRun(100, func() {
		if err := scanJSON(line, &l); err != nil {
			t.Fatal(err)
		}
		if _, ok := parseTime(l.time); !ok {
			t.Fatal("time")
		}
	}); n != 0 {
		t.Errorf("scanJSON and parseTime: %v allocations per record; want 0", n)
	}
}

// TestParseTime compares the fast parser with time.Parse.
func TestParseTime(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"2024-09-29T04:00:00Z", "2024-09-29T04:00:00.123Z", "2024-09-29T00:00:00.123456789-04:00",
		"2024-11-03T01:30:00.5-05:00", "2024-02-29T23:59:59.999999999+14:00", "1970-01-01T00:00:00Z",
		"1969-12-31T23:59:59.1Z", "2000-03-01T00:00:00+05:30", "2026-12-06T08:32:48.317845438Z",
		"0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
		"2024-09-29T04:00:00.1234567891Z",
	} {
		want, err := time.Parse(time.RFC3339Nano, s)
		got, ok := parseTime([]byte(s))
		if err != nil || !ok || got != want.UnixNano() {
			t.Errorf("parseTime(%q) = %d, %v; time.Parse: %d, %v", s, got, ok, want.UnixNano(), err)
		}
	}
	for _, s := range []string{"", "2024-09-29", "2024-09-29T04:00:00", "2024-02-30T00:00:00Z", "2023-02-29T00:00:00Z",
		"2024-09-29T24:00:00Z", "2024-09-29T04:00:00.Z", "2024-09-29T04:00:00+0400", "2024-09-29t04:00:00z", "2024-13-01T00:00:00Z", "yesterday"} {
		if got, ok := parseTime([]byte(s)); ok {
			t.Errorf("parseTime(%q) = %d, true; want false", s, got)
		}
	}
}

func TestScanSquid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		line                       string
		ms                         int64
		client, method, host, path string
		port                       int
		bytes                      int64
		err                        string
	}{
		{line: "1727582400.123    456 10.1.2.3 TCP_DENIED/403 0 GET http://s01.upd.kaspersky.com/bases/av.kdc - HIER_NONE/- -",
			ms: 1727582400123, client: "10.1.2.3", method: "GET", host: "s01.upd.kaspersky.com", port: 80, path: "/bases/av.kdc"},
		{line: "1727582401.001  12034 10.1.2.3 TCP_TUNNEL/200 48213 CONNECT www.example.com:443 - HIER_DIRECT/www.example.com -",
			ms: 1727582401001, client: "10.1.2.3", method: "CONNECT", host: "www.example.com", port: 443, bytes: 48213},
		{line: "1727582401.001      1 ::1 TCP_MISS/200 10 GET https://user:pw@[2001:db8::1]:8443/a/b?q=1#f - HIER_DIRECT/2001:db8::1 text/html",
			ms: 1727582401001, client: "::1", method: "GET", host: "2001:db8::1", port: 8443, path: "/a/b", bytes: 10},
		{line: "1727582401.001      1 10.0.0.1 TCP_MISS/200 10 GET http://Example.COM - HIER_DIRECT/1.2.3.4 -",
			ms: 1727582401001, client: "10.0.0.1", method: "GET", host: "Example.COM", port: 80, path: "/", bytes: 10},
		{line: "1727582401.001      1 10.0.0.1 TCP_TUNNEL/200 10 CONNECT [2001:db8::1]:443 - HIER_DIRECT/2001:db8::1 -",
			ms: 1727582401001, client: "10.0.0.1", method: "CONNECT", host: "2001:db8::1", port: 443, bytes: 10},
		{line: "1727582401.001      0 10.0.0.1 NONE_NONE/400 3800 NONE error:invalid-request - HIER_NONE/- text/html", err: "without a target URL"},
		{line: "1727582401.001 0 10.0.0.1 TCP_MISS/200 10 GET http://x/", err: "fewer than 10 fields"},
		{line: "yesterday 0 10.0.0.1 TCP_MISS/200 10 GET http://x/ - HIER_NONE/- -", err: "no time.ms"},
		{line: "1727582401.001 0 10.0.0.1 TCP_MISS 10 GET http://x/ - HIER_NONE/- -", err: "code/status"},
		{line: "1727582401.001 0 10.0.0.1 TCP_TUNNEL/200 10 CONNECT example.com - HIER_NONE/- -", err: "not host:port"},
		{line: "1727582401.001 0 10.0.0.1 TCP_MISS/200 10 GET http:///x - HIER_NONE/- -", err: "without a host"},
	}
	for _, tt := range tests {
		var s squidLine
		err := scanSquid([]byte(tt.line), &s)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("scanSquid(%q) = %v; want an error with %q", tt.line, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("scanSquid(%q): %v", tt.line, err)
			continue
		}
		if s.t != tt.ms*1e6 || string(s.client) != tt.client || string(s.method) != tt.method || string(s.host) != tt.host ||
			s.port != tt.port || string(s.path) != tt.path || s.bytes != tt.bytes || s.connect != (tt.method == "CONNECT") {
			t.Errorf("scanSquid(%q) = t %d client %q method %q host %q port %d path %q bytes %d", tt.line, s.t, s.client, s.method, s.host, s.port, s.path, s.bytes)
		}
	}
}
