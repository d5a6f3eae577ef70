package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/feedgate/feedgate/proxy"
	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/feeds"
)

// feedHandler serves GET /feeds/{vendor}/{action}.txt: the host patterns
// whose action in force now is {action}, as a firewall's external dynamic
// list. It reads the running policy and the policy clock on every request,
// so a firewall that polls it follows cut-offs and reloads.
func feedHandler(srv *proxy.Server, clock proxy.Clock) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name, ok := strings.CutSuffix(r.PathValue("file"), ".txt")
		action, okA := rules.ParseAction(name)
		if !ok || !okA {
			http.Error(w, "want /feeds/{vendor}/{allow|log|block}.txt", http.StatusNotFound)
			return
		}
		var b bytes.Buffer
		if err := feeds.Write(&b, feeds.EDL, srv.Policy(), r.PathValue("vendor"), action, clock.Now()); err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", feeds.ContentType(feeds.EDL))
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(b.Bytes())
	}
}

// pacHandler serves the proxy auto-config file (/proxy.pac, /wpad.dat).
func pacHandler(srv *proxy.Server, listen net.Addr) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p := srv.Policy()
		addr, err := pacProxy(p, listen)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", feeds.PACContentType)
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(feeds.PAC(p, addr, p.PAC.All))
	}
}

// pacProxy is the proxy address the PAC file gives clients: pac_proxy, or
// the proxy listener's own address when that is a specific one.
func pacProxy(p *rules.Policy, listen net.Addr) (string, error) {
	if p.PAC.Proxy != "" {
		return p.PAC.Proxy, nil
	}
	if ap := addrPort(listen); ap.IsValid() && !ap.Addr().IsUnspecified() {
		return ap.String(), nil
	}
	return "", fmt.Errorf("feedgate listens on %s, which clients cannot use as an address: set pac_proxy = \"host:port\" in the policy", listen)
}

// runExport writes a feed for DNS servers, firewalls or Squid to stdout.
func runExport(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("export", stderr)
	config := fs.String("config", "", "policy `FILE` (default: the built-in policy)")
	format := fs.String("format", "", "output `FORMAT`: edl, hosts, dnsmasq, rpz or squid")
	vendor := fs.String("vendor", "", "the catalog `VENDOR` (default: the policy's only vendor)")
	actionName := fs.String("action", "block", "list the patterns whose action is `ACTION` (allow, log or block)")
	at := fs.String("at", "", "the instant, `TIME` (RFC 3339 or a local date-time in the policy's timezone; default: now)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	f, err := feeds.ParseFormat(*format)
	if err != nil || fs.NArg() > 0 {
		fmt.Fprintf(stderr, "feedgate export: -format edl|hosts|dnsmasq|rpz|squid is required (%v)\n", err)
		return 2
	}
	action, ok := rules.ParseAction(*actionName)
	if !ok {
		fmt.Fprintf(stderr, "feedgate export: -action %q: want allow, log or block\n", *actionName)
		return 2
	}
	p, warnings, err := loadPolicy(*config)
	if err != nil {
		printProblems(stderr, warnings, err)
		return 1
	}
	now, err := instantOrNow(*at, p.Location)
	if err != nil {
		fmt.Fprintf(stderr, "feedgate export: -at: %v\n", err)
		return 2
	}
	v := *vendor
	if v == "" {
		if len(p.Catalogs) != 1 {
			fmt.Fprintln(stderr, "feedgate export: the policy has several vendors: name one with -vendor")
			return 2
		}
		v = p.Catalogs[0].Vendor
	}
	var b bytes.Buffer
	if err := feeds.Write(&b, f, p, v, action, now); err != nil {
		fmt.Fprintf(stderr, "feedgate export: %v\n", err)
		return 1
	}
	_, _ = stdout.Write(b.Bytes())
	return 0
}
