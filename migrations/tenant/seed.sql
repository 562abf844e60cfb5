-- Run once in every new tenant database, after the migrations.
INSERT INTO projects (name) VALUES ('General');
INSERT INTO activity_log (actor, message) VALUES ('system', 'tenant provisioned');
