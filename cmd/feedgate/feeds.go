package main

import (
	"bytes"
	"cmp"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/config"
	"github.com/feedgate/feedgate/rules/feeds"
)

// runExport writes a feed for DNS servers, firewalls or Squid, or the PAC
// file, to stdout.
func runExport(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("export", stderr)
	config := fs.String("config", "", "policy `FILE` (default: the built-in policy)")
	format := fs.String("format", "", "output `FORMAT`: edl, hosts, dnsmasq, rpz, squid or pac")
	vendor := fs.String("vendor", "", "the catalog `VENDOR` (default: the policy's only vendor)")
	actionName := fs.String("action", "block", "list the patterns whose action is `ACTION` (allow, log or block)")
	at := fs.String("at", "", "the instant, `TIME` (RFC 3339 or a local date-time in the policy's timezone; default: now)")
	proxyAddr := fs.String("proxy", "", "for -format pac: the proxy `HOST:PORT` the file sends clients to (default: the policy's pac_proxy)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *format == pacExport && fs.NArg() == 0 {
		return exportPAC(fs, *config, *proxyAddr, stdout, stderr)
	}
	f, err := feeds.ParseFormat(*format)
	if err != nil || fs.NArg() > 0 {
		fmt.Fprintf(stderr, "feedgate export: -format edl|hosts|dnsmasq|rpz|squid|pac is required (%v)\n", err)
		return 2
	}
	if *proxyAddr != "" {
		fmt.Fprintf(stderr, "feedgate export: -proxy is for -format pac; a %s list names hosts only\n", *format)
		return 2
	}
	action, ok := rules.ParseAction(*actionName)
	if !ok {
		fmt.Fprintf(stderr, "feedgate export: -action %q: want allow, log or block\n", *actionName)
		return 2
	}
	p, now, status := policyAt("export", *config, *at, stderr)
	if p == nil {
		return status
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

// exportPAC writes the PAC file the admin listener serves at /proxy.pac,
// for a plain web server where the admin listener asks browsers for
// credentials they cannot send. A PAC file depends on the policy's hosts,
// not on the clock or an action: -at, -action and -vendor are refused.
func exportPAC(fs *flag.FlagSet, file, proxyAddr string, stdout, stderr io.Writer) int {
	var wrong []string
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "at" || f.Name == "action" || f.Name == "vendor" {
			wrong = append(wrong, "-"+f.Name)
		}
	})
	if len(wrong) > 0 {
		fmt.Fprintf(stderr, "feedgate export: -format pac takes no %s: a PAC file lists every catalog host, at all times\n", strings.Join(wrong, ", "))
		return 2
	}
	c, warnings, err := loadConfig(file)
	if err != nil {
		printProblems(stderr, warnings, err)
		return 1
	}
	addr := cmp.Or(proxyAddr, c.PAC.Proxy)
	if addr == "" {
		fmt.Fprintln(stderr, "feedgate export: -format pac needs the address clients reach the proxy at: -proxy HOST:PORT, or pac_proxy in the policy")
		return 2
	}
	if !config.ValidPACProxy(addr) {
		fmt.Fprintf(stderr, "feedgate export: -proxy %q: want HOST:PORT\n", addr)
		return 2
	}
	_, _ = stdout.Write(feeds.PAC(c.Policy, addr, c.PAC.All))
	return 0
}
