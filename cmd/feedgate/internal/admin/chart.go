package admin

import (
	"fmt"
	"time"

	"github.com/feedgate/feedgate/proxy/activity"
)

// Chart geometry, in SVG user units: the figure scales to its panel.
const (
	chartWidth  = 600
	chartHeight = 150
	chartBase   = 130 // the x axis; tick labels go below it
	chartTop    = 6
)

// chart is a stacked bar chart of a traffic window, drawn as inline SVG by
// the template: the geometry is computed here so that the template only
// places rectangles.
type chart struct {
	activity.Traffic
	Caption, StepName   string
	Width, Height, Base int
	Max                 uint64
	Summary             string
	Bars                []bar
	Labels              []tick
}

type bar struct {
	Title string
	Segs  []seg
}

type seg struct {
	Class string
	X, W  int
	Y, H  float64
}

type tick struct {
	X, Y   int
	Anchor string
	Text   string
}

// newChart lays out tr's buckets as bars, blocked at the bottom where it
// stays visible, and labels every labelEvery-th bucket with label.
func newChart(caption, stepName string, tr activity.Traffic, label func(time.Time) string, labelEvery int) chart {
	c := chart{Traffic: tr, Caption: caption, StepName: stepName, Width: chartWidth, Height: chartHeight, Base: chartBase}
	var sum [4]uint64
	for _, b := range tr.Buckets {
		c.Max = max(c.Max, b.Blocked+b.Flagged+b.Rejected+b.Allowed)
		sum[0] += b.Blocked
		sum[1] += b.Flagged
		sum[2] += b.Rejected
		sum[3] += b.Allowed
	}
	c.Summary = fmt.Sprintf("%d blocked, %d flagged, %d rejected, %d allowed", sum[0], sum[1], sum[2], sum[3])
	n := len(tr.Buckets)
	if n == 0 {
		return c
	}
	slot := chartWidth / n
	w := max(slot-1, 1)
	scale := 0.0
	if c.Max > 0 {
		scale = float64(chartBase-chartTop) / float64(c.Max)
	}
	for i, b := range tr.Buckets {
		x := i * slot
		bb := bar{Title: fmt.Sprintf("%s: %d blocked, %d flagged, %d rejected, %d allowed",
			label(b.Start), b.Blocked, b.Flagged, b.Rejected, b.Allowed)}
		y := float64(chartBase)
		for _, part := range []struct {
			class string
			n     uint64
		}{{"block", b.Blocked}, {"log", b.Flagged}, {"rejected", b.Rejected}, {"allow", b.Allowed}} {
			if part.n == 0 {
				continue
			}
			// A single request must still show: at least one unit high.
			h := max(float64(part.n)*scale, 1)
			y -= h
			bb.Segs = append(bb.Segs, seg{Class: part.class, X: x, Y: y, W: w, H: h})
		}
		c.Bars = append(c.Bars, bb)
		if i%labelEvery == 0 {
			c.Labels = append(c.Labels, tick{X: x, Y: chartHeight - 4, Anchor: "start", Text: label(b.Start)})
		}
	}
	c.Labels = append(c.Labels, tick{X: chartWidth, Y: chartHeight - 4, Anchor: "end", Text: "now"})
	return c
}
