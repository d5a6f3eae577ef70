package accesslog_test

import (
	"errors"
	"reflect"
	"sync"
	"testing"

	"github.com/feedgate/feedgate/proxy/accesslog"
)

// collect is a sink that keeps the hosts of the records it gets, and
// fails with err if it is set.
type collect struct {
	mu    sync.Mutex
	hosts []string
	err   error
}

func (c *collect) Write(r *accesslog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hosts = append(c.hosts, r.Host)
	return c.err
}

func TestTee(t *testing.T) {
	errA, errB := errors.New("sink a failed"), errors.New("sink b failed")
	for _, tc := range []struct {
		name     string
		failures []error // one sink per element; nil: a sink that succeeds
		nils     int     // nil sinks passed before them
		want     []error
	}{
		{"no sinks", nil, 0, nil},
		{"only nil sinks", nil, 2, nil},
		{"one sink", []error{nil}, 0, nil},
		{"one sink among nil ones", []error{nil}, 2, nil},
		{"one failing sink", []error{errA}, 1, []error{errA}},
		{"all succeed", []error{nil, nil, nil}, 0, nil},
		{"a failure does not stop the others", []error{errA, nil, nil}, 0, []error{errA}},
		{"failures are joined", []error{errA, nil, errB}, 1, []error{errA, errB}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sinks []accesslog.Sink
			for range tc.nils {
				sinks = append(sinks, nil)
			}
			var cs []*collect
			for _, err := range tc.failures {
				c := &collect{err: err}
				cs = append(cs, c)
				sinks = append(sinks, c, nil)
			}
			s := accesslog.Tee(sinks...)
			for _, host := range []string{"a.example", "b.example"} {
				err := s.Write(&accesslog.Record{Host: host})
				for _, w := range tc.want {
					if !errors.Is(err, w) {
						t.Errorf("Write error %v; want it to wrap %v", err, w)
					}
				}
				if tc.want == nil && err != nil {
					t.Errorf("Write error %v; want nil", err)
				}
			}
			for i, c := range cs {
				if want := []string{"a.example", "b.example"}; !reflect.DeepEqual(c.hosts, want) {
					t.Errorf("sink %d got %v; want %v", i, c.hosts, want)
				}
			}
		})
	}
}

func TestTeeAllocs(t *testing.T) {
	s := accesslog.Tee(accesslog.Discard{}, nil, accesslog.Discard{})
	r := &accesslog.Record{Host: "a.example"}
	if n := testing.AllocsPerRun(1000, func() { s.Write(r) }); n != 0 {
		t.Errorf("%v allocations per Write; want 0", n)
	}
}
