// Package admin owns pgmoat's admin HTTP listener (admin.listen, over TLS
// with admin.tls): the API, the web console (/ui/) and the Go client the
// CLI uses to talk to it.
//
// Endpoints, and who may call them:
//
//	GET    /healthz                        anyone   200 "ok" while the process runs
//	GET    /readyz                         anyone   200, or 503 with the reason (upstream unreachable, …)
//	GET    /metrics                        anyone   Prometheus exposition of pgmoat's registry
//	GET    /api/v1/holds[?status=pending]  viewer   holds, pending and recently ended
//	GET    /api/v1/holds/{id}              viewer
//	POST   /api/v1/holds/{id}/approve      approver {"reason": "…"} (required)
//	POST   /api/v1/holds/{id}/deny         approver {"reason": "…"} (required)
//	GET    /api/v1/preapprovals            viewer
//	POST   /api/v1/preapprovals            approver {"sql", "ttl", "reason", "database", "user"}
//	GET    /api/v1/preapprovals/{id}       viewer
//	DELETE /api/v1/preapprovals/{id}       approver revoke (also POST …/{id}/revoke)
//	POST   /api/v1/reload                  approver reload the configuration file
//	GET    /api/v1/session                 viewer   who the token or session is; the session's CSRF token
//	GET    /api/v1/events                  viewer   server-sent events: every change to holds and pre-approvals
//	GET    /api/v1/audit[?kind=&q=&limit=] viewer   recent decisions from this instance's audit log
//	GET    /ui/                            anyone   the console (static files; it signs in with a token)
//	POST   /ui/login                       anyone   {"token": "…"} → session cookie
//	POST   /ui/logout                      viewer   ends the session cookie
//
// The health and metrics endpoints need no token so that probes and
// Prometheus can reach them; they reveal no statement text. Everything
// under /api/ takes "Authorization: Bearer <token>" for a token listed in
// admin.tokens; an approver token may do everything a viewer token may.
// The approver recorded for an approval is the token's name, never
// anything in the request body. The console signs in with a token once
// and then uses a session cookie (see session.go): HttpOnly,
// SameSite=Strict, Secure over TLS, signed with a key shared by every
// instance of a control database; every change made with it carries a CSRF
// token. With no tokens configured the API answers 401 to everything. Errors are JSON {"error": "…"}: 400 bad request body
// or missing reason, 401 missing or unknown token, 403 viewer token on an
// approver endpoint, 404, 405, 409 hold already ended or approver
// approving twice, 503 the audit log refused the change.
package admin
