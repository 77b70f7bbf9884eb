-- The certificate facts beyond the first hop's leaf: the host it was presented for, the chain
-- (its length, whether it verified up to a trusted root, and its earliest-expiring certificate
-- above the leaf), the certificate at fault when validation failed, and the later HTTPS hops'
-- certificates. `certificates` is a plain table in both storage modes (TimescaleDB and plain
-- PostgreSQL), so the same statements apply to both. Rows written before this migration read
-- as an unknown chain (length 0) without redirect certificates.
ALTER TABLE certificates
    ADD COLUMN host    text  NOT NULL DEFAULT '',
    -- {"length": int, "verified": bool, "earliest": {"position", "subject", "not_after"} | null}
    ADD COLUMN chain   jsonb NOT NULL DEFAULT '{"length": 0, "verified": false, "earliest": null}',
    -- {"kind", "position", "subject", "at"}, or NULL when valid or unknown
    ADD COLUMN problem jsonb,
    -- [{"host", "subject", "issuer", "serial", "not_before", "not_after", "valid",
    --   "validation_error", "chain", "problem"}]
    ADD COLUMN hops    jsonb NOT NULL DEFAULT '[]';
