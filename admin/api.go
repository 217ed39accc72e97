package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/pgmoat/pgmoat/approvals"
	"github.com/pgmoat/pgmoat/config"
)

// Request body limits: a reason is short; a pre-approval may carry a whole
// migration.
const (
	maxReasonBody      = 64 << 10
	maxPreApprovalBody = 16 << 20
)

// HoldList is the body of GET /api/v1/holds.
type HoldList struct {
	Holds []approvals.HoldInfo `json:"holds"`
}

// PreApprovalList is the body of GET /api/v1/preapprovals.
type PreApprovalList struct {
	PreApprovals []approvals.PreApproval `json:"preapprovals"`
}

// DecisionBody is the body of POST /api/v1/holds/{id}/approve and /deny.
type DecisionBody struct {
	Reason string `json:"reason"`
}

// PreApprovalBody is the body of POST /api/v1/preapprovals. TTL is a Go
// duration or days ("2h", "90m", "7d"; approvals.ParseTTL), at most
// approvals.MaxPreApprovalTTL.
type PreApprovalBody struct {
	SQL      string `json:"sql"`
	TTL      string `json:"ttl"`
	Reason   string `json:"reason"`
	Database string `json:"database,omitempty"`
	User     string `json:"user,omitempty"`
	// MaxUses limits how many statements it lets through in all (0: no
	// limit).
	MaxUses int `json:"max_uses,omitempty"`
}

// PolicyBody is the body of GET /api/v1/policy: the protection in force
// (policy, holds, admin token names and roles; never a secret), its hash
// as pgmoat_policy_info shows it, and the file it was loaded from.
// `pgmoat config check --against` compares a file with it.
type PolicyBody struct {
	Hash    string `json:"hash"`
	File    string `json:"file,omitempty"`
	Summary string `json:"summary"`
	config.Protection
}

// ErrorBody is the body of every error response.
type ErrorBody struct {
	Error string `json:"error"`
}

func (s *Server) listHolds(w http.ResponseWriter, r *http.Request, _ identity) {
	holds, err := s.store.List()
	if err != nil {
		writeStoreError(w, err)
		return
	}
	if q := r.URL.Query().Get("status"); q != "" {
		want := strings.Split(q, ",")
		for _, st := range want {
			switch approvals.Status(st) {
			case approvals.StatusPending, approvals.StatusApproved, approvals.StatusDenied,
				approvals.StatusTimedOut, approvals.StatusWithdrawn:
			default:
				writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown status %q (want pending, approved, denied, timed_out or withdrawn)", st))
				return
			}
		}
		holds = slices.DeleteFunc(holds, func(h approvals.HoldInfo) bool { return !slices.Contains(want, string(h.Status)) })
	}
	writeJSON(w, http.StatusOK, HoldList{Holds: holds})
}

func (s *Server) getHold(w http.ResponseWriter, r *http.Request, _ identity) {
	info, err := s.store.Get(r.PathValue("id"))
	if err != nil {
		writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *Server) approve(w http.ResponseWriter, r *http.Request, who identity) {
	s.decide(w, r, who, "approved", s.store.Approve)
}

func (s *Server) denyHold(w http.ResponseWriter, r *http.Request, who identity) {
	s.decide(w, r, who, "denied", s.store.Deny)
}

func (s *Server) decide(w http.ResponseWriter, r *http.Request, who identity, verb string,
	do func(id, approver, reason string) (approvals.HoldInfo, error)) {
	var body DecisionBody
	if !decodeBody(w, r, maxReasonBody, &body) {
		return
	}
	if strings.TrimSpace(body.Reason) == "" {
		writeError(w, http.StatusBadRequest, `a reason is required: send {"reason": "…"} (it goes to the audit log)`)
		return
	}
	id := r.PathValue("id")
	info, err := do(id, who.name, body.Reason)
	if err != nil {
		s.log.Info("admin API: hold decision refused", "hold", id, "token", who.name, "remote", r.RemoteAddr, "err", err)
		writeStoreError(w, err)
		return
	}
	s.log.Info("admin API: hold "+verb, "hold", id, "token", who.name, "remote", r.RemoteAddr, "status", info.Status)
	writeJSON(w, http.StatusOK, info)
}

func (s *Server) listPreApprovals(w http.ResponseWriter, _ *http.Request, _ identity) {
	ps, err := s.store.ListPreApprovals()
	if err != nil {
		writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, PreApprovalList{PreApprovals: ps})
}

func (s *Server) getPreApproval(w http.ResponseWriter, r *http.Request, _ identity) {
	p, err := s.store.GetPreApproval(r.PathValue("id"))
	if err != nil {
		writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (s *Server) preApprove(w http.ResponseWriter, r *http.Request, who identity) {
	var body PreApprovalBody
	if !decodeBody(w, r, maxPreApprovalBody, &body) {
		return
	}
	if body.TTL == "" {
		writeError(w, http.StatusBadRequest, `ttl is required, e.g. "2h"`)
		return
	}
	ttl, err := approvals.ParseTTL(body.TTL)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	p, err := s.store.PreApprove(approvals.PreApprovalRequest{
		SQL:      body.SQL,
		TTL:      ttl,
		Reason:   body.Reason,
		Approver: who.name,
		Database: body.Database,
		User:     body.User,
		MaxUses:  body.MaxUses,
	})
	if err != nil {
		writeStoreError(w, err)
		return
	}
	s.log.Info("admin API: pre-approval created", "preapproval", p.ID, "token", who.name, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusCreated, p)
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request, who identity) {
	id := r.PathValue("id")
	p, err := s.store.Revoke(id, who.name)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	s.log.Info("admin API: pre-approval revoked", "preapproval", id, "token", who.name, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, p)
}

func (s *Server) reloadConfig(w http.ResponseWriter, r *http.Request, who identity) {
	if s.reload == nil {
		writeError(w, http.StatusNotImplemented, "reload is not available")
		return
	}
	s.log.Info("admin API: configuration reload requested", "token", who.name, "remote", r.RemoteAddr)
	if err := s.reload(); err != nil {
		writeError(w, http.StatusInternalServerError, "reload failed, the previous configuration stays in force: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "reloaded"})
}

func (s *Server) policy(w http.ResponseWriter, _ *http.Request, _ identity) {
	if s.inForce == nil {
		writeError(w, http.StatusNotImplemented, "the policy is not available")
		return
	}
	cfg := s.inForce()
	p := cfg.Protection()
	writeJSON(w, http.StatusOK, PolicyBody{Hash: p.Hash(), File: cfg.File, Summary: p.Summary(), Protection: p})
}

// decodeBody decodes a JSON object into v, strictly: unknown fields (an
// "approver" field, a typo in "reason") are errors. On failure it has
// answered 400 (413 when too large) and returns false.
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("unexpected data after the JSON object")
	}
	if err == nil {
		return true
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", limit))
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, "request body must be a JSON object")
	default:
		writeError(w, http.StatusBadRequest, "bad JSON body: "+err.Error())
	}
	return false
}

// writeStoreError maps the approvals store's errors to status codes.
func writeStoreError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, approvals.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, approvals.ErrNotPending), errors.Is(err, approvals.ErrAlreadyApproved):
		status = http.StatusConflict
	case errors.Is(err, approvals.ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, approvals.ErrNotRecorded), errors.Is(err, approvals.ErrClosed), errors.Is(err, approvals.ErrUnavailable):
		status = http.StatusServiceUnavailable
	}
	writeError(w, status, err.Error())
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, ErrorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
