-- What happened in the tenant, for its audit trail; old rows are cleaned up by maintenance.
CREATE TABLE activity_log (
    id          bigserial PRIMARY KEY,
    happened_at timestamptz NOT NULL DEFAULT now(),
    actor       text,
    message     text NOT NULL
);
CREATE INDEX activity_log_by_time ON activity_log (happened_at);
