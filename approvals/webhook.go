package approvals

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/pgmoat/pgmoat/config"
	"github.com/pgmoat/pgmoat/rules"
)

// WebhookOptions tune delivery of hold notifications to holds.webhook.
// Zero fields take the defaults shown.
type WebhookOptions struct {
	// Client sends the requests (default: a plain http.Client).
	Client *http.Client
	// Timeout bounds one attempt (default 10s).
	Timeout time.Duration
	// Attempts is the number of tries per notification (default 4).
	Attempts int
	// Backoff is the wait before the second attempt, doubled before each
	// further one (default 1s).
	Backoff time.Duration
	// QueueSize bounds notifications waiting to be sent (default 256);
	// beyond it they are dropped and counted as failures.
	QueueSize int
	// Workers is the number of concurrent senders (default 2).
	Workers int
}

// WebhookPayload is the JSON body POSTed to holds.webhook for every new
// hold. Text is a one-paragraph message that chat tools (Slack and
// Mattermost incoming webhooks, …) display as is.
type WebhookPayload struct {
	Event             string    `json:"event"` // "hold_created"
	HoldID            string    `json:"hold_id"`
	Statement         string    `json:"statement"`
	User              string    `json:"user"`
	Database          string    `json:"database"`
	Application       string    `json:"application"`
	Client            string    `json:"client"`
	Rule              string    `json:"rule"`
	Reason            string    `json:"reason"`
	BlastRadius       string    `json:"blast_radius,omitempty"`
	Instance          string    `json:"instance,omitempty"`
	CreatedAt         time.Time `json:"created_at"`
	ExpiresAt         time.Time `json:"expires_at"`
	ApprovalsRequired int       `json:"approvals_required"`
	// HoldURL, ApproveURL and DenyURL are built from holds.public_url;
	// approving takes a POST with an approver's bearer token and a
	// {"reason": "…"} body. Empty when public_url is not set.
	HoldURL    string `json:"hold_url,omitempty"`
	ApproveURL string `json:"approve_url,omitempty"`
	DenyURL    string `json:"deny_url,omitempty"`
	Text       string `json:"text"`
}

type webhookJob struct {
	url    string
	holdID string
	body   []byte
}

// webhook delivers hold notifications from a bounded queue, so that a slow
// or dead endpoint never delays a client's notice or the hold itself.
type webhook struct {
	s        *Store
	client   *http.Client
	timeout  time.Duration
	attempts int
	backoff  time.Duration
	queue    chan webhookJob
	// ctx ends when the store closes, cutting short attempts and backoffs.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// delivered, when set (by tests), is called after each notification's
	// last attempt with its final error.
	delivered func(holdID string, err error)
}

func newWebhook(s *Store, o WebhookOptions) *webhook {
	w := &webhook{
		s:        s,
		client:   o.Client,
		timeout:  o.Timeout,
		attempts: o.Attempts,
		backoff:  o.Backoff,
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	if w.client == nil {
		w.client = &http.Client{}
	}
	if w.timeout <= 0 {
		w.timeout = 10 * time.Second
	}
	if w.attempts <= 0 {
		w.attempts = 4
	}
	if w.backoff <= 0 {
		w.backoff = time.Second
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 256
	}
	if o.Workers <= 0 {
		o.Workers = 2
	}
	w.queue = make(chan webhookJob, o.QueueSize)
	for range o.Workers {
		w.wg.Add(1)
		go w.run()
	}
	return w
}

// notify queues the notification for a new hold, if a webhook is
// configured. It never blocks.
func (w *webhook) notify(cfg *config.Holds, h HoldInfo) {
	if cfg.Webhook == "" {
		return
	}
	body, err := json.Marshal(NewWebhookPayload(h, cfg.PublicURL))
	if err != nil {
		w.fail(h.ID, cfg.Webhook, 0, err)
		return
	}
	select {
	case <-w.ctx.Done():
		w.fail(h.ID, cfg.Webhook, 0, ErrClosed)
	case w.queue <- webhookJob{url: cfg.Webhook, holdID: h.ID, body: body}:
	default:
		w.fail(h.ID, cfg.Webhook, 0, fmt.Errorf("%d notifications already waiting", cap(w.queue)))
	}
}

func (w *webhook) run() {
	defer w.wg.Done()
	for {
		select {
		case <-w.ctx.Done():
			return
		case job := <-w.queue:
			w.deliver(job)
		}
	}
}

// deliver tries job until it succeeds, fails for good (a 4xx other than
// 408 and 429), runs out of attempts, or the store closes.
func (w *webhook) deliver(job webhookJob) {
	var err error
	if w.delivered != nil {
		defer func() { w.delivered(job.holdID, err) }()
	}
	delay := w.backoff
	for attempt := 1; attempt <= w.attempts; attempt++ {
		var retry bool
		retry, err = w.post(job)
		if err == nil {
			w.s.log.Debug("hold webhook delivered", "hold", job.holdID, "attempt", attempt)
			return
		}
		if !retry || attempt == w.attempts {
			w.fail(job.holdID, job.url, attempt, err)
			return
		}
		w.s.log.Warn("hold webhook attempt failed; retrying", "hold", job.holdID,
			"webhook", redactURL(job.url), "attempt", attempt, "retry_in", delay, "err", err)
		t := time.NewTimer(delay)
		select {
		case <-w.ctx.Done():
			t.Stop()
			w.fail(job.holdID, job.url, attempt, fmt.Errorf("%w (last error: %v)", ErrClosed, err))
			return
		case <-t.C:
		}
		delay *= 2
	}
}

func (w *webhook) post(job webhookJob) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(w.ctx, w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, job.url, bytes.NewReader(job.body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "pgmoat")
	resp, err := w.client.Do(req)
	if err != nil {
		// url.Error includes the URL, which may carry a secret (Slack's
		// does): report only what went wrong.
		if ue, ok := err.(*url.Error); ok {
			err = ue.Err
		}
		return true, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return false, nil
	}
	err = fmt.Errorf("webhook answered %s", resp.Status)
	retry = resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout
	return retry, err
}

func (w *webhook) fail(holdID, u string, attempts int, err error) {
	w.s.m.WebhookFailures.Inc()
	w.s.log.Error("hold webhook not delivered; the hold is unaffected", "hold", holdID,
		"webhook", redactURL(u), "attempts", attempts, "err", err)
}

func (w *webhook) close() {
	w.cancel()
	w.wg.Wait()
	for {
		select {
		case job := <-w.queue:
			w.fail(job.holdID, job.url, 0, ErrClosed)
		default:
			return
		}
	}
}

// redactURL keeps only scheme and host: webhook paths often are secrets.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Scheme + "://" + u.Host + "/…"
}

