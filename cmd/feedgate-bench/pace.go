package main

import (
	"sync/atomic"
	"time"
)

// dueBacklog bounds the requests that may wait for one connection of a
// fixed-rate load: 1,024 is about 11 s at the default rate's 92 requests/s
// per connection, longer than any round. Beyond it a request is not sent
// and counts as an error, so that the pacer never blocks on one stalled
// connection and delays the others.
const dueBacklog = 1024

// pace releases the requests of a fixed-rate load at their due times. The
// k-th request of the run is due at start + k/rate and goes to connection
// k mod len(conns); so each connection's requests are 1/rate × len(conns)
// apart and the connections are spread evenly over that interval. pace
// sleeps with sleepUntil until each due time and stops, closing every
// channel, once stop is set. A request that finds its connection's
// backlog full is dropped and counted in dropped.
func pace(start time.Time, rate float64, conns []chan time.Time, stop *atomic.Bool, dropped *atomic.Int64, sleepUntil func(time.Time)) {
	defer func() {
		for _, c := range conns {
			close(c)
		}
	}()
	for k := 0; !stop.Load(); k++ {
		due := start.Add(time.Duration(float64(k) * float64(time.Second) / rate))
		sleepUntil(due)
		select {
		case conns[k%len(conns)] <- due:
		default:
			dropped.Add(1)
		}
	}
}
