package main

import (
	"github.com/pgmoat/pgmoat/approvals"
	"github.com/pgmoat/pgmoat/audit"
)

// auditEvent turns a holds-store event into its audit log line.
func auditEvent(ev approvals.Event) audit.Event {
	out := audit.Event{Time: ev.Time, Kind: audit.Kind(ev.Type), ApprovalReason: ev.Reason}
	if ev.Actor != "" {
		out.Approvers = []string{ev.Actor}
	}
	if h := ev.Hold; h != nil {
		out.HoldID = h.ID
		out.SessionID = h.SessionID
		out.User, out.Database, out.Application, out.Client = h.User, h.Database, h.Application, h.Client
		out.Statement = h.Statement
		if len(h.Fingerprints) > 0 {
			out.Fingerprint = h.Fingerprints[0]
		}
		out.Fingerprints = h.Fingerprints
		out.Rule = h.Rule
		out.Reason = h.Reason
		out.BlastRadius = h.BlastRadius
		out.ExpiresAt = h.ExpiresAt
		out.Decision = "hold"
		if !h.ResolvedAt.IsZero() {
			out.Duration = h.ResolvedAt.Sub(h.CreatedAt)
		}
		if ev.Type == approvals.EventHoldApproved {
			out.Approvers = make([]string, len(h.Approvals))
			for i, a := range h.Approvals {
				out.Approvers[i] = a.Approver
			}
		}
	}
	if p := ev.PreApproval; p != nil {
		out.PreapprovalID = p.ID
		out.Fingerprints = p.Fingerprints
		out.ExpiresAt = p.ExpiresAt
		out.User, out.Database = p.User, p.Database
		if ev.Type == approvals.EventPreApprovalCreated {
			out.Statement = p.SQL
		}
		if ev.Actor == "" {
			out.Approvers = []string{p.Approver}
		}
		if ev.Reason == "" {
			out.ApprovalReason = p.Reason
		}
	}
	if u := ev.Use; u != nil {
		out.SessionID = u.SessionID
		out.User, out.Database, out.Application, out.Client = u.User, u.Database, u.Application, u.Client
		out.Statement = u.Statement
		out.Fingerprint = u.Fingerprint
		out.Rule = u.Rule
		out.Decision = "allow"
		out.Reason = "pre-approved"
	}
	return out
}
