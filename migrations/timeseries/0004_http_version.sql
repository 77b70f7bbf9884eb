-- The HTTP version each probe's last hop spoke ('HTTP/1.1' or 'HTTP/2'); NULL when no exchange
-- started, and for rows stored before this column. A nullable column without a default is
-- added without rewriting the table in both modes (a hypertable or plain partitions).
ALTER TABLE probe_results ADD COLUMN http_version text;
