package admin

import (
	"net/http/httptest"
	"testing"
)

// TestSecurityHeaders sends a request to every route of New, and to what
// no route serves, and wants the strict headers on every answer.
func TestSecurityHeaders(t *testing.T) {
	wantHeaders := map[string]string{
		"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
			"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
		"X-Content-Type-Options":       "nosniff",
		"X-Frame-Options":              "DENY",
		"Referrer-Policy":              "no-referrer",
		"Cross-Origin-Opener-Policy":   "same-origin",
		"Cross-Origin-Resource-Policy": "same-origin",
	}
	d := testDeps(t)
	d.Pprof = true
	d.ReloadEnabled = true
	for _, tc := range []struct {
		method, target string
		status         int
	}{
		{"GET", "/", 200},
		{"GET", "/?d_client=nope", 400},
		{"GET", "/clients/192.0.2.1", 200},
		{"GET", "/clients/nope", 400},
		{"GET", "/static/status.css", 200},
		{"GET", "/static/status.js", 200},
		{"GET", "/static/nope.js", 404},
		{"GET", "/api/v1/status", 200},
		{"GET", "/api/v1/traffic", 200},
		{"GET", "/api/v1/decisions", 200},
		{"GET", "/api/v1/decisions?action=x", 400},
		{"GET", "/api/v1/clients/192.0.2.1", 200},
		{"POST", "/", 405},
		{"GET", "/metrics", 200},
		{"GET", "/healthz", 200},
		{"HEAD", "/healthz", 200},
		{"GET", "/readyz", 200},
		{"POST", "/-/reload", 200},
		{"GET", "/api/v1/clients", 200},
		{"GET", "/api/v1/clients?since=never", 400},
		{"DELETE", "/api/v1/clients", 405},
		{"GET", "/feeds/kaspersky/block.txt", 200},
		{"GET", "/feeds/kaspersky/nope.txt", 404},
		{"GET", "/proxy.pac", 200},
		{"GET", "/wpad.dat", 200},
		{"GET", "/debug/pprof/", 200},
		{"GET", "/debug/pprof/cmdline", 200},
		{"GET", "/debug/pprof/symbol", 200},
		// Profile and trace take seconds to answer a GET; the headers
		// are set before any handler runs.
		{"POST", "/debug/pprof/profile", 405},
		{"POST", "/debug/pprof/trace", 405},
		{"POST", "/healthz", 405},
		{"GET", "/-/reload", 405},
		{"GET", "/nope", 404},
		{"GET", "/feeds/%3Cscript%3E/block.txt", 404},
	} {
		resp, _ := serve(t, d, tc.method, tc.target)
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: %d; want %d", tc.method, tc.target, resp.StatusCode, tc.status)
		}
		for name, want := range wantHeaders {
			if got := resp.Header.Values(name); len(got) != 1 || got[0] != want {
				t.Errorf("%s %s: %s %q; want %q", tc.method, tc.target, name, got, want)
			}
		}
	}
}

// TestSecurityHeadersReplaceWebConfig: the exporter toolkit sets
// http_server_config.headers before the admin handler runs; feedgate's
// own values are what its answers carry.
func TestSecurityHeadersReplaceWebConfig(t *testing.T) {
	rr := httptest.NewRecorder()
	rr.Header().Set("X-Frame-Options", "sameorigin")
	rr.Header().Set("Strict-Transport-Security", "max-age=31536000")
	New(testDeps(t)).ServeHTTP(rr, httptest.NewRequest("GET", "/healthz", nil))
	h := rr.Result().Header
	if got := h.Values("X-Frame-Options"); len(got) != 1 || got[0] != "DENY" {
		t.Errorf("X-Frame-Options %q; want [DENY]", got)
	}
	if got := h.Get("Strict-Transport-Security"); got != "max-age=31536000" {
		t.Errorf("Strict-Transport-Security %q; want the web config's kept", got)
	}
}
