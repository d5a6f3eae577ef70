package report

import (
	"cmp"
	"errors"
	"fmt"
	"html/template"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// WriteHTML writes r as one self-contained HTML page for an auditor: the
// compliance statements first, then the verification of the evidence
// behind them, two charts and the tables. The page has no script and
// refers to nothing outside itself, so that it can be archived, mailed
// and printed to PDF as it is; every value from the records goes through
// html/template, since host names, client names and rule reasons are
// whatever the logs and the policy say they are. The same Result gives
// the same bytes.
func WriteHTML(w io.Writer, r *Result) error {
	if r == nil {
		return errors.New("report: writing the HTML page: no result")
	}
	loc := htmlLocation(r.Timezone)
	funcs := template.FuncMap{
		"n":    htmlCount,
		"when": func(t time.Time) string { return htmlWhen(t, loc) },
	}
	// Parsed at every call rather than once per process: a report is
	// written once, and the cost is well under a millisecond.
	t, err := template.New("page").Funcs(funcs).Parse(htmlPageTemplate)
	if err != nil {
		return fmt.Errorf("report: parsing the HTML template: %w", err)
	}
	if err := t.Execute(w, newHTMLPage(r, loc)); err != nil {
		return fmt.Errorf("report: writing the HTML page: %w", err)
	}
	return nil
}

// htmlLocation is the policy's zone, in which the page states every
// time. A zone this system does not know leaves times in the zone they
// carry, which the page still names through the zone abbreviation.
func htmlLocation(name string) *time.Location {
	if name == "" {
		return time.UTC
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil
	}
	return loc
}

func htmlWhen(t time.Time, loc *time.Location) string {
	if t.IsZero() {
		return "–"
	}
	if loc != nil {
		t = t.In(loc)
	}
	return t.Format("2006-01-02 15:04:05 MST")
}

// htmlCount formats a count with thousands separators, for the integer
// types the Result uses.
func htmlCount(v any) string {
	switch v := v.(type) {
	case int64:
		if v < 0 {
			return "-" + htmlDigits(strconv.FormatUint(uint64(-v), 10))
		}
		return htmlDigits(strconv.FormatInt(v, 10))
	case uint64:
		return htmlDigits(strconv.FormatUint(v, 10))
	case int:
		return htmlCount(int64(v))
	}
	return fmt.Sprint(v)
}

func htmlDigits(s string) string {
	if len(s) <= 3 {
		return s
	}
	var b strings.Builder
	head := len(s) % 3
	if head > 0 {
		b.WriteString(s[:head])
	}
	for i := head; i < len(s); i += 3 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(s[i : i+3])
	}
	return b.String()
}

// htmlPlural is "1 request" or "2 requests".
func htmlPlural(n int64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return htmlCount(n) + " " + many
}

// htmlPage is what the template shows: the Result, plus what the
// template cannot compute (verdicts, sums, chart geometry).
type htmlPage struct {
	*Result
	Title    string
	Timezone string
	Period   string
	Inputs   []htmlInput
	// MalformedMore counts the malformed lines beyond the listed ones.
	MalformedMore int64
	Cutoffs       []htmlCutoff
	Verify        htmlVerify
	DayChart      *htmlChart
	ClassChart    *htmlChart
	DaysTotal     Day
}

type htmlInput struct {
	InputInfo
	Instances string
}

type htmlCutoff struct {
	Cutoff
	// Class is held, breached or uncovered, and Verdict says the same in
	// words: the box's border tells them apart without colour.
	Class      string
	Verdict    string
	Categories string
	AllowedBy  []htmlRuleCount
	Evidence   string
}

type htmlRuleCount struct {
	Rule     string
	Requests int64
}

type htmlVerify struct {
	Verification
	Class      string
	Status     string
	Chains     []htmlChain
	Unverified []htmlUnverified
}

type htmlChain struct {
	ChainInfo
	Unsigned uint64
}

type htmlUnverified struct {
	Name, Why string
}

