package report

import (
	"cmp"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/feedgate/feedgate/proxy/evidence"
)

// Result returns the report of everything added so far. It may be called
// again after more Adds.
func (r *Report) Result() *Result {
	p := r.opts.Policy
	res := &Result{
		Policy: p.Name, Timezone: r.loc.String(), From: r.opts.From, Until: r.opts.Until,
		Records: r.records, Skipped: r.skipped,
		Malformed:      Malformed{Count: r.malformed.Count, First: slices.Clone(r.malformed.First)},
		Inputs:         []InputInfo{},
		Days:           []Day{},
		Clients:        []Client{},
		Hosts:          []Host{},
		SignatureHosts: []Host{},
		Cutoffs:        []Cutoff{},
	}
	if r.records > 0 {
		res.FirstRecord, res.LastRecord = r.time(r.first), r.time(r.last)
	}
	for _, ia := range r.inputs {
		info := ia.InputInfo
		for _, id := range ia.instances {
			info.Instances = append(info.Instances, r.strs.list[id])
		}
		res.Inputs = append(res.Inputs, info)
	}
	for k, a := range r.days {
		c := r.classList[k.class]
		res.Days = append(res.Days, Day{Date: r.strs.list[k.day], Vendor: r.strs.list[c.vendor], Category: r.strs.list[c.category],
			Action: r.strs.list[k.action], Requests: a.requests, BytesSent: a.sent, BytesReceived: a.received})
	}
	slices.SortFunc(res.Days, func(a, b Day) int {
		return cmp.Or(cmp.Compare(a.Date, b.Date), cmp.Compare(a.Vendor, b.Vendor), cmp.Compare(a.Category, b.Category), cmp.Compare(a.Action, b.Action))
	})
	for k, a := range r.clients {
		c := r.classList[k.b]
		res.Clients = append(res.Clients, Client{Client: r.clientT.list[k.a], Vendor: r.strs.list[c.vendor], Category: r.strs.list[c.category],
			FirstSeen: r.time(a.first), LastSeen: r.time(a.last), Requests: a.requests,
			LastAction: r.strs.list[a.lastAction], LastRule: r.strs.list[a.rule]})
	}
	slices.SortFunc(res.Clients, func(a, b Client) int {
		return cmp.Or(b.LastSeen.Compare(a.LastSeen), cmp.Compare(a.Client, b.Client), cmp.Compare(a.Vendor, b.Vendor), cmp.Compare(a.Category, b.Category))
	})
	res.Hosts = r.hostRows(r.hosts)
	if len(res.Hosts) > r.opts.TopHosts && r.opts.TopHosts > 0 {
		res.Hosts = res.Hosts[:r.opts.TopHosts]
	}
	res.SignatureHosts = r.hostRows(r.sigHosts)
	res.Verification = r.verification()
	for _, c := range r.cutoffs {
		res.Cutoffs = append(res.Cutoffs, r.cutoff(c, res))
	}
	return res
}

func (r *Report) time(ns int64) time.Time { return time.Unix(0, ns).In(r.loc) }

func (r *Report) hostRows(table map[pairKey]*hostAgg) []Host {
	out := []Host{}
	for k, a := range table {
		c := r.classList[k.b]
		h := Host{Host: r.hostT.list[k.a], Vendor: r.strs.list[c.vendor], Category: r.strs.list[c.category],
			Requests: a.requests, Allowed: a.allowed, Clients: a.clients}
		if a.sig >= 0 {
			h.Signature = r.strs.list[a.sig]
		}
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b Host) int {
		return cmp.Or(cmp.Compare(b.Requests, a.Requests), cmp.Compare(a.Host, b.Host), cmp.Compare(a.Vendor, b.Vendor), cmp.Compare(a.Category, b.Category))
	})
	return out
}

// verification says how far the evidence behind the report verified.
func (r *Report) verification() Verification {
	v := Verification{Checked: r.checker != nil, Chains: []ChainInfo{}, Unverified: slices.Clone(r.unverified)}
	if r.checker == nil {
		v.Summary = "The records were not verified: no verifier key was given."
		return v
	}
	for _, c := range r.checker.Result().Chains {
		ci := ChainInfo{Instance: c.Instance, Records: c.Records, Signed: c.Signed}
		if c.Signed > 0 || c.LastAt.File != "" {
			ci.SignedAt = c.Last.Time.In(r.loc)
			ci.Root = base64.StdEncoding.EncodeToString(c.Last.Root[:])
			ci.Where = c.LastAt.String()
		}
		v.Chains = append(v.Chains, ci)
	}
	var sb strings.Builder
	if r.verifyErr != nil {
		var p *evidence.Problem
		msg := r.verifyErr.Error()
		if errors.As(r.verifyErr, &p) {
			msg = p.Error()
		}
		v.Problem = msg
		fmt.Fprintf(&sb, "Verification FAILED at %s: the records cannot be relied on.", msg)
	} else {
		v.OK = true
		var feedgateInputs int
		for _, ia := range r.inputs {
			if ia.Format == "feedgate" {
				feedgateInputs++
			}
		}
		switch {
		case feedgateInputs == 0:
			sb.WriteString("There is no feedgate log to verify.")
		case len(v.Chains) == 0:
			sb.WriteString("The feedgate logs hold no sealed record.")
		default:
			sb.WriteString("The feedgate records verified against the verifier key:")
			for i, c := range v.Chains {
				if i > 0 {
					sb.WriteString(";")
				}
				fmt.Fprintf(&sb, " instance %s, %s", c.Instance, plural(int64(c.Records), "record"))
				switch {
				case c.Signed == 0:
					sb.WriteString(", none of them signed by a checkpoint")
				case c.Signed == c.Records:
					fmt.Fprintf(&sb, ", all signed (last checkpoint %s, %s)", fmtAt(c.SignedAt, r.loc), c.Where)
				default:
					n := int64(c.Records - c.Signed)
					fmt.Fprintf(&sb, ", signed up to record %s (checkpoint %s, %s); the %s after it %s not signed yet",
						thousands(int64(c.Signed)), fmtAt(c.SignedAt, r.loc), c.Where, plural(n, "record"), isAre(n))
				}
			}
			sb.WriteString(".")
		}
	}
	if len(r.unverified) > 0 {
		fmt.Fprintf(&sb, " Squid logs cannot be verified (%s).", strings.Join(r.unverified, ", "))
	}
	v.Summary = sb.String()
	return v
}

