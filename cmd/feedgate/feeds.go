package main

import (
	"bytes"
	"fmt"
	"io"

	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/feeds"
)

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
