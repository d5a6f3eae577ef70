package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// The namespace contenders put feedgate on a gateway between a client and
// an origin, each in a network namespace of its own, linked only to each
// other by veth pairs, with documentation addresses:
//
//	client 198.51.100.2 ── 198.51.100.1 gateway 192.0.2.1 ── 192.0.2.10 origin
//
// One feedgate in the gateway namespace serves both: feedgate-ns is
// reached explicitly (absolute URIs and CONNECTs to its proxy port),
// feedgate-transparent by connecting straight to the origin's address, which
// an nftables redirect on the gateway hands to its transparent listener.
// Both cross the same links and the same conntrack, so their ratio is what
// transparent interception costs.
const (
	nsClientAddr        = "198.51.100.2"
	nsGatewayClientSide = "198.51.100.1"
	nsGatewayOriginSide = "192.0.2.1"
	nsOriginAddr        = "192.0.2.10"
	nsClientNet         = "198.51.100.0/24"
	nsProxyPort         = 3128
	nsTransparentPort   = 3129
	// An Ethernet MTU, as on a real gateway, and the usual queue length,
	// on every link.
	vethMTU        = 1500
	vethTxQueueLen = 1000
)

// Interface names, each in its own namespace.
const (
	vethClient        = "client0"   // client namespace
	vethGatewayClient = "gw-client" // gateway namespace, towards the client
	vethGatewayOrigin = "gw-origin" // gateway namespace, towards the origin
	vethOrigin        = "origin0"   // origin namespace
)

// namespaces are the names of the three network namespaces of one run.
type namespaces struct{ client, gateway, origin string }

// namespacesFor names a run's namespaces after its process, so that runs
// side by side do not meet.
func namespacesFor(pid int) namespaces {
	p := "fgbench-" + strconv.Itoa(pid) + "-"
	return namespaces{client: p + "client", gateway: p + "gw", origin: p + "origin"}
}

func (n namespaces) all() []string { return []string{n.client, n.gateway, n.origin} }

// topologyCommands are the ip and sysctl commands that build the
// namespaces, their links, addresses and routes. The veth ends are created
// inside the namespaces, so no interface ever exists on the host.
func topologyCommands(n namespaces) [][]string {
	var cmds [][]string
	add := func(args ...string) { cmds = append(cmds, args) }
	for _, ns := range n.all() {
		add("ip", "netns", "add", ns)
	}
	add("ip", "link", "add", vethClient, "netns", n.client, "type", "veth", "peer", "name", vethGatewayClient, "netns", n.gateway)
	add("ip", "link", "add", vethGatewayOrigin, "netns", n.gateway, "type", "veth", "peer", "name", vethOrigin, "netns", n.origin)
	link := func(ns, dev, addr string) {
		add("ip", "-n", ns, "addr", "add", addr, "dev", dev)
		add("ip", "-n", ns, "link", "set", dev, "mtu", strconv.Itoa(vethMTU), "txqueuelen", strconv.Itoa(vethTxQueueLen), "up")
	}
	link(n.client, vethClient, nsClientAddr+"/24")
	link(n.gateway, vethGatewayClient, nsGatewayClientSide+"/24")
	link(n.gateway, vethGatewayOrigin, nsGatewayOriginSide+"/24")
	link(n.origin, vethOrigin, nsOriginAddr+"/24")
	for _, ns := range n.all() {
		add("ip", "-n", ns, "link", "set", "lo", "up")
	}
	add("ip", "-n", n.client, "route", "add", "default", "via", nsGatewayClientSide)
	add("ip", "-n", n.origin, "route", "add", "default", "via", nsGatewayOriginSide)
	add("ip", "netns", "exec", n.gateway, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	return cmds
}

// redirectRuleset is the gateway's nftables ruleset: TCP to ports arriving
// from the client side goes to the transparent listener on port to.
func redirectRuleset(iface string, ports []int, to int) string {
	ps := make([]string, len(ports))
	for i, p := range ports {
		ps[i] = strconv.Itoa(p)
	}
	return fmt.Sprintf(`table ip feedgate_bench {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname %q tcp dport { %s } redirect to :%d
	}
}
`, iface, strings.Join(ps, ", "), to)
}

// errNoNamespaces says why the namespace contenders cannot run here; they
// are then left out, not failed.
type errNoNamespaces struct{ err error }

func (e errNoNamespaces) Error() string { return e.err.Error() }
func (e errNoNamespaces) Unwrap() error { return e.err }

// createTopology builds the namespaces, or says why it cannot.
func createTopology(n namespaces) error {
	if os.Geteuid() != 0 {
		return errNoNamespaces{errors.New("network namespaces, veth pairs and nftables need root")}
	}
	for _, tool := range []string{"ip", "nft", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			return errNoNamespaces{fmt.Errorf("%s is not installed (apt-get install -y iproute2 nftables procps)", tool)}
		}
	}
	for _, args := range topologyCommands(n) {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			return errNoNamespaces{fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))}
		}
	}
	return nil
}

