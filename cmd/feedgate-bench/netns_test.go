package main

import (
	"slices"
	"strings"
	"testing"
)

// TestTopologyCommands checks that the namespaces are linked only to each
// other: every veth end is created inside a namespace, and every other
// command acts inside one, so nothing touches the host's network.
func TestTopologyCommands(t *testing.T) {
	n := namespaces{client: "c", gateway: "g", origin: "o"}
	cmds := topologyCommands(n)
	inNS := map[string]bool{"c": true, "g": true, "o": true}
	var added []string
	addrs := map[string]string{} // address -> namespace
	for _, args := range cmds {
		line := strings.Join(args, " ")
		switch {
		case len(args) == 4 && args[1] == "netns" && args[2] == "add":
			added = append(added, args[3])
		case len(args) > 3 && args[1] == "link" && args[2] == "add":
			// ip link add DEV netns NS type veth peer name PEER netns NS2
			var nss []string
			for i, a := range args {
				if a == "netns" && i+1 < len(args) {
					nss = append(nss, args[i+1])
				}
			}
			if len(nss) != 2 || !inNS[nss[0]] || !inNS[nss[1]] {
				t.Errorf("%q: both veth ends must be created in the run's namespaces", line)
			}
		case len(args) > 2 && args[1] == "-n":
			if !inNS[args[2]] {
				t.Errorf("%q: not one of the run's namespaces", line)
			}
			if len(args) > 5 && args[3] == "addr" && args[4] == "add" {
				addrs[args[5]] = args[2]
			}
		case len(args) > 3 && args[1] == "netns" && args[2] == "exec":
			if !inNS[args[3]] {
				t.Errorf("%q: not one of the run's namespaces", line)
			}
		default:
			t.Errorf("%q acts outside the namespaces", line)
		}
	}
	if !slices.Equal(added, []string{"c", "g", "o"}) {
		t.Errorf("namespaces added: %v; want c, g, o", added)
	}
	want := map[string]string{
		nsClientAddr + "/24": "c", nsGatewayClientSide + "/24": "g",
		nsGatewayOriginSide + "/24": "g", nsOriginAddr + "/24": "o",
	}
	for a, ns := range want {
		if addrs[a] != ns {
			t.Errorf("address %s in namespace %q; want %q", a, addrs[a], ns)
		}
	}
	for _, dev := range []string{vethClient, vethGatewayClient, vethGatewayOrigin, vethOrigin} {
		found := false
		for _, args := range cmds {
			if strings.Contains(strings.Join(args, " "), "link set "+dev+" mtu 1500 txqueuelen 1000 up") {
				found = true
			}
		}
		if !found {
			t.Errorf("%s is not set to MTU 1500, txqueuelen 1000 and up", dev)
		}
	}
}

func TestRedirectRuleset(t *testing.T) {
	got := redirectRuleset("gw-client", []int{8080, 8443, 9000}, 3129)
	want := `table ip feedgate_bench {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "gw-client" tcp dport { 8080, 8443, 9000 } redirect to :3129
	}
}
`
	if got != want {
		t.Errorf("redirectRuleset =\n%s\nwant\n%s", got, want)
	}
}

func TestNamespacesFor(t *testing.T) {
	n := namespacesFor(4242)
	if n.client != "fgbench-4242-client" || n.gateway != "fgbench-4242-gw" || n.origin != "fgbench-4242-origin" {
		t.Errorf("namespacesFor(4242) = %+v", n)
	}
}

