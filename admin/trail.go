package admin

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pgmoat/pgmoat/audit"
)

// Audit trail limits: how far back in the file the console looks, and how
// many events one answer holds.
const (
	trailWindow   = 16 << 20
	trailDefault  = 200
	trailMaxLimit = 2000
)

// TrailEvent is one audit event as GET /api/v1/audit returns it.
type TrailEvent struct {
	Time           time.Time `json:"time"`
	Event          string    `json:"event"`
	Instance       string    `json:"instance,omitempty"`
	SessionID      string    `json:"session_id,omitempty"`
	User           string    `json:"user,omitempty"`
	Database       string    `json:"database,omitempty"`
	Application    string    `json:"application,omitempty"`
	Client         string    `json:"client,omitempty"`
	Statement      string    `json:"statement,omitempty"`
	Decision       string    `json:"decision,omitempty"`
	Rule           string    `json:"rule,omitempty"`
	Reason         string    `json:"reason,omitempty"`
	HoldID         string    `json:"hold_id,omitempty"`
	PreapprovalID  string    `json:"preapproval_id,omitempty"`
	BlastRadius    string    `json:"blast_radius,omitempty"`
	Approvers      []string  `json:"approvers,omitempty"`
	ApprovalReason string    `json:"approval_reason,omitempty"`
	Error          string    `json:"error,omitempty"`
}

// TrailList is the body of GET /api/v1/audit.
type TrailList struct {
	// Instance is whose audit log this is: each instance keeps its own.
	Instance string       `json:"instance,omitempty"`
	Events   []TrailEvent `json:"events"`
}

// trailKinds are the events the trail shows: decisions and what people
// did, not session starts or allowed statements.
var trailKinds = map[audit.Kind]bool{
	audit.Decision: true, audit.HoldCreated: true, audit.HoldApprovalAdded: true, audit.HoldApproved: true,
	audit.HoldDenied: true, audit.HoldTimedOut: true, audit.HoldWithdrawn: true,
	audit.PreapprovalCreated: true, audit.PreapprovalUsed: true, audit.PreapprovalRevoked: true,
	audit.ConfigLoaded: true, audit.ConfigReloadFailed: true,
}

// trail is GET /api/v1/audit[?kind=hold&q=users&limit=200]: the most recent
// decisions of this instance's audit log, newest last. kind is an event
// name or a prefix ending the name's first word (hold, preapproval,
// config); q matches, case-insensitively, any of user, database,
// application, statement, rule, reason, hold or pre-approval id and
// approvers.
func (s *Server) trail(w http.ResponseWriter, r *http.Request, _ identity) {
	if s.auditPath == "" || s.auditPath == "-" {
		writeError(w, http.StatusNotImplemented, "the audit trail needs audit.path to be a file; this instance writes its audit log to "+
			map[bool]string{true: "nowhere", false: "stdout"}[s.auditPath == ""])
		return
	}
	q := r.URL.Query()
	limit := trailDefault
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > trailMaxLimit {
			writeError(w, http.StatusBadRequest, "limit must be between 1 and "+strconv.Itoa(trailMaxLimit))
			return
		}
		limit = n
	}
	kind := q.Get("kind")
	text := strings.ToLower(strings.TrimSpace(q.Get("q")))
	evs, err := audit.Tail(s.auditPath, trailWindow, limit, func(ev *audit.Event) bool {
		if !trailKinds[ev.Kind] {
			return false
		}
		if kind != "" && string(ev.Kind) != kind && !strings.HasPrefix(string(ev.Kind), kind+"_") {
			return false
		}
		if text == "" {
			return true
		}
		for _, f := range append([]string{ev.User, ev.Database, ev.Application, ev.Statement, ev.Rule, ev.Reason,
			ev.HoldID, ev.PreapprovalID, ev.Decision, ev.ApprovalReason}, ev.Approvers...) {
			if strings.Contains(strings.ToLower(f), text) {
				return true
			}
		}
		return false
	})
	if err != nil {
		writeError(w, http.StatusInternalServerError, "reading the audit log: "+err.Error())
		return
	}
	out := TrailList{Instance: s.store.Instance(), Events: make([]TrailEvent, len(evs))}
	for i, ev := range evs {
		out.Events[i] = TrailEvent{
			Time: ev.Time, Event: string(ev.Kind), Instance: ev.Instance, SessionID: ev.SessionID,
			User: ev.User, Database: ev.Database, Application: ev.Application, Client: ev.Client,
			Statement: ev.Statement, Decision: ev.Decision, Rule: ev.Rule, Reason: ev.Reason,
			HoldID: ev.HoldID, PreapprovalID: ev.PreapprovalID, BlastRadius: ev.BlastRadius,
			Approvers: ev.Approvers, ApprovalReason: ev.ApprovalReason, Error: ev.Error,
		}
	}
	writeJSON(w, http.StatusOK, out)
}
