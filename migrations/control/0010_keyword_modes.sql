-- How a domain's keyword is matched against the decoded body. Existing domains keep the plain
-- check (contains, letter case counts), which is what the defaults say.

ALTER TABLE domains
    ADD COLUMN keyword_mode text NOT NULL DEFAULT 'contains'
        CHECK (keyword_mode IN ('contains', 'not_contains', 'regex')),
    ADD COLUMN keyword_case_insensitive boolean NOT NULL DEFAULT false;
