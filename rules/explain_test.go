package rules_test

import (
	"testing"
	"time"

	"github.com/feedgate/feedgate/rules"
)

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in      string
		host    string
		port    int
		path    string
		wantErr string // "" for success
	}{
		{in: "www.kaspersky.com", host: "www.kaspersky.com", port: 443},
		{in: "x.ksc.kaspersky.com:27200", host: "x.ksc.kaspersky.com", port: 27200},
		{in: "http://www.kaspersky.com/buy_kis", host: "www.kaspersky.com", port: 80, path: "/buy_kis"},
		{in: "HTTP://www.kaspersky.com:8080/renewal-center/home", host: "www.kaspersky.com", port: 8080, path: "/renewal-center/home"},
		{in: "https://my.kaspersky.com", host: "my.kaspersky.com", port: 443, path: "/"},
		{in: "https://my.kaspersky.com?x=1", host: "my.kaspersky.com", port: 443, path: "/"},
		{in: "www.kaspersky.com/renewal-center", host: "www.kaspersky.com", port: 80, path: "/renewal-center"},
		{in: "http://[2a03:2480:8000::1]:8080/x", host: "2a03:2480:8000::1", port: 8080, path: "/x"},
		{in: "[2a03:2480:8000::1]:80", host: "2a03:2480:8000::1", port: 80},
		{in: "[2a03:2480:8000::1]", host: "2a03:2480:8000::1", port: 443},
		{in: "2a03:2480:8000::1", host: "2a03:2480:8000::1", port: 443},
		{in: "93.159.228.1:80", host: "93.159.228.1", port: 80},
		{in: "bücher.kaspersky.com", host: "bücher.kaspersky.com", port: 443},
		{in: "ftp://update.kaspersky.com/", wantErr: `target "ftp://update.kaspersky.com/": unsupported scheme "ftp" (want http or https)`},
		{in: "x.ksc.kaspersky.com:0", wantErr: `target "x.ksc.kaspersky.com:0": invalid port "0"`},
		{in: "x.ksc.kaspersky.com:65536", wantErr: `target "x.ksc.kaspersky.com:65536": invalid port "65536"`},
		{in: "x.ksc.kaspersky.com:https", wantErr: `target "x.ksc.kaspersky.com:https": invalid port "https"`},
		{in: "http://x.kaspersky.com:99999/", wantErr: `target "http://x.kaspersky.com:99999/": invalid port "99999"`},
		{in: ":443", wantErr: `target ":443": no host`},
		{in: "", wantErr: `target "": no host`},
		{in: "http:///bases/", wantErr: `target "http:///bases/": no host`},
	}
	for _, tc := range tests {
		got, err := rules.ParseTarget(tc.in)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("ParseTarget(%q) error = %v; want %s", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseTarget(%q) error: %v", tc.in, err)
			continue
		}
		want := rules.Target{Input: tc.in, Host: tc.host, Port: tc.port, Path: tc.path}
		if got != want {
			t.Errorf("ParseTarget(%q) = %+v; want %+v", tc.in, got, want)
		}
	}
}

func TestParseInstant(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		in   string
		want string // UTC; "" for an error
	}{
		{"2024-09-29T04:00:00Z", "2024-09-29T04:00:00Z"},
		{"2024-09-28T23:59:55-04:00", "2024-09-29T03:59:55Z"},
		{"2024-09-29T04:00:00.5Z", "2024-09-29T04:00:00.5Z"},
		{"2024-09-29T00:00:00", "2024-09-29T04:00:00Z"}, // local: EDT
		{"2024-09-29T00:00", "2024-09-29T04:00:00Z"},
		{"2024-09-29", "2024-09-29T04:00:00Z"},
		{"2024-01-15", "2024-01-15T05:00:00Z"}, // local: EST
		{"2024-07-20T00:00:00", "2024-07-20T04:00:00Z"},
		{"Sept 29, 2024", ""},
		{"2024-09-29 00:00:00", ""},
		{"00:00:00", ""},
		{"", ""},
	}
	for _, tc := range tests {
		got, err := rules.ParseInstant(tc.in, ny)
		if tc.want == "" {
			want := `invalid time "` + tc.in + `": want RFC 3339 such as 2024-09-28T23:59:55-04:00`
			if err == nil || err.Error() != want {
				t.Errorf("ParseInstant(%q) = %s, %v; want error %s", tc.in, fmtTime(got), err, want)
			}
			continue
		}
		if err != nil || fmtTime(got) != tc.want {
			t.Errorf("ParseInstant(%q) = %s, %v; want %s", tc.in, fmtTime(got), err, tc.want)
		}
	}
}
