package main

import (
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// TestPace checks the fixed-rate schedule without a clock: the k-th
// request is due at start + k/rate, without drift when 1/rate is not a
// whole number of nanoseconds, and goes to connection k mod n in order; a
// full backlog drops the request instead of blocking the pacer; stop ends
// it and closes every connection's channel.
func TestPace(t *testing.T) {
	start := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	ms := func(n ...int) []time.Time {
		var ts []time.Time
		for _, v := range n {
			ts = append(ts, start.Add(time.Duration(v)*time.Millisecond))
		}
		return ts
	}
	for _, tc := range []struct {
		name        string
		rate        float64
		conns, cap  int
		requests    int // sleeps before stop is set
		want        [][]time.Time
		wantDropped int64
	}{
		{
			name: "round robin, full backlogs drop", rate: 1000, conns: 3, cap: 2, requests: 8,
			// Connection 0 is due 0, 3 and 6 ms; its backlog of two
			// drops the third, and connection 1's drops 7 ms.
			want:        [][]time.Time{ms(0, 3), ms(1, 4), ms(2, 5)},
			wantDropped: 2,
		},
		{
			name: "no drift at a third of a second", rate: 3, conns: 1, cap: 8, requests: 7,
			want: [][]time.Time{{
				start, start.Add(333333333), start.Add(666666666),
				start.Add(time.Second), start.Add(1333333333), start.Add(1666666666),
				start.Add(2 * time.Second),
			}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conns := make([]chan time.Time, tc.conns)
			for i := range conns {
				conns[i] = make(chan time.Time, tc.cap)
			}
			var stop atomic.Bool
			var dropped atomic.Int64
			var slept []time.Time
			sleep := func(due time.Time) {
				slept = append(slept, due)
				if len(slept) == tc.requests {
					stop.Store(true)
				}
			}
			pace(start, tc.rate, conns, &stop, &dropped, sleep)

			var all []time.Time
			for i, c := range conns {
				var got []time.Time
				for due := range c { // ends only if pace closed c
					got = append(got, due)
				}
				if !slices.Equal(got, tc.want[i]) {
					t.Errorf("connection %d: due %v; want %v", i, got, tc.want[i])
				}
				all = append(all, got...)
			}
			// pace slept until each request's due time, in order,
			// whether or not its connection had room for it.
			if len(slept) != tc.requests || !slices.IsSortedFunc(slept, time.Time.Compare) {
				t.Errorf("slept until %v; want %d due times in order", slept, tc.requests)
			}
			for _, due := range all {
				if !slices.Contains(slept, due) {
					t.Errorf("request due %v was released without sleeping until then", due)
				}
			}
			if dropped.Load() != tc.wantDropped {
				t.Errorf("dropped %d; want %d", dropped.Load(), tc.wantDropped)
			}
		})
	}
}