// NewWebhookPayload builds the notification for hold h; publicURL is
// holds.public_url.
func NewWebhookPayload(h HoldInfo, publicURL string) WebhookPayload {
	p := WebhookPayload{
		Event:             string(EventHoldCreated),
		HoldID:            h.ID,
		Statement:         h.Statement,
		User:              h.User,
		Database:          h.Database,
		Application:       h.Application,
		Client:            h.Client,
		Rule:              h.Rule,
		Reason:            h.Reason,
		BlastRadius:       h.BlastRadius,
		Instance:          h.Instance,
		CreatedAt:         h.CreatedAt,
		ExpiresAt:         h.ExpiresAt,
		ApprovalsRequired: h.ApprovalsRequired,
	}
	if base := strings.TrimRight(publicURL, "/"); base != "" {
		p.HoldURL = base + "/api/v1/holds/" + h.ID
		p.ApproveURL = p.HoldURL + "/approve"
		p.DenyURL = p.HoldURL + "/deny"
	}

	var b strings.Builder
	fmt.Fprintf(&b, "pgmoat is holding %s from %s@%s", rules.Shorten(h.Statement, 200), h.User, h.Database)
	var from []string
	for _, s := range []string{h.Application, h.Client} {
		if s != "" {
			from = append(from, s)
		}
	}
	if len(from) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(from, ", "))
	}
	if h.Reason != "" {
		fmt.Fprintf(&b, ": %s", strings.TrimRight(h.Reason, "."))
	}
	if h.Rule != "" {
		fmt.Fprintf(&b, " [rule %s]", h.Rule)
	}
	if h.BlastRadius != "" {
		fmt.Fprintf(&b, ". Measured: it %s", strings.TrimRight(h.BlastRadius, "."))
	}
	approvals := "1 approval"
	if h.ApprovalsRequired > 1 {
		approvals = fmt.Sprintf("%d approvals from different people", h.ApprovalsRequired)
	}
	fmt.Fprintf(&b, ". It waits for %s until %s, then is refused. Approve: pgmoat holds approve %s --reason '…'  Deny: pgmoat holds deny %s --reason '…'",
		approvals, h.ExpiresAt.UTC().Format("2006-01-02 15:04:05 UTC"), h.ID, h.ID)
	if p.HoldURL != "" {
		fmt.Fprintf(&b, "  Details: %s", p.HoldURL)
	}
	p.Text = b.String()
	return p
}

// howToApprove is the instruction the proxy puts in the client's notice.
func howToApprove(id, publicURL string) string {
	s := fmt.Sprintf("pgmoat holds approve %s --reason '…'", id)
	if publicURL != "" {
		s += fmt.Sprintf(" (or POST {\"reason\": \"…\"} to %s/api/v1/holds/%s/approve)", publicURL, id)
	}
	return s
}
