-- The HTTP version a domain's probes may speak: 'auto' (ALPN offers h2 and http/1.1 over TLS),
-- 'http1' or 'http2' (forced). Existing domains keep probing as before, under 'auto'.
ALTER TABLE domains ADD COLUMN http_version text NOT NULL DEFAULT 'auto'
    CHECK (http_version IN ('auto', 'http1', 'http2'));
