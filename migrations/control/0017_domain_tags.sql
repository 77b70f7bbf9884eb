ALTER TABLE domains ADD COLUMN tags text[] NOT NULL DEFAULT '{}';
CREATE INDEX domains_tags_idx ON domains USING gin (tags);
