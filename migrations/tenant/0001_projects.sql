-- Sample tenant schema of a time-tracking app: projects.
CREATE TABLE projects (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    archived    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);