func newHTMLPage(r *Result, loc *time.Location) *htmlPage {
	p := &htmlPage{Result: r, Title: "feedgate report", Timezone: r.Timezone}
	if r.Policy != "" {
		p.Title += ": " + r.Policy
	}
	if p.Timezone == "" {
		p.Timezone = "UTC"
	}
	switch {
	case r.From.IsZero() && r.Until.IsZero():
		p.Period = "all records"
	case r.Until.IsZero():
		p.Period = "from " + htmlWhen(r.From, loc) + " on"
	case r.From.IsZero():
		p.Period = "up to " + htmlWhen(r.Until, loc) + " (not included)"
	default:
		p.Period = htmlWhen(r.From, loc) + " up to " + htmlWhen(r.Until, loc) + " (not included)"
	}
	for _, in := range r.Inputs {
		p.Inputs = append(p.Inputs, htmlInput{InputInfo: in, Instances: strings.Join(in.Instances, ", ")})
	}
	p.MalformedMore = max(r.Malformed.Count-int64(len(r.Malformed.First)), 0)
	p.Verify = newHTMLVerify(r)
	for _, c := range r.Cutoffs {
		p.Cutoffs = append(p.Cutoffs, newHTMLCutoff(c, p.Verify))
	}
	for _, d := range r.Days {
		p.DaysTotal.Requests += d.Requests
		p.DaysTotal.BytesSent += d.BytesSent
		p.DaysTotal.BytesReceived += d.BytesReceived
	}
	p.DayChart = htmlDayChart(r, p.Timezone)
	p.ClassChart = htmlClassChart(r)
	if p.DayChart != nil {
		p.DayChart.Defs = true
	} else if p.ClassChart != nil {
		p.ClassChart.Defs = true
	}
	return p
}

func newHTMLCutoff(c Cutoff, v htmlVerify) htmlCutoff {
	h := htmlCutoff{Cutoff: c, Categories: strings.Join(c.Category, ", ")}
	switch {
	case !c.Covered:
		h.Class = "uncovered"
		h.Verdict = "No evidence: the records end before the cut-off"
	case c.Allowed > 0:
		h.Class = "breached"
		h.Verdict = "Not held: " + htmlPlural(c.Allowed, "vendor request was", "vendor requests were") + " let through after the cut-off"
	default:
		h.Class = "held"
		h.Verdict = "Held: no vendor request was let through after the cut-off"
	}
	for rule, n := range c.AllowedBy {
		h.AllowedBy = append(h.AllowedBy, htmlRuleCount{rule, n})
	}
	slices.SortFunc(h.AllowedBy, func(a, b htmlRuleCount) int {
		return cmp.Or(cmp.Compare(b.Requests, a.Requests), strings.Compare(a.Rule, b.Rule))
	})
	switch v.Class {
	case "verified":
		h.Evidence = "the records behind this statement verified against the verifier key."
	case "failed":
		h.Evidence = "verification FAILED; this statement rests on records that did not verify."
	default:
		h.Evidence = "not verified; no verifier key was given."
	}
	return h
}

func newHTMLVerify(r *Result) htmlVerify {
	v := htmlVerify{Verification: r.Verification}
	switch {
	case !v.Checked:
		v.Class = "unchecked"
		v.Status = "Not checked: no verifier key was given, so this report does not show that its records are untampered."
	case v.OK:
		v.Class = "verified"
		v.Status = "Verified: every feedgate input verified against the verifier key (records, chain and signed checkpoints)."
	default:
		v.Class = "failed"
		v.Status = "Verification FAILED: the records below did not verify, and a report over them proves nothing."
	}
	for _, c := range r.Verification.Chains {
		v.Chains = append(v.Chains, htmlChain{ChainInfo: c, Unsigned: c.Records - min(c.Signed, c.Records)})
	}
	for _, in := range r.Inputs {
		switch {
		case in.Format == "squid":
			v.Unverified = append(v.Unverified, htmlUnverified{in.Name, "a Squid access.log carries no evidence chain"})
		case in.Format == "feedgate" && !v.Checked:
			v.Unverified = append(v.Unverified, htmlUnverified{in.Name, "not checked: no verifier key"})
		}
	}
	return v
}

// The chart series, in stacking order from the axis out: allow, log,
// block, and any other action. Each has a fill that differs in lightness
// and pattern, so that the charts still read when printed in black and
// white; the legend and every bar's title give the numbers in words too.
const htmlSeries = 4

// htmlSeriesKey names series i, in its CSS class s-KEY and in the bars'
// titles.
func htmlSeriesKey(i int) string {
	return [htmlSeries]string{"allow", "log", "block", "other"}[i]
}

func htmlSeriesIndex(action string) int {
	switch action {
	case "allow":
		return 0
	case "log":
		return 1
	case "block":
		return 2
	}
	return 3
}

