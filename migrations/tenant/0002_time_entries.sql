-- Time tracked against a project.
CREATE TABLE time_entries (
    id          bigserial PRIMARY KEY,
    project_id  bigint NOT NULL REFERENCES projects(id),
    started_at  timestamptz NOT NULL,
    minutes     integer NOT NULL CHECK (minutes >= 0),
    note        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX time_entries_by_project ON time_entries (project_id, started_at);
CREATE INDEX time_entries_by_created ON time_entries (created_at);
