package admin

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/pgmoat/pgmoat/config"
)

// MinTokenLength is the shortest secret accepted: admin tokens release
// destructive statements, so they must not be guessable.
const MinTokenLength = 16

// identity is who a request's token says it comes from.
type identity struct {
	name string
	role string
}

type token struct {
	identity
	sum [sha256.Size]byte
}

// loadTokens reads every token's secret from its environment variable or
// file, trimming surrounding whitespace. Errors are *config.Error values
// naming the token's key.
func loadTokens(cfg config.Admin) ([]token, error) {
	toks := make([]token, 0, len(cfg.Tokens))
	seen := map[[sha256.Size]byte]string{}
	for i, t := range cfg.Tokens {
		var secret, key, from string
		if t.TokenEnv != "" {
			key = fmt.Sprintf("admin.tokens[%d].token_env", i)
			from = "environment variable " + t.TokenEnv
			secret = os.Getenv(t.TokenEnv)
		} else {
			key = fmt.Sprintf("admin.tokens[%d].token_file", i)
			from = "file " + t.TokenFile
			b, err := os.ReadFile(t.TokenFile)
			if err != nil {
				return nil, &config.Error{Key: key, Err: fmt.Errorf("token %q: %w", t.Name, err)}
			}
			secret = string(b)
		}
		secret = strings.TrimSpace(secret)
		switch {
		case secret == "":
			return nil, &config.Error{Key: key, Err: fmt.Errorf("token %q: %s is empty or unset", t.Name, from)}
		case len(secret) < MinTokenLength:
			return nil, &config.Error{Key: key, Err: fmt.Errorf("token %q: the secret in %s is %d characters; use at least %d (e.g. openssl rand -hex 32)",
				t.Name, from, len(secret), MinTokenLength)}
		}
		sum := sha256.Sum256([]byte(secret))
		if other, dup := seen[sum]; dup {
			return nil, &config.Error{Key: key, Err: fmt.Errorf("token %q has the same secret as token %q: each token must identify one approver", t.Name, other)}
		}
		seen[sum] = t.Name
		toks = append(toks, token{identity: identity{name: t.Name, role: t.Role}, sum: sum})
	}
	return toks, nil
}

// CheckTokens reads every token's secret as New and SetConfig do, and
// returns the error they would; `pgmoat config check --secrets` uses it.
func CheckTokens(cfg config.Admin) error {
	_, err := loadTokens(cfg)
	return err
}

// lookup finds the token whose secret is presented. It compares against
// every token in constant time, so neither the match nor its position
// shows in the response time.
func lookup(toks []token, presented string) (identity, bool) {
	sum := sha256.Sum256([]byte(presented))
	var found identity
	ok := 0
	for _, t := range toks {
		eq := subtle.ConstantTimeCompare(sum[:], t.sum[:])
		if eq == 1 {
			found = t.identity
		}
		ok |= eq
	}
	return found, ok == 1
}

// bearer returns the token of an "Authorization: Bearer …" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// authHandler is an API handler that knows who called it.
type authHandler func(w http.ResponseWriter, r *http.Request, who identity)

// auth wraps h so that it runs only for a known token with role (approver
// tokens may also do what viewer tokens may), presented as a bearer token
// or through a console session cookie. A change (any method but GET and
// HEAD) made with a session cookie also needs the session's CSRF token
// and a same-origin request.
func (s *Server) auth(role string, h authHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		toks := *s.tokens.Load()
		presented, ok := bearer(r)
		var who identity
		switch {
		case len(toks) == 0:
			w.Header().Set("WWW-Authenticate", `Bearer realm="pgmoat"`)
			s.deny(w, r, http.StatusUnauthorized, "no admin API tokens are configured (admin.tokens): the API is disabled", "")
			return
		case ok:
			if who, ok = lookup(toks, presented); !ok {
				w.Header().Set("WWW-Authenticate", `Bearer realm="pgmoat", error="invalid_token"`)
				s.deny(w, r, http.StatusUnauthorized, "invalid token", "")
				return
			}
		default:
			ses, found := s.sessionOf(r)
			if !found {
				w.Header().Set("WWW-Authenticate", `Bearer realm="pgmoat"`)
				msg := "missing bearer token: send Authorization: Bearer <token>"
				if _, err := r.Cookie(sessionCookie); err == nil {
					msg = "the console session has expired or its token changed: sign in again"
				}
				s.deny(w, r, http.StatusUnauthorized, msg, "")
				return
			}
			who = ses.identity
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				if !sameOrigin(r) {
					s.deny(w, r, http.StatusForbidden, "cross-origin request refused", who.name)
					return
				}
				if !hmac.Equal([]byte(r.Header.Get(csrfHeader)), []byte(s.csrfToken(ses.nonce))) {
					s.deny(w, r, http.StatusForbidden, "missing or wrong CSRF token (X-CSRF-Token): reload the console", who.name)
					return
				}
			}
		}
		if role == config.RoleApprover && who.role != config.RoleApprover {
			s.deny(w, r, http.StatusForbidden,
				fmt.Sprintf("token %q has role %s; this needs an approver token", who.name, who.role), who.name)
			return
		}
		h(w, r, who)
	})
}

func (s *Server) deny(w http.ResponseWriter, r *http.Request, status int, msg, name string) {
	s.log.Warn("admin API request refused", "method", r.Method, "path", r.URL.Path,
		"remote", r.RemoteAddr, "status", status, "token", name, "why", msg)
	writeError(w, status, msg)
}