func TestRoundOrder(t *testing.T) {
	names := func(cs []*contender) string {
		var s []string
		for _, c := range cs {
			s = append(s, c.name)
		}
		return strings.Join(s, ",")
	}
	cs := []*contender{{name: "direct"}, {name: "feedgate"}, {name: "feedgate-ns"}, {name: "feedgate-transparent"}}
	tests := []struct {
		round int
		want  string
	}{
		{1, "direct,feedgate,feedgate-ns,feedgate-transparent"},
		{2, "feedgate,feedgate-transparent,feedgate-ns,direct"},
		{3, "feedgate-ns,feedgate-transparent,direct,feedgate"},
		{4, "direct,feedgate,feedgate-transparent,feedgate-ns"},
		{5, "feedgate,feedgate-ns,feedgate-transparent,direct"},
	}
	for _, tt := range tests {
		if got := names(roundOrder(cs, tt.round)); got != tt.want {
			t.Errorf("round %d: %s; want %s", tt.round, got, tt.want)
		}
	}
	if got := names(cs); got != "direct,feedgate,feedgate-ns,feedgate-transparent" {
		t.Errorf("roundOrder changed its argument: %s", got)
	}
	loopback := cs[:2]
	if got := names(roundOrder(loopback, 2)); got != "feedgate,direct" {
		t.Errorf("round 2 without the namespace contenders: %s; want feedgate,direct", got)
	}
	// Over as many rounds as contenders, each runs once in each place.
	bench := []*contender{{name: "direct"}, {name: "feedgate"}, {name: "squid"}, {name: "stdlib-go"}}
	for _, c := range bench {
		seen := map[int]bool{}
		for round := 1; round <= len(bench); round++ {
			seen[slices.Index(roundOrder(bench, round), c)] = true
		}
		if len(seen) != len(bench) {
			t.Errorf("%s ran in places %v over %d rounds; want each place once", c.name, seen, len(bench))
		}
	}
}

func TestPairedRatios(t *testing.T) {
	got := pairedRatios([]float64{9, 10, 3, 4}, []float64{10, 10, 0})
	if want := []float64{0.9, 1}; !slices.Equal(got, want) {
		t.Errorf("pairedRatios = %v; want %v (the zero round and the unpaired one left out)", got, want)
	}
}

func TestRatioColumns(t *testing.T) {
	label := func(cols []ratioColumn) string {
		var s []string
		for _, c := range cols {
			s = append(s, c.label())
		}
		return strings.Join(s, " ")
	}
	if got := label(ratioColumns([]string{"direct", "feedgate"})); got != "feedgate/direct feedgate/squid" {
		t.Errorf("loopback only: %s", got)
	}
	if got := label(ratioColumns([]string{"direct", "feedgate", "squid", "stdlib-go"})); got != "feedgate/direct feedgate/squid feedgate/stdlib-go" {
		t.Errorf("with stdlib-go: %s", got)
	}
	if got := label(ratioColumns([]string{"direct", "feedgate", "feedgate-ns", "feedgate-transparent"})); got != "feedgate/direct feedgate/squid feedgate-transparent/feedgate-ns" {
		t.Errorf("with the namespace contenders: %s", got)
	}
}

func TestTransparentSummary(t *testing.T) {
	names := []string{"direct", "feedgate", "feedgate-ns", "feedgate-transparent"}
	res := results{}
	for _, r := range [][2]float64{{100, 97}, {100, 90}, {80, 81}} { // explicit, transparent
		res.add("keepalive_rps", "feedgate-ns", r[0])
		res.add("keepalive_rps", "feedgate-transparent", r[1])
	}
	res.add("connect_tls_mbps", "feedgate-ns", 800)
	res.add("connect_tls_mbps", "feedgate-transparent", 880)
	res.add("connect_raw_mbps", "feedgate-ns", 1000)
	res.add("connect_raw_mbps", "feedgate-transparent", 900)
	got := transparentSummary(res, names)
	want := "feedgate-transparent/feedgate-ns: keep-alive req/s 0.97x round by round (from 0.90x to 1.01x; 0.90x of the medians): within 5 %; " +
		"TLS bulk (CONNECT-equivalent) MB/s 1.10x: more than 5 % ahead; " +
		"raw bulk (CONNECT-equivalent) MB/s 0.90x: more than 5 % behind"
	if got != want {
		t.Errorf("transparentSummary =\n%s\nwant\n%s", got, want)
	}
	if got := transparentSummary(res, names[:2]); got != "" {
		t.Errorf("without the namespace contenders: %q; want none", got)
	}
}
