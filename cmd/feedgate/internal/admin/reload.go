package admin

import (
	"io"
	"net/http"
)

// reloadHandler is POST /-/reload on the admin listener, enabled by
// -admin.enable-reload as Prometheus's lifecycle API is.
func reloadHandler(reload func(trigger string) error, enabled bool) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		if !enabled {
			http.Error(w, "reload over HTTP is not enabled: start feedgate with -admin.enable-reload, or send SIGHUP", http.StatusForbidden)
			return
		}
		if err := reload("http"); err != nil {
			http.Error(w, "reload failed; the running policy stays in force:\n"+err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "policy reloaded\n")
	}
}
