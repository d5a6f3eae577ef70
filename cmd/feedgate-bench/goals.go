package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"text/tabwriter"
)

// goalBasis is what a goal compares feedgate's median with.
type goalBasis int

const (
	vsSquid           goalBasis = iota // feedgate's median over Squid's
	vsDirectOverSquid                  // feedgate's ratio to direct over Squid's ratio to direct
	own                                // feedgate's median itself
)

// goal is one of issue 17's goals for feedgate.
type goal struct {
	label   string
	metric  string
	basis   goalBasis
	atLeast bool // the figure must be at least target; else at most
	target  float64
	unit    string // of an own figure
}

// goals are issue 17's goal table, in its order.
var goals = []goal{
	{label: "keep-alive req/s vs Squid", metric: "keepalive_rps", basis: vsSquid, atLeast: true, target: 1.3},
	{label: "keep-alive p99 vs Squid", metric: "keepalive_p99_ms", basis: vsSquid, target: 0.9},
	{label: "new connections/s vs Squid", metric: "newconn_rps", basis: vsSquid, atLeast: true, target: 1.5},
	{label: "CONNECT TLS download vs direct, over Squid's", metric: "connect_tls_mbps", basis: vsDirectOverSquid, atLeast: true, target: 1.05},
	{label: "RSS per idle tunnel after a TLS handshake", metric: "tunnel_rss_kib", basis: own, target: 16, unit: "KiB"},
}

// Statuses of a goal.
const (
	goalMet     = "MET"
	goalNotMet  = "NOT MET"
	goalNoSquid = "cannot be judged: Squid did not run"
	goalNoData  = "cannot be judged: not measured in this run"
)

// verdict is a goal judged from one run's medians.
type verdict struct {
	goal     goal
	figure   float64 // NaN when the goal cannot be judged
	evidence string  // the medians the figure comes from
	status   string
}

// want is the goal as text: "≥ 1.30x", "≤ 16 KiB".
func (g goal) want() string {
	op := "≤"
	if g.atLeast {
		op = "≥"
	}
	switch g.basis {
	case own:
		return fmt.Sprintf("%s %g %s", op, g.target, g.unit)
	case vsDirectOverSquid:
		return fmt.Sprintf("%s %s Squid's", op, formatRatio(g.target))
	}
	return fmt.Sprintf("%s %s", op, formatRatio(g.target))
}

// judgeGoals judges every goal from the medians of res.
func judgeGoals(res results, names []string) []verdict {
	vs := make([]verdict, len(goals))
	for i, g := range goals {
		vs[i] = judge(g, res, names)
	}
	return vs
}

func judge(g goal, res results, names []string) verdict {
	v := verdict{goal: g, figure: nan()}
	fg := res.median(g.metric, "feedgate")
	if math.IsNaN(fg) {
		v.status = goalNoData
		return v
	}
	sq := res.median(g.metric, "squid")
	if g.basis != own && (!slices.Contains(names, "squid") || math.IsNaN(sq)) {
		v.status = goalNoSquid
		return v
	}
	switch g.basis {
	case own:
		v.figure = fg
		v.evidence = fmt.Sprintf("%.2f %s", fg, g.unit)
	case vsSquid:
		v.figure = ratio(fg, sq)
		v.evidence = fmt.Sprintf("%s (feedgate %s, Squid %s)", goalRatio(v.figure), format(fg), format(sq))
	case vsDirectOverSquid:
		direct := res.median(g.metric, "direct")
		if math.IsNaN(direct) {
			v.status = goalNoData
			return v
		}
		f, s := ratio(fg, direct), ratio(sq, direct)
		v.figure = ratio(f, s)
		v.evidence = fmt.Sprintf("%s Squid's (feedgate %s = %s direct, Squid %s = %s, direct %s)",
			goalRatio(v.figure), format(fg), goalRatio(f), format(sq), goalRatio(s), format(direct))
	}
	// The rounds' range, beside the medians' figure, shows how far one
	// run's noise could move it.
	rounds := res[g.metric]["feedgate"]
	if g.basis != own {
		rounds = pairedRatios(rounds, res[g.metric]["squid"])
	}
	if len(rounds) > 1 {
		f := func(x float64) string { return fmt.Sprintf("%.2f", x) }
		if g.basis != own {
			f = goalRatio
		}
		meeting := 0
		for _, r := range rounds {
			if g.meets(r) {
				meeting++
			}
		}
		v.evidence += fmt.Sprintf("; rounds from %s to %s, %d of %d meeting it", f(slices.Min(rounds)), f(slices.Max(rounds)), meeting, len(rounds))
	}
	v.status = goalNotMet
	if g.meets(v.figure) {
		v.status = goalMet
	}
	return v
}

// meets reports whether a figure meets the goal.
func (g goal) meets(figure float64) bool {
	if g.atLeast {
		return figure >= g.target
	}
	return figure <= g.target
}

// printGoals prints the verdicts after the table.
func printGoals(w io.Writer, vs []verdict) {
	fmt.Fprintln(w, "\nIssue 17's goals, from this run's medians:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  goal\tfeedgate\ttarget\tstatus")
	for _, v := range vs {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", v.goal.label, orDash(v.evidence), v.goal.want(), v.status)
	}
	tw.Flush()
}

// goalRatio formats a ratio judged against a goal with one decimal more
// than the table's, so that a figure just short of its goal does not print
// as the goal itself.
func goalRatio(r float64) string { return fmt.Sprintf("%.3fx", r) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
