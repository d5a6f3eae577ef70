//go:build !linux

package main

import "time"

// precisePacer is time.Sleep outside Linux, where requests may leave up to
// a millisecond late and the fixed-rate latencies include that.
func precisePacer() func(time.Time) {
	return func(t time.Time) { time.Sleep(time.Until(t)) }
}
