package metrics

import "github.com/prometheus/client_golang/prometheus"

// Metrics holds every collector pgmoat exports. It is created once per
// process by New and passed to the packages that update it; nothing here
// registers itself globally.
type Metrics struct {
	ClientConnectionsOpen     prometheus.Gauge
	ClientConnectionsTotal    prometheus.Counter
	ClientConnectionsRejected *prometheus.CounterVec // reason: max_connections, startup_timeout, protocol_error, tls, lexer_state, draining, replication
	UpstreamConnectErrors     prometheus.Counter
	BytesRelayed              *Counters              // direction: client_to_server, server_to_client (series ClientToServer, ServerToClient)
	RelaySessions             *prometheus.GaugeVec   // mode: event_loop, goroutines
	EventLoopHandoffs         *prometheus.CounterVec // reason: large_message, interceptor, backpressure, epoll
	MessageMemory             prometheus.Gauge       // bytes of large client messages held (limits.message_memory)
	MessageMemoryWaits        *prometheus.CounterVec // outcome: granted, refused

	// Written for every judged statement: sharded, their series
	// registered by the enforcer.
	Statements       *Counters // decision: allow, log, block, hold; operation: none, drop, truncate, ...
	AnalysisDuration *Durations
	AnalysisCache    *Counters // result: hit, miss

	HoldsPending     prometheus.Gauge
	HoldsResolved    *prometheus.CounterVec // outcome: approved, denied, timed_out, withdrawn, preapproved
	HoldWaitDuration prometheus.Histogram
	PreapprovalsUsed prometheus.Counter
	WebhookFailures  prometheus.Counter

	AuditWriteErrors   prometheus.Counter
	AuditQueueDepth    prometheus.Gauge
	AuditEvents        *prometheus.CounterVec // event
	AuditEventsDropped *prometheus.CounterVec // reason: queue_full, write_error, closed

	AuditChainHead *Current // hash label; value: the head's sequence number

	ConfigReloads     *prometheus.CounterVec // result: success, failure
	ProtectionLowered prometheus.Counter

	// What the configuration in force protects.
	PolicyInfo     *Current             // hash label; value 1
	PolicyPatterns prometheus.Gauge     // protect patterns
	PolicyRules    *prometheus.GaugeVec // action: allow, log, hold, block
	AdminTokens    *prometheus.GaugeVec // role: approver, viewer

	Guarded       *prometheus.CounterVec // outcome: passed, refused, held, failed, unverified
	GuardDuration prometheus.Histogram   // what verifying a guarded statement added to it
	// StateUp and StateErrors watch the control database (state.dsn).
	StateUp     prometheus.Gauge
	StateErrors *prometheus.CounterVec // op: create_hold, update_hold, read, preapproval, lease, listen, migrate
}

