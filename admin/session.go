package admin

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Console sessions. Signing in with a token sets a cookie that names the
// token and an expiry, signed (HMAC-SHA256) with the session key over
// those and the token's current secret: a session ends when it expires,
// when its token is removed or rotated, or on sign-out; it works on any
// instance that shares the session key (with state.dsn the key is in the
// control database). Every change made with a session cookie must carry
// the session's CSRF token in X-CSRF-Token, and a cross-origin Origin is
// refused; the cookie itself is HttpOnly, SameSite=Strict, and Secure
// when the request came over TLS.

const (
	sessionCookie = "pgmoat_session"
	csrfHeader    = "X-CSRF-Token"
	// maxLoginBody bounds the sign-in body: a token and some JSON.
	maxLoginBody = 4 << 10
)

// session is a verified console session.
type session struct {
	identity
	nonce   string
	expires time.Time
}

func (s *Server) sessionMAC(name, expires, nonce string, sum [sha256.Size]byte) []byte {
	m := hmac.New(sha256.New, s.sessionKey)
	fmt.Fprintf(m, "session|%s|%s|%s|%x", name, expires, nonce, sum)
	return m.Sum(nil)
}

func (s *Server) csrfToken(nonce string) string {
	m := hmac.New(sha256.New, s.sessionKey)
	m.Write([]byte("csrf|" + nonce))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// newSession returns the cookie value for a session of t.
func (s *Server) newSession(t token, now time.Time) (value string, ses session) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	nonce := hex.EncodeToString(b[:])
	exp := now.Add(s.sessionTTL).Truncate(time.Second)
	es := strconv.FormatInt(exp.Unix(), 10)
	mac := s.sessionMAC(t.name, es, nonce, t.sum)
	value = strings.Join([]string{url.PathEscape(t.name), es, nonce, base64.RawURLEncoding.EncodeToString(mac)}, ".")
	return value, session{identity: t.identity, nonce: nonce, expires: exp}
}

// verifySession checks a cookie value against the tokens in force.
func (s *Server) verifySession(value string, now time.Time) (session, bool) {
	parts := strings.Split(value, ".")
	if len(parts) != 4 {
		return session{}, false
	}
	name, err := url.PathUnescape(parts[0])
	if err != nil {
		return session{}, false
	}
	unix, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return session{}, false
	}
	exp := time.Unix(unix, 0)
	if !now.Before(exp) {
		return session{}, false
	}
	mac, err := base64.RawURLEncoding.DecodeString(parts[3])
	if err != nil {
		return session{}, false
	}
	for _, t := range *s.tokens.Load() {
		if t.name == name && hmac.Equal(mac, s.sessionMAC(name, parts[1], parts[2], t.sum)) {
			return session{identity: t.identity, nonce: parts[2], expires: exp}, true
		}
	}
	return session{}, false
}

// sessionOf returns the request's valid session, if it has one.
func (s *Server) sessionOf(r *http.Request) (session, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return session{}, false
	}
	return s.verifySession(c.Value, time.Now())
}

// sameOrigin reports whether r's Origin (or, without one, Referer) is this
// server. Browsers send Origin with every POST; a missing one passes, as
// SameSite=Strict and the CSRF token already stand in the way.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		o = r.Header.Get("Referer")
	}
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}

func setSessionCookie(w http.ResponseWriter, r *http.Request, value string, expires time.Time) {
	c := &http.Cookie{
		Name:     sessionCookie,
		Value:    value,
		Path:     "/",
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteStrictMode,
	}
	if value == "" {
		c.MaxAge = -1
	} else {
		c.Expires = expires
	}
	http.SetCookie(w, c)
}

// SessionInfo is the body of GET /api/v1/session and of a sign-in.
type SessionInfo struct {
	Name string `json:"name"`
	Role string `json:"role"`
	// CSRF is the token to send in X-CSRF-Token with every change made
	// with the session cookie; empty for bearer-token requests.
	CSRF      string    `json:"csrf,omitempty"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// Instance is the instance that answered (with state.dsn); Shared
	// says whether holds are shared with other instances.
	Instance string `json:"instance,omitempty"`
	Shared   bool   `json:"shared"`
}

// LoginBody is the body of POST /ui/login.
type LoginBody struct {
	Token string `json:"token"`
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		s.deny(w, r, http.StatusForbidden, "cross-origin sign-in refused", "")
		return
	}
	var body LoginBody
	if !decodeBody(w, r, maxLoginBody, &body) {
		return
	}
	toks := *s.tokens.Load()
	if len(toks) == 0 {
		s.deny(w, r, http.StatusUnauthorized, "no admin tokens are configured (admin.tokens): the console is disabled", "")
		return
	}
	who, ok := lookup(toks, strings.TrimSpace(body.Token))
	if !ok {
		s.deny(w, r, http.StatusUnauthorized, "unknown token", "")
		return
	}
	var t token
	for _, c := range toks {
		if c.name == who.name {
			t = c
		}
	}
	value, ses := s.newSession(t, time.Now())
	setSessionCookie(w, r, value, ses.expires)
	s.log.Info("console: signed in", "token", who.name, "role", who.role, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, s.sessionInfo(who, ses.nonce, ses.expires))
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, who identity) {
	setSessionCookie(w, r, "", time.Time{})
	s.log.Info("console: signed out", "token", who.name, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]string{"status": "signed out"})
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request, who identity) {
	nonce, exp := "", time.Time{}
	if ses, ok := s.sessionOf(r); ok && ses.name == who.name {
		nonce, exp = ses.nonce, ses.expires
	}
	writeJSON(w, http.StatusOK, s.sessionInfo(who, nonce, exp))
}

func (s *Server) sessionInfo(who identity, nonce string, exp time.Time) SessionInfo {
	info := SessionInfo{Name: who.name, Role: who.role, ExpiresAt: exp, Instance: s.store.Instance(), Shared: s.store.Instance() != ""}
	if nonce != "" {
		info.CSRF = s.csrfToken(nonce)
	}
	return info
}