type htmlChart struct {
	ID, Title, Caption string
	Width, Height      int
	// Defs says that this chart carries the fill patterns of both: an
	// id may occur only once in the page.
	Defs   bool
	Legend []htmlLegend
	Lines  []htmlLine
	Texts  []htmlText
	Bars   []htmlBar
}

type htmlLegend struct {
	Class, Label string
	X, Y, TX, TY string
}

type htmlLine struct {
	Class          string
	X1, Y1, X2, Y2 string
}

type htmlText struct {
	Class, Anchor, Text string
	X, Y, Transform     string
}

type htmlBar struct {
	Title string
	Segs  []htmlSeg
}

type htmlSeg struct {
	Class      string
	X, Y, W, H string
	Requests   int64
}

// htmlBarData is one bar: its label and a value per series.
type htmlBarData struct {
	Label  string
	Values [htmlSeries]int64
}

func (b htmlBarData) total() int64 {
	var t int64
	for _, v := range b.Values {
		t += v
	}
	return t
}

// title is the bar's tooltip and text alternative.
func (b htmlBarData) title() string {
	parts := make([]string, 0, len(b.Values))
	for i, v := range b.Values {
		if v > 0 || i < 3 {
			parts = append(parts, htmlSeriesKey(i)+" "+htmlCount(v))
		}
	}
	return b.Label + ": " + htmlPlural(b.total(), "vendor request", "vendor requests") + " (" + strings.Join(parts, ", ") + ")"
}

// htmlDayChart sums the vendor requests of each day by action: one bar
// per day that has records, in date order. Traffic of no vendor is left
// out, since it would dwarf what the auditor asks about.
func htmlDayChart(r *Result, zone string) *htmlChart {
	byDate := map[string]*htmlBarData{}
	var vendor int64
	for _, d := range r.Days {
		b := byDate[d.Date]
		if b == nil {
			b = &htmlBarData{Label: d.Date}
			byDate[d.Date] = b
		}
		if d.Vendor != "none" {
			b.Values[htmlSeriesIndex(d.Action)] += d.Requests
			vendor += d.Requests
		}
	}
	if vendor == 0 {
		return nil
	}
	bars := make([]htmlBarData, 0, len(byDate))
	for _, b := range byDate {
		bars = append(bars, *b)
	}
	slices.SortFunc(bars, func(a, b htmlBarData) int { return strings.Compare(a.Label, b.Label) })
	return htmlColumns("chart-days", "Vendor requests per day, by action",
		"One bar per day with records (days in "+zone+"), summed over every vendor category; traffic of no vendor is not shown. Days without records have no bar.",
		"day ("+zone+")", bars)
}

// htmlClassChart sums the requests of each vendor category by action,
// over the whole period.
func htmlClassChart(r *Result) *htmlChart {
	byClass := map[string]*htmlBarData{}
	for _, d := range r.Days {
		if d.Vendor == "none" {
			continue
		}
		label := d.Vendor + " / " + d.Category
		b := byClass[label]
		if b == nil {
			b = &htmlBarData{Label: label}
			byClass[label] = b
		}
		b.Values[htmlSeriesIndex(d.Action)] += d.Requests
	}
	bars := make([]htmlBarData, 0, len(byClass))
	for _, b := range byClass {
		if b.total() > 0 {
			bars = append(bars, *b)
		}
	}
	if len(bars) == 0 {
		return nil
	}
	slices.SortFunc(bars, func(a, b htmlBarData) int {
		return cmp.Or(cmp.Compare(b.total(), a.total()), strings.Compare(a.Label, b.Label))
	})
	return htmlRows("chart-classes", "Vendor requests per category, by action",
		"Every vendor category with requests in the period, the most requested first.", bars)
}

// htmlNiceStep is the smallest step of 1, 2 or 5 times a power of ten
// that divides [0, top] into at most n intervals.
func htmlNiceStep(top int64, n int64) int64 {
	for s := int64(1); ; s *= 10 {
		for _, m := range []int64{1, 2, 5} {
			if s*m*n >= top {
				return s * m
			}
		}
	}
}

// htmlTick is an axis label: whole millions as "3M" and "1.5M", since
// the axis has room for about seven characters; the bars' own labels and
// titles keep every digit.
func htmlTick(v int64) string {
	if v < 1_000_000 {
		return htmlCount(v)
	}
	m := htmlCount(v / 1_000_000)
	if tenths := v % 1_000_000 / 100_000; tenths > 0 {
		m += "." + strconv.FormatInt(tenths, 10)
	}
	return m + "M"
}

