-- The tables operator-console 0.1.0 made on postgresql with SQLModel's create_all
-- (git show 6511317:src/operator_console/db/models.py and .../audit/log.py),
-- printed by SQLAlchemy's CreateTable and CreateIndex for that dialect.
CREATE TABLE actions (
	id SERIAL NOT NULL,
	run_id VARCHAR,
	ticket_id INTEGER,
	name VARCHAR NOT NULL,
	params JSON,
	params_hash VARCHAR NOT NULL,
	risk VARCHAR NOT NULL,
	restores VARCHAR NOT NULL,
	reason VARCHAR NOT NULL,
	proposed_by VARCHAR NOT NULL,
	state VARCHAR NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE,
	expires_at TIMESTAMP WITH TIME ZONE,
	decided_at TIMESTAMP WITH TIME ZONE,
	decided_by VARCHAR,
	decision_reason VARCHAR,
	attempts INTEGER NOT NULL,
	result VARCHAR,
	error VARCHAR,
	finished_at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (id)
);
CREATE INDEX ix_actions_run_id ON actions (run_id);
CREATE INDEX ix_actions_state ON actions (state);
CREATE INDEX ix_actions_ticket_id ON actions (ticket_id);
CREATE TABLE approvals (
	id SERIAL NOT NULL,
	action_id INTEGER NOT NULL,
	params_hash VARCHAR NOT NULL,
	approved_by VARCHAR NOT NULL,
	reason VARCHAR NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE,
	expires_at TIMESTAMP WITH TIME ZONE,
	used_at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (id)
);
CREATE INDEX ix_approvals_action_id ON approvals (action_id);
CREATE TABLE audit (
	id SERIAL NOT NULL,
	at TIMESTAMP WITH TIME ZONE NOT NULL,
	kind VARCHAR NOT NULL,
	actor VARCHAR NOT NULL,
	run_id VARCHAR,
	ticket_id INTEGER,
	action_id INTEGER,
	payload JSON NOT NULL,
	prev_hash VARCHAR(64) NOT NULL,
	hash VARCHAR(64) NOT NULL,
	PRIMARY KEY (id)
);
CREATE INDEX ix_audit_kind ON audit (kind);
CREATE INDEX ix_audit_run_id ON audit (run_id);
CREATE INDEX ix_audit_ticket_id ON audit (ticket_id);
CREATE TABLE controls (
	key VARCHAR NOT NULL,
	value VARCHAR NOT NULL,
	changed_by VARCHAR NOT NULL,
	changed_at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (key)
);
CREATE TABLE runs (
	id VARCHAR(32) NOT NULL,
	scenario VARCHAR NOT NULL,
	subject VARCHAR NOT NULL,
	run_dir VARCHAR NOT NULL,
	started_at TIMESTAMP WITH TIME ZONE,
	finished_at TIMESTAMP WITH TIME ZONE,
	ok BOOLEAN,
	summary JSON,
	PRIMARY KEY (id)
);
CREATE INDEX ix_runs_scenario ON runs (scenario);
CREATE TABLE tickets (
	id SERIAL NOT NULL,
	run_id VARCHAR,
	subject VARCHAR NOT NULL,
	dedup_key VARCHAR NOT NULL,
	invariant VARCHAR NOT NULL,
	target VARCHAR NOT NULL,
	severity VARCHAR NOT NULL,
	state VARCHAR NOT NULL,
	message VARCHAR NOT NULL,
	occurrences INTEGER NOT NULL,
	first_seen TIMESTAMP WITH TIME ZONE,
	last_seen TIMESTAMP WITH TIME ZONE,
	resolved_at TIMESTAMP WITH TIME ZONE,
	held_by VARCHAR,
	escalation_reason VARCHAR,
	brain VARCHAR,
	diagnosis JSON,
	details JSON,
	opened_observation JSON,
	PRIMARY KEY (id)
);
CREATE INDEX ix_tickets_dedup_key ON tickets (dedup_key);
CREATE INDEX ix_tickets_invariant ON tickets (invariant);
CREATE INDEX ix_tickets_run_id ON tickets (run_id);
CREATE INDEX ix_tickets_state ON tickets (state);
CREATE TABLE transcript (
	id SERIAL NOT NULL,
	ticket_id INTEGER NOT NULL,
	seq INTEGER NOT NULL,
	brain VARCHAR NOT NULL,
	kind VARCHAR NOT NULL,
	text VARCHAR NOT NULL,
	tool VARCHAR,
	tool_use_id VARCHAR,
	input JSON,
	is_error BOOLEAN NOT NULL,
	full_size INTEGER,
	at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (id)
);
CREATE INDEX ix_transcript_ticket_id ON transcript (ticket_id);