// deleteTopology deletes those of the namespaces that exist; their veth
// pairs go with them once no process and no socket is left in them.
func deleteTopology(n namespaces) {
	for _, ns := range n.all() {
		if _, err := os.Stat(filepath.Join("/var/run/netns", ns)); err != nil {
			continue
		}
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "ip netns del %s: %v: %s\n", ns, err, strings.TrimSpace(string(out)))
		}
	}
}

// startNamespaced builds the namespaces and starts the origin and feedgate
// in them, and returns the explicit and the transparent contender. What it
// starts is stopped by cl. An errNoNamespaces means the namespaces could not
// be made here.
func startNamespaced(dir, bin string, cl *cleanups) ([]*contender, error) {
	n := namespacesFor(os.Getpid())
	// Registered first, so that it runs last, once the processes and
	// sockets inside are gone.
	cl.add(func() { deleteTopology(n) })
	if err := createTopology(n); err != nil {
		return nil, err
	}
	clientDial, err := openNSDialer(n.client)
	if err != nil {
		return nil, errNoNamespaces{err}
	}
	cl.add(clientDial.close)
	gatewayDial, err := openNSDialer(n.gateway)
	if err != nil {
		return nil, errNoNamespaces{err}
	}
	cl.add(gatewayDial.close)

	origin, ports, err := startOrigin(n.origin, nsOriginAddr)
	if err != nil {
		return nil, fmt.Errorf("origin in %s: %w", n.origin, err)
	}
	cl.add(func() { origin.Process.Kill(); origin.Wait() })

	nft := exec.Command("ip", "netns", "exec", n.gateway, "nft", "-f", "-")
	nft.Stdin = strings.NewReader(redirectRuleset(vethGatewayClient, ports.all(), nsTransparentPort))
	if out, err := nft.CombinedOutput(); err != nil {
		return nil, errNoNamespaces{fmt.Errorf("nft in %s: %v: %s", n.gateway, err, strings.TrimSpace(string(out)))}
	}

	// The origin's name, and the download's TLS server name, resolve to
	// the origin's address, so that host verification matches.
	args := []string{"-listen", net.JoinHostPort(nsGatewayClientSide, strconv.Itoa(nsProxyPort)),
		"-transparent", net.JoinHostPort("0.0.0.0", strconv.Itoa(nsTransparentPort)),
		"-admin", "127.0.0.1:0", "-pprof"}
	for _, p := range ports.all() {
		args = append(args, "-resolve", fmt.Sprintf("%s:%d:%s", benchHost, p, nsOriginAddr))
	}
	args = append(args, "-resolve", fmt.Sprintf("%s:%d:%s", benchHelloName, ports.Source, nsOriginAddr))
	start := func() (*feedgateProcess, error) {
		return startFeedgate(dir, bin, "feedgate-ns", n.gateway, fmt.Sprintf("allowed_clients = [%q]\n", nsClientNet), "", args)
	}
	fg, err := start()
	if err != nil {
		return nil, err
	}
	// fg is replaced by a restart: what reads it reads the one running.
	cl.add(func() { fg.stop() })
	fmt.Fprintf(os.Stderr, "feedgate-ns: proxy %s, transparent :%d, admin %s in namespace %s (profiles: ip netns exec %[4]s curl http://%[3]s/debug/pprof/)\n",
		fg.proxy, nsTransparentPort, fg.admin, n.gateway)

	admin := &http.Client{Transport: &http.Transport{DialContext: gatewayDial.DialContext}}
	goroutines := func() (float64, error) {
		return scrapeGauge(admin, "http://"+fg.admin+"/metrics", "go_goroutines")
	}
	pids := func() []int { return processTree(fg.pid) }
	// Both contenders are this one feedgate: restarting either restarts
	// it, at the same addresses.
	restart := func() error {
		fg.stop()
		next, err := start()
		if err != nil {
			fg = &feedgateProcess{stop: func() {}}
			return err
		}
		fg = next
		return nil
	}
	explicit := &contender{name: "feedgate-ns", proxy: fg.proxy, host: benchHost, ports: ports, originPid: origin.Process.Pid,
		dial: clientDial.dial, pids: pids, goroutines: goroutines, restart: restart}
	transparent := &contender{name: "feedgate-transparent", origin: nsOriginAddr, host: benchHost, ports: ports, originPid: origin.Process.Pid,
		dial: clientDial.dial, pids: pids, goroutines: goroutines, restart: restart}
	return []*contender{explicit, transparent}, nil
}
