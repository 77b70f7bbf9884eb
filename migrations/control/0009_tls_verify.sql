-- Insecure mode per domain: with tls_verify = false an invalid certificate does not fail the
-- probe (its facts and expiry notices still work). Existing domains keep verifying.
ALTER TABLE domains ADD COLUMN tls_verify boolean NOT NULL DEFAULT true;
