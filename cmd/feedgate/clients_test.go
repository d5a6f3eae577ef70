package main

import (
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/feedgate/feedgate/cmd/feedgate/internal/admin"
	"github.com/feedgate/feedgate/proxy/inventory"
	"github.com/feedgate/feedgate/rules"
)

// TestClientsReadsTheAdminAPI runs feedgate clients against the admin
// handler itself: the CLI reads the reply the handler writes.
func TestClientsReadsTheAdminAPI(t *testing.T) {
	now := time.Date(2024, 9, 1, 12, 0, 0, 0, time.UTC)
	inv, err := inventory.New(inventory.Options{MaxEntries: 3, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	inv.Record(netip.MustParseAddr("10.0.0.9"), "kaspersky", "ksn", "allow", "default") // evicted
	now = now.Add(time.Minute)
	inv.Record(netip.MustParseAddr("10.0.0.1"), "kaspersky", "update", "block", "updates-cutoff")
	now = now.Add(time.Minute)
	inv.Record(netip.MustParseAddr("2001:db8::2"), "kaspersky", "licensing", "allow", "")
	now = now.Add(time.Minute)
	inv.RecordDecision(netip.MustParseAddr("10.0.0.1"), "KAV-Mirror.corp.example", &rules.Decision{
		Vendor: "kaspersky", Category: "update", Signature: "bases-tree", RuleName: "updates-cutoff", Action: rules.Block,
	})
	srv := httptest.NewServer(admin.New(admin.Deps{Registry: prometheus.NewRegistry(), Inventory: inv}))
	defer srv.Close()

	var out, errOut strings.Builder
	if code := run([]string{"clients", "-admin", strings.TrimPrefix(srv.URL, "http://"), "-vendor", "kaspersky"}, &out, &errOut); code != 0 {
		t.Fatalf("feedgate clients: exit %d: %s", code, errOut.String())
	}
	var got [][]string
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		got = append(got, strings.Fields(l))
	}
	want := [][]string{
		{"LAST", "SEEN", "CLIENT", "VENDOR", "CATEGORY", "REQUESTS", "LAST", "ACTION", "RULE", "FIRST", "SEEN", "MATCH", "HOST", "SIGNATURE"},
		{"2024-09-01T12:03:00Z", "10.0.0.1", "kaspersky", "update", "1", "block", "updates-cutoff", "2024-09-01T12:03:00Z", "signature", "kav-mirror.corp.example", "bases-tree"},
		{"2024-09-01T12:02:00Z", "2001:db8::2", "kaspersky", "licensing", "1", "allow", "-", "2024-09-01T12:02:00Z", "host", "-", "-"},
		{"2024-09-01T12:01:00Z", "10.0.0.1", "kaspersky", "update", "1", "block", "updates-cutoff", "2024-09-01T12:01:00Z", "host", "-", "-"},
		{"3", "entries", "(1", "older", "entries", "evicted:", "raise", "[inventory]", "max_clients)"},
	}
	if len(got) != len(want) {
		t.Fatalf("output:\n%s", out.String())
	}
	for i := range want {
		if strings.Join(got[i], " ") != strings.Join(want[i], " ") {
			t.Errorf("line %d: %q; want %q", i+1, got[i], want[i])
		}
	}
}
