package admin

import "net/http"

// contentSecurityPolicy lets a page load scripts, styles, images and data
// from the admin listener only: no inline script or style, no form that
// posts elsewhere, and no framing (clickjacking of the reload button).
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// secure sets strict security headers on every response of h, errors and
// 404s included, before h writes anything. They replace those of the same
// name that -web.config.file's http_server_config.headers set; the
// toolkit's own answers (401, 429, 500) never reach h and carry only the
// web config's.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", contentSecurityPolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}