// cutoff makes the compliance statement of one cut-off.
func (r *Report) cutoff(c *cutoffAgg, res *Result) Cutoff {
	out := Cutoff{
		Rule: c.rule.Name, Reason: c.rule.Reason, At: c.rule.From.In(r.loc), Vendor: c.vendor, Category: slices.Clone(c.categories),
		Requests: c.requests, Blocked: c.blocked, Allowed: c.allowd, FromSquid: c.fromSquid, AllowedBy: map[string]int64{},
		Covered: r.records > 0 && r.last >= c.from,
	}
	if !c.rule.Until.IsZero() {
		out.Until = c.rule.Until.In(r.loc)
	}
	for rule, n := range c.allowedBy {
		out.AllowedBy[r.strs.list[rule]] = n
	}
	var sb strings.Builder
	when := "From " + fmtAt(out.At, r.loc)
	if !out.Until.IsZero() {
		when += " until " + fmtAt(out.Until, r.loc)
	}
	all, cats := r.categoryText(c)
	what := func(n int64) string {
		if all {
			return c.vendor + " " + pluralWord(n, "request") + " (any category)"
		}
		return c.vendor + " " + cats + " " + pluralWord(n, "request")
	}
	switch {
	case !out.Covered:
		fmt.Fprintf(&sb, "No record is at or after %s (rule %s): the records say nothing about this cut-off.", fmtAt(out.At, r.loc), c.rule.Name)
	case c.requests == 0:
		fmt.Fprintf(&sb, "%s (rule %s), the records hold no %s, so none was let through.", when, c.rule.Name, what(1))
	case c.allowd == 0:
		fmt.Fprintf(&sb, "%s (rule %s), 0 of %s %s %s let through; %s blocked.",
			when, c.rule.Name, thousands(c.requests), what(c.requests), wasWere(c.requests), thousands(c.blocked))
	default:
		rulesBy := slices.SortedFunc(maps.Keys(out.AllowedBy), func(a, b string) int {
			return cmp.Or(cmp.Compare(out.AllowedBy[b], out.AllowedBy[a]), cmp.Compare(a, b))
		})
		var by []string
		for _, name := range rulesBy {
			by = append(by, fmt.Sprintf("%s by rule %s", thousands(out.AllowedBy[name]), name))
		}
		fmt.Fprintf(&sb, "%s (rule %s), %s of %s %s %s let through (%s); %s blocked.",
			when, c.rule.Name, thousands(c.allowd), thousands(c.requests), what(c.requests), wasWere(c.allowd),
			strings.Join(by, ", "), thousands(c.blocked))
	}
	if c.fromSquid > 0 {
		fmt.Fprintf(&sb, " %s of these %s from Squid logs, whose action is what this policy decides, not what happened.",
			thousands(c.fromSquid), isAre(c.fromSquid))
	}
	sb.WriteString(" ")
	sb.WriteString(res.Verification.Summary)
	out.Statement = sb.String()
	return out
}

// categoryText names the cut-off's categories: all says they are all of
// the vendor's, else cats lists them.
func (r *Report) categoryText(c *cutoffAgg) (all bool, cats string) {
	for _, cat := range r.opts.Policy.Catalogs {
		if cat.Vendor == c.vendor && len(cat.Categories) == len(c.categories) && len(c.categories) > 1 {
			all := true
			for _, x := range cat.Categories {
				all = all && slices.Contains(c.categories, x)
			}
			if all {
				return true, ""
			}
		}
	}
	return false, strings.Join(c.categories, "/")
}

// fmtAt is an instant as the statements write it: local time in the
// policy's timezone, with the zone's abbreviation, and seconds only when
// the instant has them.
func fmtAt(t time.Time, loc *time.Location) string {
	t = t.In(loc)
	if t.Second() != 0 || t.Nanosecond() != 0 {
		return t.Format("2006-01-02 15:04:05.999999999 MST")
	}
	return t.Format("2006-01-02 15:04 MST")
}

// thousands writes n with commas between groups of three digits.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func pluralWord(n int64, noun string) string {
	if n == 1 {
		return noun
	}
	return noun + "s"
}

func wasWere(n int64) string {
	if n == 1 {
		return "was"
	}
	return "were"
}

func isAre(n int64) string {
	if n == 1 {
		return "is"
	}
	return "are"
}

func plural(n int64, noun string) string { return thousands(n) + " " + pluralWord(n, noun) }