// htmlMinBar is the least thickness of a segment that stands for any
// request at all: the few requests let through after a cut-off are what
// an auditor looks for, and at scale they would be thinner than a pixel.
const htmlMinBar = 2.0

func htmlF(v float64) string {
	return strings.TrimSuffix(strconv.FormatFloat(v, 'f', 1, 64), ".0")
}

// htmlShorten cuts a label to n characters, so that one long vendor or
// category name does not push the others off the chart; the bar's
// title keeps it whole.
func htmlShorten(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// htmlTextWidth estimates the width of a label at the charts' 10px font.
func htmlTextWidth(s string) float64 {
	return float64(utf8.RuneCountInString(s)) * 6.2
}

// htmlLegendFor lays out the legend along the chart's top edge: the
// three actions always, other actions only when there are any.
func htmlLegendFor(bars []htmlBarData) []htmlLegend {
	var other bool
	for _, b := range bars {
		other = other || b.Values[3] > 0
	}
	labels := [htmlSeries]string{"allow", "log", "block", "other action"}
	var l []htmlLegend
	x := 8.0
	for i, label := range labels {
		if i == 3 && !other {
			break
		}
		l = append(l, htmlLegend{Class: "s-" + htmlSeriesKey(i), Label: label, X: htmlF(x), Y: "6", TX: htmlF(x + 16), TY: "16"})
		x += 16 + htmlTextWidth(label) + 18
	}
	return l
}

// htmlColumns is a stacked column chart: one column per bar, the value
// axis upwards.
func htmlColumns(id, title, caption, axis string, bars []htmlBarData) *htmlChart {
	const width, height = 760, 330
	const left, right, top, bottom = 72.0, width - 16.0, 36.0, height - 86.0
	c := &htmlChart{ID: id, Title: title, Caption: caption, Width: width, Height: height, Legend: htmlLegendFor(bars)}
	var most int64
	for _, b := range bars {
		most = max(most, b.total())
	}
	step := htmlNiceStep(most, 5)
	topValue := (most + step - 1) / step * step
	y := func(v int64) float64 { return bottom - float64(v)/float64(topValue)*(bottom-top) }
	for v := int64(0); v <= topValue; v += step {
		c.Lines = append(c.Lines, htmlLine{"grid", htmlF(left), htmlF(y(v)), htmlF(right), htmlF(y(v))})
		c.Texts = append(c.Texts, htmlText{Class: "tick", Anchor: "end", Text: htmlTick(v), X: htmlF(left - 6), Y: htmlF(y(v) + 3.5)})
	}
	c.Lines = append(c.Lines, htmlLine{"axis", htmlF(left), htmlF(top), htmlF(left), htmlF(bottom)},
		htmlLine{"axis", htmlF(left), htmlF(bottom), htmlF(right), htmlF(bottom)})
	mid := (top + bottom) / 2
	c.Texts = append(c.Texts,
		htmlText{Class: "axis-title", Anchor: "middle", Text: "requests", X: "14", Y: htmlF(mid), Transform: "rotate(-90 14 " + htmlF(mid) + ")"},
		htmlText{Class: "axis-title", Anchor: "middle", Text: axis, X: htmlF((left + right) / 2), Y: htmlF(height - 6)})

	slot := (right - left) / float64(len(bars))
	barWidth := min(slot*0.72, 48)
	// Rotated date labels need about 13px each; with more days than fit,
	// every k-th is labelled.
	every := max(1, int(13*float64(len(bars))/(right-left))+1)
	for i, b := range bars {
		x := left + float64(i)*slot + (slot-barWidth)/2
		centre := x + barWidth/2
		bar := htmlBar{Title: b.title()}
		var sum int64
		end := bottom
		for s, v := range b.Values {
			if v == 0 {
				continue
			}
			h := max(y(sum)-y(sum+v), htmlMinBar)
			end -= h
			bar.Segs = append(bar.Segs, htmlSeg{Class: "s-" + htmlSeriesKey(s), X: htmlF(x), Y: htmlF(end), W: htmlF(barWidth), H: htmlF(h), Requests: v})
			sum += v
		}
		c.Bars = append(c.Bars, bar)
		if total := htmlCount(sum); sum > 0 && htmlTextWidth(total) <= slot {
			c.Texts = append(c.Texts, htmlText{Class: "value", Anchor: "middle", Text: total, X: htmlF(centre), Y: htmlF(end - 4)})
		}
		if i%every == 0 {
			ly := bottom + 12
			c.Texts = append(c.Texts, htmlText{Class: "tick", Anchor: "end", Text: htmlShorten(b.Label, 16), X: htmlF(centre + 3), Y: htmlF(ly), Transform: "rotate(-45 " + htmlF(centre+3) + " " + htmlF(ly) + ")"})
		}
	}
	return c
}

// htmlRows is a stacked bar chart: one row per bar, the value axis to
// the right, for labels too long to stand under a column.
func htmlRows(id, title, caption string, bars []htmlBarData) *htmlChart {
	const width, left, right, top, row, thickness = 760, 196.0, 760 - 84.0, 36.0, 24.0, 16.0
	bottom := top + row*float64(len(bars))
	height := int(bottom) + 44
	c := &htmlChart{ID: id, Title: title, Caption: caption, Width: width, Height: height, Legend: htmlLegendFor(bars)}
	var most int64
	for _, b := range bars {
		most = max(most, b.total())
	}
	step := htmlNiceStep(most, 5)
	topValue := (most + step - 1) / step * step
	x := func(v int64) float64 { return left + float64(v)/float64(topValue)*(right-left) }
	for v := int64(0); v <= topValue; v += step {
		c.Lines = append(c.Lines, htmlLine{"grid", htmlF(x(v)), htmlF(top), htmlF(x(v)), htmlF(bottom)})
		c.Texts = append(c.Texts, htmlText{Class: "tick", Anchor: "middle", Text: htmlTick(v), X: htmlF(x(v)), Y: htmlF(bottom + 14)})
	}
	c.Lines = append(c.Lines, htmlLine{"axis", htmlF(left), htmlF(top), htmlF(left), htmlF(bottom)},
		htmlLine{"axis", htmlF(left), htmlF(bottom), htmlF(right), htmlF(bottom)})
	c.Texts = append(c.Texts, htmlText{Class: "axis-title", Anchor: "middle", Text: "requests", X: htmlF((left + right) / 2), Y: htmlF(float64(height) - 6)})
	for i, b := range bars {
		y := top + float64(i)*row + (row-thickness)/2
		bar := htmlBar{Title: b.title()}
		var sum int64
		end := left
		for s, v := range b.Values {
			if v == 0 {
				continue
			}
			w := max(x(sum+v)-x(sum), htmlMinBar)
			bar.Segs = append(bar.Segs, htmlSeg{Class: "s-" + htmlSeriesKey(s), X: htmlF(end), Y: htmlF(y), W: htmlF(w), H: htmlF(thickness), Requests: v})
			end += w
			sum += v
		}
		c.Bars = append(c.Bars, bar)
		c.Texts = append(c.Texts,
			htmlText{Class: "label", Anchor: "end", Text: htmlShorten(b.Label, 30), X: htmlF(left - 8), Y: htmlF(y + thickness/2 + 3.5)},
			htmlText{Class: "value", Anchor: "start", Text: htmlCount(sum), X: htmlF(end + 4), Y: htmlF(y + thickness/2 + 3.5)})
	}
	return c
}

// htmlPageTemplate is the page. Its print rules start the major
// sections on a new page, keep boxes, figures and table rows whole, and
// repeat table headers; the statement boxes and chart fills differ in
// border and pattern as well as colour, for black-and-white printers.
const htmlPageTemplate = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="feedgate report">
<title>{{.Title}}</title>
<style>
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; font-size: 11pt; line-height: 1.4; color: #111; background: #fff; max-width: 62rem; margin: 1.5rem auto; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin: 0 0 .5rem; }
h2 { font-size: 1.3rem; border-bottom: 2px solid #111; padding-bottom: .15rem; margin-top: 2rem; }
h3 { font-size: 1.05rem; margin: 0 0 .4rem; }
code, .mono { font-family: ui-monospace, Menlo, Consolas, "Liberation Mono", monospace; font-size: .9em; overflow-wrap: anywhere; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: .5rem 0; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; }
nav ol { columns: 2; margin: .5rem 0; }
nav a { color: inherit; }
.note { color: #444; font-size: .9em; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1rem; font-size: .9em; }
th, td { border: 1px solid #999; padding: .2rem .4rem; text-align: left; vertical-align: top; overflow-wrap: anywhere; }
th { background: #eee; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tfoot td { font-weight: 600; border-top: 2px solid #111; }
.statement { border: 2px solid #111; padding: .6rem .9rem; margin: 1rem 0; }
.statement.breached { border: 6px double #111; }
.statement.uncovered { border: 2px dashed #111; }
.verdict { font-weight: 700; font-size: 1.1rem; margin: 0 0 .4rem; }
.sentence { font-size: 1.1rem; margin: .4rem 0; }
.held .verdict { color: #1d5e20; }
.breached .verdict, .failed .status { color: #8b1a1a; }
.uncovered .verdict, .unchecked .status { color: #6b4b00; }
.status { font-weight: 700; }
.box { border: 2px solid #111; padding: .5rem .9rem; margin: 1rem 0; }
.box.failed { border: 6px double #111; }
.box.unchecked { border: 2px dashed #111; }
figure { margin: 1rem 0; }
figcaption { font-size: .9em; color: #444; }
svg.chart { width: 100%; height: auto; font-family: inherit; }
svg.chart .grid { stroke: #ccc; stroke-width: 1; }
svg.chart .axis { stroke: #111; stroke-width: 1.2; }
svg.chart text { font-size: 10px; fill: #111; }
svg.chart .axis-title { font-size: 11px; font-weight: 600; }
svg.chart .value { font-size: 10px; }
svg.chart g.bar rect, svg.chart rect.legend { stroke: #111; stroke-width: .6; }
.s-allow { fill: #b9dcb0; }
.s-log { fill: url(#hatch-log); }
.s-block { fill: #6e1b1b; }
.s-other { fill: url(#dots-other); }
@page { margin: 14mm; }
@media print {
  body { max-width: none; margin: 0; padding: 0; font-size: 10pt; }
  nav { display: none; }
  .major { break-before: page; page-break-before: always; }
  h2, h3 { break-after: avoid; page-break-after: avoid; }
  .statement, .box, figure, tr { break-inside: avoid; page-break-inside: avoid; }
  thead { display: table-header-group; }
  th { background: none; }
  a { text-decoration: none; }
}
</style>
</head>
<body>
<header id="top">
<h1>{{.Title}}</h1>
<p class="note">Generated by feedgate report from the decision logs listed below. Every number is an exact count of records; every time is in {{.Timezone}}. The page holds everything it shows and can be printed to PDF as it is.</p>
<dl class="facts">
<dt>Policy</dt><dd>{{if .Policy}}<code>{{.Policy}}</code>{{else}}not named{{end}}</dd>
<dt>Time zone</dt><dd>{{.Timezone}}</dd>
<dt>Period</dt><dd>{{.Period}}</dd>
<dt>Records</dt><dd>{{n .Records}} in the period{{if not .Records}} — there are no records to report on{{end}}</dd>
<dt>Skipped</dt><dd>{{n .Skipped}} outside the period</dd>
<dt>Malformed lines</dt><dd>{{n .Malformed.Count}}{{if .Malformed.Count}} (<a href="#malformed">listed below</a>){{end}}</dd>
<dt>Verification</dt><dd><a href="#verification">{{.Verify.Status}}</a></dd>
</dl>
{{if .Inputs}}<table>
<caption class="note">Inputs</caption>
<thead><tr><th>Input</th><th>Format</th><th class="n">Lines</th><th class="n">Records</th><th>Instances</th></tr></thead>
<tbody>
{{range .Inputs}}<tr><td class="mono">{{.Name}}</td><td>{{.Format}}</td><td class="n">{{n .Lines}}</td><td class="n">{{n .Records}}</td><td>{{.Instances}}</td></tr>
{{end}}</tbody>
</table>
{{else}}<p>No input was read.</p>
{{end}}<nav>
<ol>
<li><a href="#statements">Compliance statements</a></li>
<li><a href="#verification">Verification</a></li>
<li><a href="#charts">Charts</a></li>
<li><a href="#days">Requests per day</a></li>
<li><a href="#clients">Clients still contacting a vendor</a></li>
<li><a href="#hosts">Vendor hosts</a></li>
<li><a href="#signature-hosts">Signature hosts</a></li>
<li><a href="#malformed">Malformed lines</a></li>
</ol>
</nav>
</header>
<main>
<section id="statements">
<h2>Compliance statements</h2>
{{range .Cutoffs}}<div class="statement {{.Class}}">
<h3>{{.Vendor}}: {{.Categories}} — cut-off {{when .At}}</h3>
<p class="verdict">{{.Verdict}}</p>
<p class="sentence">{{.Statement}}</p>
<dl class="facts">
<dt>Rule</dt><dd><code>{{.Rule}}</code>{{if .Reason}}: {{.Reason}}{{end}}</dd>
<dt>Vendor requests at or after the cut-off</dt><dd>{{n .Requests}}</dd>
<dt>Blocked</dt><dd>{{n .Blocked}}</dd>
<dt>Let through (allowed or logged)</dt><dd>{{n .Allowed}}</dd>
<dt>Records reach past the cut-off</dt><dd>{{if .Covered}}yes{{else}}no: the records end before the cut-off, so this statement says nothing about what happened after it{{end}}</dd>
<dt>Evidence</dt><dd><a href="#verification">{{.Evidence}}</a></dd>
</dl>
{{if .AllowedBy}}<table>
<caption class="note">The rules that let requests through after the cut-off</caption>
<thead><tr><th>Rule</th><th class="n">Requests</th></tr></thead>
<tbody>
{{range .AllowedBy}}<tr><td><code>{{.Rule}}</code></td><td class="n">{{n .Requests}}</td></tr>
{{end}}</tbody>
</table>
{{end}}</div>
{{else}}<p>The policy has no cut-off (no rule whose window opens with a block), so there is no compliance statement to make.</p>
{{end}}</section>

<section id="verification" class="major">
<h2>Verification</h2>
<div class="box {{.Verify.Class}}">
<p class="status">{{.Verify.Status}}</p>
{{with .Verify.Problem}}<p>First problem: <code>{{.}}</code></p>
{{end}}</div>
{{if .Verify.Chains}}<table>
<caption class="note">Each instance's chain and its last signed tree head</caption>
<thead><tr><th>Instance</th><th class="n">Records</th><th class="n">Signed</th><th>Signed at</th><th>Root hash</th><th>Last checkpoint</th></tr></thead>
<tbody>
{{range .Verify.Chains}}<tr><td>{{.Instance}}</td><td class="n">{{n .Records}}</td><td class="n">{{n .Signed}}{{if .Unsigned}}<br>({{n .Unsigned}} unsigned after the last checkpoint){{end}}</td><td>{{when .SignedAt}}</td><td class="mono">{{.Root}}</td><td class="mono">{{.Where}}</td></tr>
{{end}}</tbody>
</table>
{{else if .Verify.Checked}}<p>No feedgate evidence chain was found in the inputs.</p>
{{end}}{{if .Verify.Unverified}}<h3>Unverified inputs</h3>
<ul>
{{range .Verify.Unverified}}<li><code>{{.Name}}</code>: {{.Why}}</li>
{{end}}</ul>
{{end}}</section>

<section id="charts" class="major">
<h2>Charts</h2>
{{with .DayChart}}{{template "chart" .}}{{else}}<p>No vendor requests in the period: there is nothing to chart per day.</p>
{{end}}{{with .ClassChart}}{{template "chart" .}}{{else}}<p>No vendor requests in the period: there is nothing to chart per category.</p>
{{end}}</section>

<section id="days" class="major">
<h2>Requests per day</h2>
{{if .Days}}<table>
<thead><tr><th>Day</th><th>Vendor</th><th>Category</th><th>Action</th><th class="n">Requests</th><th class="n">Bytes sent</th><th class="n">Bytes received</th></tr></thead>
<tbody>
{{range .Days}}<tr><td>{{.Date}}</td><td>{{.Vendor}}</td><td>{{.Category}}</td><td>{{.Action}}</td><td class="n">{{n .Requests}}</td><td class="n">{{n .BytesSent}}</td><td class="n">{{n .BytesReceived}}</td></tr>
{{end}}</tbody>
<tfoot><tr><td colspan="4">Total</td><td class="n">{{n .DaysTotal.Requests}}</td><td class="n">{{n .DaysTotal.BytesSent}}</td><td class="n">{{n .DaysTotal.BytesReceived}}</td></tr></tfoot>
</table>
{{else}}<p>No records in the period.</p>
{{end}}</section>

<section id="clients" class="major">
<h2>Clients still contacting a vendor</h2>
{{if .Clients}}<p class="note">One row per client, vendor and category, the most recently seen first.</p>
<table>
<thead><tr><th>Client</th><th>Vendor</th><th>Category</th><th>First seen</th><th>Last seen</th><th class="n">Requests</th><th>Last action</th><th>Last rule</th></tr></thead>
<tbody>
{{range .Clients}}<tr><td class="mono">{{.Client}}</td><td>{{.Vendor}}</td><td>{{.Category}}</td><td>{{when .FirstSeen}}</td><td>{{when .LastSeen}}</td><td class="n">{{n .Requests}}</td><td>{{.LastAction}}</td><td><code>{{.LastRule}}</code></td></tr>
{{end}}</tbody>
</table>
{{else}}<p>No client contacted a vendor in the period.</p>
{{end}}</section>

<section id="hosts" class="major">
<h2>Vendor hosts</h2>
{{if .Hosts}}<p class="note">The vendor hosts with the most requests.</p>
<table>
<thead><tr><th>Host</th><th>Vendor</th><th>Category</th><th class="n">Requests</th><th class="n">Let through</th><th class="n">Clients</th></tr></thead>
<tbody>
{{range .Hosts}}<tr><td class="mono">{{.Host}}</td><td>{{.Vendor}}</td><td>{{.Category}}</td><td class="n">{{n .Requests}}</td><td class="n">{{n .Allowed}}</td><td class="n">{{n .Clients}}</td></tr>
{{end}}</tbody>
</table>
{{else}}<p>No vendor host was asked for in the period.</p>
{{end}}</section>

<section id="signature-hosts">
<h2>Signature hosts</h2>
{{if .SignatureHosts}}<p class="note">Hosts that are not the vendor's on which a catalog signature recognised vendor traffic (mirrors, caches), all of them.</p>
<table>
<thead><tr><th>Host</th><th>Vendor</th><th>Category</th><th>Signature</th><th class="n">Requests</th><th class="n">Let through</th><th class="n">Clients</th></tr></thead>
<tbody>
{{range .SignatureHosts}}<tr><td class="mono">{{.Host}}</td><td>{{.Vendor}}</td><td>{{.Category}}</td><td><code>{{.Signature}}</code></td><td class="n">{{n .Requests}}</td><td class="n">{{n .Allowed}}</td><td class="n">{{n .Clients}}</td></tr>
{{end}}</tbody>
</table>
{{else}}<p>No signature recognised vendor traffic on a host that is not the vendor's.</p>
{{end}}</section>

<section id="malformed">
<h2>Malformed lines</h2>
{{if .Malformed.Count}}<p>{{n .Malformed.Count}} lines were neither a record nor a checkpoint; they are counted here and left out of every other number.</p>
<ul>
{{range .Malformed.First}}<li><code>{{.}}</code></li>
{{end}}{{if .MalformedMore}}<li>and {{n .MalformedMore}} more</li>
{{end}}</ul>
{{else}}<p>No malformed lines.</p>
{{end}}</section>
</main>
</body>
</html>
{{define "chart"}}<figure id="{{.ID}}">
<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {{.Width}} {{.Height}}" width="{{.Width}}" height="{{.Height}}" role="img" aria-labelledby="{{.ID}}-title">
<title id="{{.ID}}-title">{{.Title}}</title>
{{if .Defs}}<defs>
<pattern id="hatch-log" patternUnits="userSpaceOnUse" width="6" height="6" patternTransform="rotate(45)"><rect width="6" height="6" fill="#f3e2a9" stroke="none"></rect><line x1="0" y1="0" x2="0" y2="6" stroke="#111" stroke-width="2"></line></pattern>
<pattern id="dots-other" patternUnits="userSpaceOnUse" width="5" height="5"><rect width="5" height="5" fill="#fff" stroke="none"></rect><circle cx="2.5" cy="2.5" r="1.2" fill="#111"></circle></pattern>
</defs>
{{end}}{{range .Legend}}<rect class="legend {{.Class}}" x="{{.X}}" y="{{.Y}}" width="12" height="12"></rect><text x="{{.TX}}" y="{{.TY}}">{{.Label}}</text>
{{end}}{{range .Lines}}<line class="{{.Class}}" x1="{{.X1}}" y1="{{.Y1}}" x2="{{.X2}}" y2="{{.Y2}}"></line>
{{end}}{{range .Bars}}<g class="bar"><title>{{.Title}}</title>{{range .Segs}}<rect class="{{.Class}}" x="{{.X}}" y="{{.Y}}" width="{{.W}}" height="{{.H}}" data-requests="{{.Requests}}"></rect>{{end}}</g>
{{end}}{{range .Texts}}<text class="{{.Class}}" x="{{.X}}" y="{{.Y}}" text-anchor="{{.Anchor}}"{{if .Transform}} transform="{{.Transform}}"{{end}}>{{.Text}}</text>
{{end}}</svg>
<figcaption><strong>{{.Title}}.</strong> {{.Caption}}</figcaption>
</figure>
{{end}}`
