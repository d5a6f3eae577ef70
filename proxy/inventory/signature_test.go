package inventory

import (
	"strings"
	"testing"
	"time"

	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/feedgate/feedgate/proxy/internal/testutil"
	"github.com/feedgate/feedgate/rules"
)

func decision(category, match, signature, action string) *rules.Decision {
	d := &rules.Decision{Vendor: "kaspersky", Category: category, RuleName: "updates-cutoff", Signature: signature}
	if match == rules.MatchHost {
		d.Pattern = "*.upd.kaspersky.com"
	}
	d.Action, _ = rules.ParseAction(action)
	return d
}

// TestRecordDecisionSignature checks that requests a signature classified
// are entries of their own, one per client and host however the host is
// spelt, beside the client's entry for the vendor's own hosts, and that
// the match filter finds them.
func TestRecordDecisionSignature(t *testing.T) {
	clock := testutil.NewClock(t0)
	inv := mustNew(t, Options{Now: clock.Now})
	for _, r := range []struct {
		client, host string
		d            *rules.Decision
	}{
		{"10.0.0.1", "s07.upd.kaspersky.com", decision("update", rules.MatchHost, "", "block")},
		{"10.0.0.1", "kav-mirror.corp.example", decision("update", rules.MatchSignature, "update-index", "block")},
		{"10.0.0.1", "KAV-MIRROR.corp.example.", decision("update", rules.MatchSignature, "bases-tree", "block")},
		{"10.0.0.2", "kav-mirror.corp.example", decision("update", rules.MatchSignature, "bases-tree", "block")},
		{"10.0.0.2", "192.0.2.10", decision("update", rules.MatchSignature, "update-index", "log")},
		{"10.0.0.3", "www.example.org", &rules.Decision{Vendor: rules.NoVendor, Category: rules.NoVendor}},
	} {
		clock.Advance(time.Minute)
		inv.RecordDecision(addr(r.client), r.host, r.d)
	}
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	hostEntry := Entry{addr("10.0.0.1"), "kaspersky", "update", at(1), at(1), 1, "block", "updates-cutoff", rules.MatchHost, "", "", []string{"s07.upd.kaspersky.com"}}
	mirror1 := Entry{addr("10.0.0.1"), "kaspersky", "update", at(2), at(3), 2, "block", "updates-cutoff", rules.MatchSignature, "kav-mirror.corp.example", "bases-tree", []string{"kav-mirror.corp.example"}}
	mirror2 := Entry{addr("10.0.0.2"), "kaspersky", "update", at(4), at(4), 1, "block", "updates-cutoff", rules.MatchSignature, "kav-mirror.corp.example", "bases-tree", []string{"kav-mirror.corp.example"}}
	literal := Entry{addr("10.0.0.2"), "kaspersky", "update", at(5), at(5), 1, "log", "updates-cutoff", rules.MatchSignature, "192.0.2.10", "update-index", []string{"192.0.2.10"}}
	for _, tc := range []struct {
		f    Filter
		want []Entry
	}{
		{Filter{}, []Entry{literal, mirror2, mirror1, hostEntry}},
		{Filter{Match: rules.MatchSignature}, []Entry{literal, mirror2, mirror1}},
		{Filter{Match: rules.MatchHost}, []Entry{hostEntry}},
	} {
		if d := sameEntries(inv.Snapshot(tc.f), tc.want); d != "" {
			t.Errorf("Snapshot(%+v):\n%s", tc.f, d)
		}
	}

	// The state file keeps them apart.
	dir := t.TempDir()
	inv.stateFile = dir + "/inventory.json"
	if err := inv.Save(); err != nil {
		t.Fatal(err)
	}
	again := mustNew(t, Options{Now: clock.Now, StateFile: inv.stateFile})
	if d := sameEntries(again.Snapshot(Filter{}), inv.Snapshot(Filter{})); d != "" {
		t.Errorf("after a save and a load:\n%s", d)
	}

	// Clients and hosts count once each: 10.0.0.1 has two entries, and
	// kav-mirror two clients.
	want := `
# HELP feedgate_clients Distinct clients that used a vendor category in the last 24 hours.
# TYPE feedgate_clients gauge
feedgate_clients{category="update",vendor="kaspersky"} 2
# HELP feedgate_signature_hosts Distinct hosts on which a catalog signature recognised a vendor category in the last 24 hours.
# TYPE feedgate_signature_hosts gauge
feedgate_signature_hosts{category="update",vendor="kaspersky"} 2
`
	if err := promtestutil.CollectAndCompare(inv.Collector(), strings.NewReader(want), "feedgate_clients", "feedgate_signature_hosts"); err != nil {
		t.Error(err)
	}
	clock.Advance(25 * time.Hour)
	want = strings.ReplaceAll(want, "} 2", "} 0")
	if err := promtestutil.CollectAndCompare(inv.Collector(), strings.NewReader(want), "feedgate_clients", "feedgate_signature_hosts"); err != nil {
		t.Errorf("a day later: %v", err)
	}
}
