package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/pgmoat/pgmoat/approvals"
)

// DefaultURL is the admin API's address with the default admin.listen.
const DefaultURL = "http://127.0.0.1:6433"

// Client calls the admin API; the `pgmoat holds` and `pgmoat approve`
// commands use it.
type Client struct {
	// BaseURL is the admin listener's URL, e.g. http://127.0.0.1:6433
	// (--admin or PGMOAT_ADMIN_URL).
	BaseURL string
	// Token is the bearer token (PGMOAT_TOKEN).
	Token string
	// HTTP sends the requests; nil means a client with a 30s timeout.
	HTTP *http.Client
}

// APIError is an error answer from the admin API: its status code and the
// server's message.
type APIError struct {
	StatusCode int
	Message    string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (HTTP %d %s)", e.Message, e.StatusCode, http.StatusText(e.StatusCode))
}

// PreApproveRequest is what Client.PreApprove registers. The approver is
// the token's name.
type PreApproveRequest struct {
	SQL      string
	TTL      time.Duration
	Reason   string
	Database string
	User     string
	MaxUses  int
}

var defaultHTTP = &http.Client{Timeout: 30 * time.Second}

// ListHolds returns the holds, oldest first; with statuses, only those in
// one of them.
func (c *Client) ListHolds(ctx context.Context, statuses ...approvals.Status) ([]approvals.HoldInfo, error) {
	path := "/api/v1/holds"
	if len(statuses) > 0 {
		s := make([]string, len(statuses))
		for i, st := range statuses {
			s[i] = string(st)
		}
		path += "?status=" + url.QueryEscape(strings.Join(s, ","))
	}
	var out HoldList
	err := c.do(ctx, http.MethodGet, path, nil, &out)
	return out.Holds, err
}

// GetHold returns one hold.
func (c *Client) GetHold(ctx context.Context, id string) (*approvals.HoldInfo, error) {
	var out approvals.HoldInfo
	if err := c.do(ctx, http.MethodGet, "/api/v1/holds/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Approve approves hold id and returns it as it now stands (still pending
// when more approvals are required).
func (c *Client) Approve(ctx context.Context, id, reason string) (*approvals.HoldInfo, error) {
	var out approvals.HoldInfo
	if err := c.do(ctx, http.MethodPost, "/api/v1/holds/"+url.PathEscape(id)+"/approve", DecisionBody{Reason: reason}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Deny denies hold id.
func (c *Client) Deny(ctx context.Context, id, reason string) (*approvals.HoldInfo, error) {
	var out approvals.HoldInfo
	if err := c.do(ctx, http.MethodPost, "/api/v1/holds/"+url.PathEscape(id)+"/deny", DecisionBody{Reason: reason}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PreApprove registers reviewed SQL for req.TTL.
func (c *Client) PreApprove(ctx context.Context, req PreApproveRequest) (*approvals.PreApproval, error) {
	body := PreApprovalBody{SQL: req.SQL, Reason: req.Reason, Database: req.Database, User: req.User, MaxUses: req.MaxUses}
	if req.TTL != 0 {
		body.TTL = req.TTL.String()
	}
	var out approvals.PreApproval
	if err := c.do(ctx, http.MethodPost, "/api/v1/preapprovals", body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListPreApprovals returns active and recently ended pre-approvals.
func (c *Client) ListPreApprovals(ctx context.Context) ([]approvals.PreApproval, error) {
	var out PreApprovalList
	err := c.do(ctx, http.MethodGet, "/api/v1/preapprovals", nil, &out)
	return out.PreApprovals, err
}

// Revoke ends pre-approval id at once.
func (c *Client) Revoke(ctx context.Context, id string) (*approvals.PreApproval, error) {
	var out approvals.PreApproval
	if err := c.do(ctx, http.MethodDelete, "/api/v1/preapprovals/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Reload asks pgmoat to reload its configuration file.
func (c *Client) Reload(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/api/v1/reload", nil, nil)
}

// Policy returns the protection in force on the instance.
func (c *Client) Policy(ctx context.Context) (*PolicyBody, error) {
	var out PolicyBody
	if err := c.do(ctx, http.MethodGet, "/api/v1/policy", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	base := strings.TrimRight(c.BaseURL, "/")
	if base == "" {
		base = DefaultURL
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin API at %s: %w", base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("admin API: reading the answer to %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e ErrorBody
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
			if e.Error == "" {
				e.Error = "no error message"
			}
		}
		return &APIError{StatusCode: resp.StatusCode, Message: e.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("admin API: decoding the answer to %s %s: %w", method, path, err)
	}
	return nil
}