// New creates the collectors and registers them on reg. A nil reg leaves
// them unregistered (useful in tests of packages that only update them).
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		ClientConnectionsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pgmoat_client_connections_open",
			Help: "Client sessions currently open.",
		}),
		ClientConnectionsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgmoat_client_connections_total",
			Help: "Client connections accepted.",
		}),
		ClientConnectionsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgmoat_client_connections_rejected_total",
			Help: "Client connections refused before a session started, by reason.",
		}, []string{"reason"}),
		UpstreamConnectErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgmoat_upstream_connect_errors_total",
			Help: "Failed attempts to connect to the upstream PostgreSQL server.",
		}),
		BytesRelayed: NewRelayed(),
		RelaySessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pgmoat_relay_sessions",
			Help: "Sessions in their steady state, by how they are relayed: event_loop (shared epoll threads) or goroutines (TLS sessions, and sessions the loop handed over).",
		}, []string{"mode"}),
		EventLoopHandoffs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgmoat_event_loop_handoffs_total",
			Help: "Sessions the event loop handed to the goroutine relay, by reason: large_message (larger than the 16 KiB buffer), interceptor (a statement to block, hold or log), backpressure (a peer not reading), epoll (registration failed).",
		}, []string{"reason"}),
		MessageMemory: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pgmoat_message_memory_bytes",
			Help: "Bytes of client messages larger than a session's read buffer that pgmoat holds now, against limits.message_memory.",
		}),
		MessageMemoryWaits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgmoat_message_memory_waits_total",
			Help: "Large client messages that had to wait for limits.message_memory, by outcome: granted (after a wait), refused (the session ended with 53200).",
		}, []string{"outcome"}),
		Statements: NewCounters("pgmoat_statements_total", "Statements judged, by decision and by the most severe operation found.",
			128, "decision", "operation"),
		AnalysisDuration: NewDurations("pgmoat_analysis_duration_seconds", "Time to analyse and judge one client message's SQL.",
			[]float64{1e-7, 5e-7, 1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2}),
		AnalysisCache: NewCounters("pgmoat_analysis_cache_requests_total", "Decision cache look-ups, by result (hit, miss).", 2, "result"),
		HoldsPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pgmoat_holds_pending",
			Help: "Statements currently held waiting for approval.",
		}),
		HoldsResolved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgmoat_holds_resolved_total",
			Help: "Holds that ended, by outcome (approved, denied, timed_out, withdrawn).",
		}, []string{"outcome"}),
		HoldWaitDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pgmoat_hold_wait_duration_seconds",
			Help:    "How long held statements waited before their hold ended.",
			Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600},
		}),
		PreapprovalsUsed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgmoat_preapprovals_used_total",
			Help: "Statements let through by a pre-approval.",
		}),
		WebhookFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgmoat_hold_webhook_failures_total",
			Help: "Hold notifications that could not be delivered after all retries.",
		}),
		AuditWriteErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgmoat_audit_write_errors_total",
			Help: "Failed writes or flushes of the audit log.",
		}),
		AuditQueueDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pgmoat_audit_queue_depth",
			Help: "Audit events waiting for the writer.",
		}),
		AuditEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgmoat_audit_events_total",
			Help: "Audit events written, by event type.",
		}, []string{"event"}),
		AuditEventsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgmoat_audit_events_dropped_total",
			Help: "Asynchronous audit events (allowed statements, sessions) lost, by reason (queue_full, write_error, closed).",
		}, []string{"reason"}),
		AuditChainHead: NewCurrent("pgmoat_audit_chain_head_sequence",
			"Sequence number of the last line written to the audit log; the hash label is that line's hash. Recording both elsewhere anchors the chain: lines later cut from the end, or the log rewritten, no longer match.",
			"hash"),
		ConfigReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgmoat_config_reloads_total",
			Help: "Configuration reloads, by result (success, failure).",
		}, []string{"result"}),
		Guarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgmoat_guarded_statements_total",
			Help: "Statements run under guard (their effect verified before commit), by outcome: passed, refused (rolled back and blocked), held, failed (the statement's own error), unverified (pgmoat could not verify and refused it).",
		}, []string{"outcome"}),
		GuardDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pgmoat_guard_duration_seconds",
			Help:    "Time from sending a guarded statement with its snapshots to deciding its outcome, commit or rollback included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		StateUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pgmoat_state_up",
			Help: "1 while the control database (state.dsn) answers and this instance holds its lease, 0 otherwise; always 1 without state.dsn.",
		}),
		StateErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgmoat_state_errors_total",
			Help: "Failed operations on the control database, by operation (create_hold, update_hold, read, preapproval, lease, listen); each failure to create a hold or approve one is a refusal.",
		}, []string{"op"}),
		ProtectionLowered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgmoat_config_protection_lowered_total",
			Help: "Reloads accepted although they lower protection (a protect pattern removed, a rule weakened, an approver added, ...); the audit log's config_changed events say how.",
		}),
		PolicyInfo: NewCurrent("pgmoat_policy_info",
			"Always 1; the hash label fingerprints the protection in force (policy, holds, admin token roles), as GET /api/v1/policy and pgmoat config check show it.",
			"hash"),
		PolicyPatterns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pgmoat_policy_protect_patterns",
			Help: "Protect patterns in the policy in force; 0 means every statement is allowed.",
		}),
		PolicyRules: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pgmoat_policy_rules",
			Help: "Rules in the policy in force, by action (allow, log, hold, block).",
		}, []string{"action"}),
		AdminTokens: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pgmoat_admin_tokens",
			Help: "Admin API tokens configured, by role (approver, viewer).",
		}, []string{"role"}),
	}
	m.StateUp.Set(1)
	if reg != nil {
		reg.MustRegister(
			m.ClientConnectionsOpen, m.ClientConnectionsTotal, m.ClientConnectionsRejected,
			m.UpstreamConnectErrors, m.BytesRelayed, m.RelaySessions, m.EventLoopHandoffs, m.MessageMemory, m.MessageMemoryWaits, m.Statements, m.AnalysisDuration,
			m.AnalysisCache, m.HoldsPending, m.HoldsResolved, m.HoldWaitDuration,
			m.PreapprovalsUsed, m.WebhookFailures, m.AuditWriteErrors, m.AuditQueueDepth,
			m.AuditEvents, m.AuditEventsDropped, m.AuditChainHead, m.ConfigReloads,
			m.ProtectionLowered, m.PolicyInfo, m.PolicyPatterns, m.PolicyRules, m.AdminTokens,
			m.Guarded, m.GuardDuration, m.StateUp, m.StateErrors,
		)
	}
	return m
}
