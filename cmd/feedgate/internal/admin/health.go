package admin

import (
	"io"
	"net/http"
)

// healthz is GET /healthz: the process is up and its admin listener
// answers.
func healthz(w http.ResponseWriter, _ *http.Request) {
	_, _ = io.WriteString(w, "ok\n")
}

// readyz is GET /readyz: 200 while the proxy serves, 503 before it does
// and from the start of shutdown.
func readyz(ready func() bool) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready\n", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	}
}
