package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/feedgate/feedgate/cmd/feedgate/internal/admin"
	"github.com/feedgate/feedgate/proxy/inventory"
)

// runClients prints a running feedgate's client inventory: the machines
// still talking to a vendor, most recently seen first.
func runClients(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("clients", stderr)
	adminURL := fs.String("admin", "http://127.0.0.1:9128", "the admin listener's `URL`")
	vendor := fs.String("vendor", "", "only this `VENDOR`")
	category := fs.String("category", "", "only this `CATEGORY`")
	match := fs.String("match", "", "only entries classified by `MATCH`: host, or signature (the vendor's traffic a catalog signature found on other hosts, such as internal update mirrors)")
	since := fs.String("since", "", "only clients seen since `TIME` (RFC 3339, or a duration such as 24h)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "feedgate clients: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	base := *adminURL
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	q := url.Values{}
	for k, v := range map[string]string{"vendor": *vendor, "category": *category, "match": *match, "since": *since} {
		if v != "" {
			q.Set(k, v)
		}
	}
	u := strings.TrimSuffix(base, "/") + "/api/v1/clients"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	// Messages name the URL without a password given in -admin.
	shown := u
	if pu, err := url.Parse(u); err == nil {
		shown = pu.Redacted()
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		fmt.Fprintf(stderr, "feedgate clients: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		fmt.Fprintf(stderr, "feedgate clients: reading %s: %v\n", shown, err)
		return 1
	}
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "feedgate clients: %s: %s: %s\n", shown, resp.Status, strings.TrimSpace(string(body)))
		return 1
	}
	var reply admin.ClientsReply
	if err := json.Unmarshal(body, &reply); err != nil {
		fmt.Fprintf(stderr, "feedgate clients: %s: %v\n", shown, err)
		return 1
	}
	slices.SortStableFunc(reply.Clients, func(a, b inventory.Entry) int { return b.LastSeen.Compare(a.LastSeen) })
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LAST SEEN\tCLIENT\tVENDOR\tCATEGORY\tREQUESTS\tLAST ACTION\tRULE\tFIRST SEEN\tMATCH\tHOST\tSIGNATURE")
	for _, e := range reply.Clients {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.LastSeen.Format(time.RFC3339), e.Client, e.Vendor, e.Category,
			e.Requests, e.LastAction, cmp.Or(e.LastRule, "-"), e.FirstSeen.Format(time.RFC3339),
			cmp.Or(e.Match, "-"), cmp.Or(e.Host, "-"), cmp.Or(e.Signature, "-"))
	}
	tw.Flush()
	fmt.Fprintf(stdout, "%d entries", len(reply.Clients))
	if reply.Evictions > 0 {
		fmt.Fprintf(stdout, " (%d older entries evicted: raise [inventory] max_clients)", reply.Evictions)
	}
	fmt.Fprintln(stdout)
	return 0
}
