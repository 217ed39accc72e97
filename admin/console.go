package admin

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

// ui holds the console: plain HTML, CSS and JavaScript, no build step and
// nothing fetched from elsewhere, so it works offline and its
// Content-Security-Policy can forbid everything but this origin.
//
//go:embed ui
var ui embed.FS

// consolePolicy allows the console's own files and API calls, nothing
// inline and nothing from elsewhere.
const consolePolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

var consoleTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
}

// console serves GET /ui/ and the console's files.
func (s *Server) console(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/ui/")
	if name == "" {
		name = "index.html"
	}
	if strings.Contains(name, "/") || strings.HasPrefix(name, ".") {
		http.NotFound(w, r)
		return
	}
	data, err := fs.ReadFile(ui, "ui/"+name)
	ctype, known := consoleTypes[path.Ext(name)]
	if err != nil || !known {
		writeError(w, http.StatusNotFound, "no such console file: "+name)
		return
	}
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("Content-Security-Policy", consolePolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	if r.TLS != nil {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	_, _ = w.Write(data)
}

func redirectToConsole(w http.ResponseWriter, r *http.Request) {
	http.Redirect(w, r, "/ui/", http.StatusFound)
}
